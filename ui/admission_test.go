package ui

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A cluster admin admits a box from the dashboard: a box with no cluster key
// asks to be paired and is listed with its key's fingerprint; approving it
// with a wrong fingerprint fails, with the right one it joins. An enrolment
// token is shown once.
func TestDashboardAdmitsANode(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	b.login("root", "correct horse")
	mustContain(t, b.get("/dashboard"), `id="pending-none"`, `id="enrol-form"`)

	p := b.post("/dashboard/enrol-token", b.formOn("/dashboard", url.Values{}))
	m := regexp.MustCompile(`id="enrol-token" class="secret">([0-9a-f]+\.[0-9a-f]+)<`).FindStringSubmatch(p.body)
	if p.status != http.StatusOK || m == nil {
		t.Fatalf("create enrolment token: %d\n%s", p.status, p.body)
	}
	mustNotContain(t, b.get("/dashboard"), m[1])

	// A box with no cluster key, seeded with the node's gossip address.
	host, _, _ := net.SplitHostPort(e.node.RaftAddr())
	ip := net.ParseIP(host).To4()
	cfg := consensus.DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.Expect = "newbox", t.TempDir(), 3
	cfg.BindAddr = fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], 200+os.Getpid()%50)
	cfg.RPCPort, cfg.GossipPort, cfg.DiscoveryPort = 17444, 17445, 0
	cfg.Join = []string{host + ":17445"}
	cfg.Logger = testLogger(t)
	reg := consensus.NewRegistry()
	identity.Register(reg) // it replicates the same state
	box, err := consensus.New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := box.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = box.Shutdown() })
	testutil.WaitFor(t, 20*time.Second, "newbox listed as pending", func() error {
		if p := b.get("/dashboard"); !regexpMatch(`<tr class="pending" data-name="newbox">`, p.body) {
			return errors.New("not listed")
		}
		return nil
	})
	fp := box.JoinFingerprint()
	mustContain(t, b.get("/dashboard"), fp)

	p = b.post("/dashboard/pending/newbox/approve", b.formOn("/dashboard", url.Values{"fingerprint": {"0123456789abcdef"}}))
	if p.status != formStatus || !regexpMatch(`id="error"`, p.body) {
		t.Fatalf("approve with a wrong fingerprint: %d\n%s", p.status, p.body)
	}
	p = b.post("/dashboard/pending/newbox/approve", b.formOn("/dashboard", url.Values{"fingerprint": {fp}}))
	if p.status != http.StatusOK || p.path != "/dashboard?approved=newbox" {
		t.Fatalf("approve: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, `id="flash"`)
	testutil.WaitFor(t, 20*time.Second, "newbox to become a voter", func() error {
		if v := e.node.Status().Voters; v != 2 {
			return fmt.Errorf("%d voters", v)
		}
		return nil
	})
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
