package ui

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
)

func TestCatalogsHaveSameKeys(t *testing.T) {
	cats := catalogs()
	en := cats[langEN]
	for lang, msgs := range cats {
		for k, v := range en {
			got, ok := msgs[k]
			if !ok {
				t.Errorf("%s lacks %q", lang, k)
				continue
			}
			if strings.TrimSpace(got) == "" {
				t.Errorf("%s has an empty %q", lang, k)
			}
			// Tf fills the same arguments into every language.
			if a, b := strings.Count(v, "%"), strings.Count(got, "%"); a != b {
				t.Errorf("%q: %d format verbs in en, %d in %s", k, a, b, lang)
			}
		}
		for k := range msgs {
			if strings.HasPrefix(k, "fmt.") {
				continue // an error format's translation; English says the error's message
			}
			if _, ok := en[k]; !ok {
				t.Errorf("%s has %q, which en lacks", lang, k)
			}
		}
	}
}

// keyRE finds message keys written out literally in the source: T("k"),
// Tf("k", ...), adminOnly(v, "k"), Key: "k" and the label list of the
// flavor form.
var keyRE = regexp.MustCompile(`(?:\bTf?\(|adminOnly\(v, |Key: |\{f\.\w+, )"([a-z0-9_.]+)"[,)}]`)

func TestEveryUsedKeyIsInTheCatalog(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	templs, _ := filepath.Glob("*.templ")
	var used []string
	for _, f := range append(files, templs...) {
		if strings.HasSuffix(f, "_test.go") || strings.HasSuffix(f, "_templ.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range keyRE.FindAllStringSubmatch(string(b), -1) {
			used = append(used, m[1])
		}
	}
	if len(used) < 100 {
		t.Fatalf("found only %d keys in the source; is keyRE still right?", len(used))
	}
	// Keys built at run time from values of other packages.
	for _, c := range []string{consensus.CodeInvalid, consensus.CodeNotFound, consensus.CodeAlreadyExists,
		consensus.CodeConflict, consensus.CodePreconditionFailed, consensus.CodeQuotaExceeded,
		consensus.CodeForbidden, consensus.CodeUnavailable} {
		used = append(used, "err."+c)
	}
	for _, r := range []identity.Role{identity.RoleReader, identity.RoleMember, identity.RoleAdmin} {
		used = append(used, "role."+string(r))
	}
	for _, r := range []string{"voter", "nonvoter", "none"} {
		used = append(used, "noderole."+r)
	}
	for _, g := range []string{"alive", "suspect", "dead", "left", "unknown"} {
		used = append(used, "gossip."+g)
	}
	for _, a := range auditActions() {
		used = append(used, "action."+a)
	}
	for _, st := range []string{storage.DiskActive, storage.DiskDraining} {
		used = append(used, "diskstate."+st)
	}
	for _, st := range []string{volume.ReplicaInSync, volume.ReplicaStale, volume.ReplicaRebuilding} {
		used = append(used, "repstate."+st) // words in error texts' “…”
	}
	for _, h := range []string{storage.HealthOK, storage.HealthFailed, storage.HealthUnknown} {
		used = append(used, "diskhealth."+h)
	}
	for _, err := range []error{storage.ErrNoSpace, storage.ErrUnavailable, storage.ErrIncomplete, storage.ErrBadDigest} {
		key, _ := storageError(fmt.Errorf("put: %w", err))
		if key == "" {
			t.Errorf("storage error %q has no label", err)
		}
		used = append(used, key)
	}
	for _, st := range []string{hypervisor.StateScheduling, hypervisor.StateBuilding, hypervisor.StateRunning, hypervisor.StatePaused,
		hypervisor.StateStopping, hypervisor.StateStopped, hypervisor.StateDeleting, hypervisor.StateError} {
		used = append(used, "vmstate."+st)
	}
	for _, d := range []string{hypervisor.DesiredRunning, hypervisor.DesiredStopped, hypervisor.DesiredPaused, hypervisor.DesiredDeleted} {
		used = append(used, "vmdesired."+d)
	}
	for _, op := range knownOps {
		used = append(used, "vmop."+op, "vmevent."+op)
		if op != hypervisor.OpDelete {
			used = append(used, "vmdone."+op)
		}
	}
	for _, k := range []string{"create", "schedule", "state", "node", "rename", "resize"} {
		used = append(used, "vmevent."+k)
	}
	used = append(used, "vmdone.create", "vmdone.rename", "vmdone.resize")
	for _, st := range []string{volume.StateCreating, volume.StateAvailable, volume.StateInUse, volume.StateError} {
		used = append(used, "volstate."+st)
	}
	for _, a := range volumeActions {
		if a != "delete" && a != "snapshot" { // these go back to the list
			used = append(used, "voldone."+a)
		}
	}
	for _, st := range []string{volume.StateCreating, volume.StateAvailable, volume.StateError} {
		used = append(used, "snapstate."+st)
	}
	for _, k := range snapshotDone {
		used = append(used, k)
	}
	used = append(used, "voldone.from_snapshot")
	used = append(used, "voldone.create", "voldone.detaching", "vmevent.attach", "vmevent.detach", "vmevent.convert-disk")
	used = append(used, "vmevent.migrate", "vm.migrate.title", "vm.migrate.hint", "vm.migrate.node", "vm.migrate.auto", "vm.migrate.submit", "vmdone.migrate")
	for _, vis := range visibilities(true, "") {
		used = append(used, "visibility."+vis)
	}
	for _, os := range []string{"linux", "windows", "other"} {
		used = append(used, "os."+os)
	}
	for lang, msgs := range catalogs() {
		for _, k := range used {
			if _, ok := msgs[k]; !ok {
				t.Errorf("%s catalog lacks %q, which the UI uses", lang, k)
			}
		}
	}
}

func TestPickLang(t *testing.T) {
	cases := []struct {
		cookie, accept, want string
	}{
		{"", "", langEN},
		{"", "zh-CN,zh;q=0.9,en;q=0.8", langZH},
		{"", "zh-TW", langZH},
		{"", "fr-FR, en;q=0.5, zh;q=0.7", langZH},
		{"", "de, *;q=0.1", langEN},
		{"", "zh;q=0, en", langEN},
		{"en", "zh-CN", langEN},
		{"zh-CN", "en-US", langZH},
		{"klingon", "zh-CN", langZH},
	}
	for _, c := range cases {
		r := httptestRequest(c.cookie, c.accept)
		if got := pickLang(r); got != c.want {
			t.Errorf("cookie %q, Accept-Language %q: got %s, want %s", c.cookie, c.accept, got, c.want)
		}
	}
}

func TestAcceptLanguagesOrder(t *testing.T) {
	got := acceptLanguages("en;q=0.5, zh-CN, fr;q=0.8, de;q=bogus")
	if want := []string{"zh-CN", "fr", "en"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
