package identity

import (
	"sort"
	"strings"
	"sync"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// ProjectHolder is what another domain keeps of a project that the quota's
// usage does not count (an empty bucket, an image, a security group): a
// project is deleted only when no holder holds anything of it, and the
// refusal names what is left. Sweep, if set, removes rows that go with
// the project (a default security group) in the same command.
type ProjectHolder struct {
	Kind  string // plural noun: "buckets", "images"
	Held  func(txn *memdb.Txn, project string) []string
	Sweep func(tx *consensus.Tx, project string) error
}

var holders sync.Map // Kind -> ProjectHolder

// HoldProjects registers a holder; domains call it from their Register.
// Every node of one version runs the same code, so every node's apply
// consults the same holders. The holders are part of what
// MsgDeleteEmptyProject means: a release that adds one must add a new
// command too (and raise the protocol), or a rolling upgrade's old and new
// nodes would apply the same entry differently. (Several nodes in one test
// process register the same holders: the map is shared, the same.)
func HoldProjects(h ProjectHolder) { holders.Store(h.Kind, h) }

func projectHolders() []ProjectHolder {
	var hs []ProjectHolder
	holders.Range(func(_, v any) bool { hs = append(hs, v.(ProjectHolder)); return true })
	sort.Slice(hs, func(i, j int) bool { return hs[i].Kind < hs[j].Kind })
	return hs
}

// projectLeft says what a project still holds: its quota usage, then what
// the holders name, as one refusal's parameter ("1 VMs, 2 buckets (a,
// b)") made of coded parts, so a page can say each in its language. Nil
// when it may go.
func projectLeft(txn *memdb.Txn, project string) error {
	var left error
	add := func(e error) {
		if left == nil {
			left = e
		} else {
			left = consensus.Errorf(consensus.CodeConflict, "%v, %v", left, e)
		}
	}
	if q := consensus.First[Quota](txn, tQuotas, "id", project); q != nil {
		u := q.Usage
		// Networks, routers and floating IPs are named by netfabric's
		// holders (charged or not); ports go with VMs.
		if u.Instances > 0 {
			add(consensus.Errorf(consensus.CodeConflict, "%d VMs", u.Instances))
		}
		if u.Volumes > 0 {
			add(consensus.Errorf(consensus.CodeConflict, "%d volumes", u.Volumes))
		}
		if u.Snapshots > 0 {
			add(consensus.Errorf(consensus.CodeConflict, "%d snapshots", u.Snapshots))
		}
		if u.Objects > 0 {
			add(consensus.Errorf(consensus.CodeConflict, "%d objects", u.Objects))
		}
		// What the lines above and the holders do not stand for.
		rest := u
		rest.Instances, rest.VCPUs, rest.RAMMiB, rest.DiskGiB, rest.Ports = 0, 0, 0, 0, 0 // with its VMs
		rest.Volumes, rest.VolumeGiB, rest.Snapshots = 0, 0, 0
		rest.Objects, rest.ObjectGiB = 0, 0
		rest.Networks, rest.Routers, rest.FloatingIPs = 0, 0, 0 // named by netfabric's holders
		if left == nil && rest != (Resources{}) {
			add(consensus.Errorf(consensus.CodeConflict, "resources in use (%+v)", u))
		}
	}
	for _, h := range projectHolders() {
		names := h.Held(txn, project)
		if len(names) == 0 {
			continue
		}
		sort.Strings(names)
		shown := names
		if len(shown) > 5 {
			shown = append(shown[:5:5], "…")
		}
		add(consensus.Errorf(consensus.CodeConflict, "%d %s (%s)", len(names), h.Kind, strings.Join(shown, ", ")))
	}
	return left
}
