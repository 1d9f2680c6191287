package cli

import (
	"bytes"
	"context"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus/consensustest"
)

// cairn runs the CLI in-process and returns its exit code and output.
func cairn(t *testing.T, stdin string, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String() + errOut.String()
}

// `cairn user passwd` of one's own password needs the current one and
// revokes the other sessions; `cairn token list` and `cairn token revoke`
// show and revoke one's tokens.
func TestCLIPasswordAndTokens(t *testing.T) {
	c := consensustest.Start(t, 1, identity.Register)
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	url, ca := serveAPI(t, api.Deps{Identity: svc, Cluster: c.Nodes[0]}, svc)
	ctx := context.Background()
	admTok, _, _ := svc.Login(ctx, "root", "correct horse")
	adm, _ := svc.Authenticate(ctx, admTok)
	if _, err := svc.CreateUser(ctx, adm, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	other, _, err := svc.Login(ctx, "nurse", "night-shift-9471")
	if err != nil {
		t.Fatal(err)
	}
	otherP, _ := svc.Authenticate(ctx, other)

	if code, out := cairn(t, "night-shift-9471\n", "login", "--endpoint", url, "--ca-cert", ca, "--username", "nurse", "--password-stdin"); code != 0 {
		t.Fatalf("login: %d %s", code, out)
	}
	if code, out := cairn(t, "", "token", "list"); code != 0 || !strings.Contains(out, otherP.TokenID) || strings.Count(out, "session") != 2 {
		t.Fatalf("token list: %d\n%s", code, out)
	}
	if code, out := cairn(t, "day-shift-1188\n", "user", "passwd", "nurse", "--password-stdin"); code == 0 || !strings.Contains(out, "current password") {
		t.Fatalf("passwd without the current password: %d %s", code, out)
	}
	if code, out := cairn(t, "night-shift-9471\nday-shift-1188\n", "user", "passwd", "nurse", "--password-stdin", "--current-password-stdin"); code != 0 {
		t.Fatalf("passwd: %d %s", code, out)
	}
	if _, err := svc.Authenticate(ctx, other); !identity.IsCode(err, identity.CodeUnauthenticated) {
		t.Fatalf("the other session after passwd: %v", err)
	}
	// The CLI's own session survived; revoke a new API token with it.
	_, tk, err := svc.CreateAPIToken(ctx, mustPrincipal(t, svc, "nurse", "day-shift-1188"), "job", 0)
	if err != nil {
		t.Fatal(err)
	}
	if code, out := cairn(t, "", "token", "revoke", tk.ID); code != 0 {
		t.Fatalf("token revoke: %d %s", code, out)
	}
	if code, out := cairn(t, "", "token", "list"); code != 0 || strings.Contains(out, tk.ID) {
		t.Fatalf("token list after revoke: %d\n%s", code, out)
	}
}

func mustPrincipal(t *testing.T, svc *identity.Service, user, pw string) *identity.Principal {
	t.Helper()
	tok, _, err := svc.Login(context.Background(), user, pw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := svc.Authenticate(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serveAPI serves d's API over TLS until the test ends, writes its
// certificate where the CLI can be told to trust it, gives the CLI a
// config file of the test's own and makes svc's cluster admin root
// ("correct horse"). It returns the API's URL and the certificate's path.
func serveAPI(t *testing.T, d api.Deps, svc *identity.Service) (url, ca string) {
	t.Helper()
	srv := httptest.NewTLSServer(api.New(d))
	t.Cleanup(srv.Close)
	ca = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CAIRN_CONFIG", filepath.Join(t.TempDir(), "config.json"))
	if _, err := svc.CreateFirstAdmin(context.Background(), "root", "correct horse"); err != nil {
		t.Fatal(err)
	}
	return srv.URL, ca
}

// `cairn user disable` through the API: the user's session ends and login
// says the account is disabled; `cairn user enable` lets them back.
func TestCLIDisableUser(t *testing.T) {
	c := consensustest.Start(t, 1, identity.Register)
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	url, ca := serveAPI(t, api.Deps{Identity: svc, Cluster: c.Nodes[0]}, svc)
	ctx := context.Background()
	admTok, _, _ := svc.Login(ctx, "root", "correct horse")
	adm, _ := svc.Authenticate(ctx, admTok)
	if _, err := svc.CreateUser(ctx, adm, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	session, _, err := svc.Login(ctx, "nurse", "night-shift-9471")
	if err != nil {
		t.Fatal(err)
	}
	if code, out := cairn(t, "correct horse\n", "login", "--endpoint", url, "--ca-cert", ca, "--username", "root", "--password-stdin"); code != 0 {
		t.Fatalf("login: %d %s", code, out)
	}
	if code, out := cairn(t, "", "user", "disable", "root"); code == 0 || !strings.Contains(out, "cannot disable or enable yourself") {
		t.Fatalf("disable oneself: %d %s", code, out)
	}
	if code, out := cairn(t, "", "user", "disable", "nurse"); code != 0 {
		t.Fatalf("disable: %d %s", code, out)
	}
	if _, err := svc.Authenticate(ctx, session); !identity.IsCode(err, identity.CodeUnauthenticated) {
		t.Fatalf("the disabled user's session: %v", err)
	}
	if code, out := cairn(t, "", "user", "list"); code != 0 || !strings.Contains(out, "DISABLED") || !regexpMatch(`nurse\s+false\s+true`, out) {
		t.Fatalf("user list: %d\n%s", code, out)
	}
	if _, _, err := svc.Login(ctx, "nurse", "night-shift-9471"); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("login while disabled: %v", err)
	}
	if code, out := cairn(t, "", "user", "enable", "nurse"); code != 0 {
		t.Fatalf("enable: %d %s", code, out)
	}
	if _, _, err := svc.Login(ctx, "nurse", "night-shift-9471"); err != nil {
		t.Fatalf("login once enabled: %v", err)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
