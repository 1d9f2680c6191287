package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
)

// The node-admission commands against a real API on a one-node cluster.
func TestNodeAdmissionCommands(t *testing.T) {
	t.Setenv("CAIRN_CONFIG", t.TempDir()+"/config.json")
	c := consensustest.Start(t, 1, func(reg *consensus.Registry) { identity.Register(reg) })
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	srv := httptest.NewServer(api.New(api.Deps{Identity: svc, Cluster: c.Nodes[0]}))
	defer srv.Close()
	body, _ := json.Marshal(map[string]string{"setup_code": svc.SetupCode(), "username": "admin", "password": "correct-horse-battery"})
	if res, err := http.Post(srv.URL+"/api/v1/setup", "application/json", bytes.NewReader(body)); err != nil || res.StatusCode != 201 {
		t.Fatalf("setup: %v %v", res, err)
	}
	run := func(want int, args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		stdin := strings.NewReader("correct-horse-battery\n")
		if code := Main(append([]string{"--endpoint", srv.URL}, args...), stdin, &out, &errOut); code != want {
			t.Fatalf("cairn %s: exit %d, want %d: %s%s", strings.Join(args, " "), code, want, out.String(), errOut.String())
		}
		return out.String() + errOut.String()
	}
	tok := strings.TrimSpace(run(0, "login", "--username", "admin", "--password-stdin"))
	if i := strings.LastIndex(tok, "\n"); i >= 0 {
		tok = tok[i+1:]
	}
	out := run(0, "--token", tok, "node", "enrol-token", "create", "--ttl", "10m")
	if !strings.Contains(out, "enrolment token: ") || !strings.Contains(out, "--enrol-token ") || !strings.Contains(out, "--join-token "+c.Nodes[0].JoinToken()) {
		t.Fatalf("enrol-token create printed %q", out)
	}
	if out := run(0, "--token", tok, "node", "pending"); !strings.HasPrefix(out, "NAME") {
		t.Fatalf("node pending printed %q", out)
	}
	run(2, "--token", tok, "node", "approve", "ghost")
	if out := run(1, "node", "approve", "ghost", "--token", tok, "--fingerprint", "0011223344556677"); !strings.Contains(out, "not_found") {
		t.Fatalf("approving an unknown node printed %q", out)
	}
	run(2, "--token", tok, "node", "approve")
	if out := run(1, "--token", tok, "node", "reject", "ghost", "--fingerprint", "0011223344556677"); !strings.Contains(out, "not_found") {
		t.Fatalf("rejecting an unknown node printed %q", out)
	}
	run(2, "--token", tok, "node", "reject")
}
