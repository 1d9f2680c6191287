package identity_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
)

// Changing one's own password needs the current one and revokes the user's
// other sessions and API tokens; the session that changed it stays. An
// admin's reset revokes them all.
func TestPasswordChangeRevokesOtherTokens(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	admin := setupAdmin(t, svc)
	ctx := context.Background()
	if _, err := svc.CreateUser(ctx, admin, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	login := func(pw string) (string, *identity.Principal) {
		t.Helper()
		tok, _, err := svc.Login(ctx, "nurse", pw)
		if err != nil {
			t.Fatal(err)
		}
		p, err := svc.Authenticate(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		return tok, p
	}
	laptop, lp := login("night-shift-9471")
	phone, _ := login("night-shift-9471")
	script, _, err := svc.CreateAPIToken(ctx, lp, "backup", 0)
	if err != nil {
		t.Fatal(err)
	}
	newPW, wrong := "day-shift-1188", "not-my-password"
	if _, err := svc.UpdateUser(ctx, lp, "nurse", identity.UserUpdate{Password: &newPW}, 0); !errors.Is(err, identity.ErrCurrentPasswordNeeded) {
		t.Fatalf("change without the current password: %v", err)
	}
	if _, err := svc.UpdateUser(ctx, lp, "nurse", identity.UserUpdate{Password: &newPW, CurrentPassword: &wrong}, 0); !errors.Is(err, identity.ErrCurrentPasswordWrong) {
		t.Fatalf("change with a wrong current password: %v", err)
	}
	for _, tok := range []string{laptop, phone, script} {
		if _, err := svc.Authenticate(ctx, tok); err != nil {
			t.Fatalf("a refused change revoked a token: %v", err)
		}
	}
	cur := "night-shift-9471"
	if _, err := svc.UpdateUser(ctx, lp, "nurse", identity.UserUpdate{Password: &newPW, CurrentPassword: &cur}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, laptop); err != nil {
		t.Fatalf("the session that changed the password: %v", err)
	}
	for name, tok := range map[string]string{"other session": phone, "API token": script} {
		if _, err := svc.Authenticate(ctx, tok); !identity.IsCode(err, identity.CodeUnauthenticated) {
			t.Errorf("%s after a password change: %v", name, err)
		}
	}
	if _, _, err := svc.Login(ctx, "nurse", "night-shift-9471"); err == nil {
		t.Fatal("the old password still logs in")
	}
	// An admin resets it: no current password needed, every token goes.
	reset := "reset-by-admin-77"
	if _, err := svc.UpdateUser(ctx, admin, "nurse", identity.UserUpdate{Password: &reset}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, laptop); !identity.IsCode(err, identity.CodeUnauthenticated) {
		t.Fatalf("the user's session after an admin's reset: %v", err)
	}
	if ts := svc.ListTokens(admin); len(ts) != 1 || ts[0].UserID != admin.User.ID {
		t.Fatalf("tokens left: %+v, want only the admin's session", ts)
	}
	// An admin changing their own password needs theirs too.
	own := "new-root-secret-1"
	if _, err := svc.UpdateUser(ctx, admin, "admin", identity.UserUpdate{Password: &own}, 0); !errors.Is(err, identity.ErrCurrentPasswordNeeded) {
		t.Fatalf("an admin's own change without the current password: %v", err)
	}
}

// API tokens live at most the cluster's maximum lifetime: a token asked for
// without an expiry gets it, a longer one is refused, and a token from
// before (no expiry at all) expires that long after its creation.
func TestAPITokenMaximumLifetime(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	clk := &clock{now: time.Now()}
	cfg := identity.DefaultConfig()
	cfg.Now = clk.Now
	svc := identity.NewService(c.Nodes[0], cfg)
	admin := setupAdmin(t, svc)
	ctx := context.Background()
	if got := svc.Settings().MaxTokenLifetime(); got != 90*24*time.Hour {
		t.Fatalf("default maximum %s, want 90 days", got)
	}
	_, tk, err := svc.CreateAPIToken(ctx, admin, "ci", 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().UTC().Add(90 * 24 * time.Hour); !tk.ExpiresAt.Equal(want) {
		t.Fatalf("a token without a TTL expires %v, want %v", tk.ExpiresAt, want)
	}
	if _, _, err := svc.CreateAPIToken(ctx, admin, "forever", 91*24*time.Hour); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("a token past the maximum: %v", err)
	}
	// A token from before the maximum existed, without expiry.
	const id, secret = "00000000000000aa", "legacy-secret"
	sum := sha256Sum(secret)
	if _, err := c.Nodes[0].Apply(ctx, identity.MsgCreateToken, identity.Token{ID: id, UserID: admin.User.ID, Kind: identity.TokenAPI,
		SecretHash: sum, CreatedAt: clk.Now().Add(-10 * 24 * time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	legacy := "cairn_" + id + "_" + secret
	if _, err := svc.Authenticate(ctx, legacy); err != nil {
		t.Fatalf("a 10-day-old token without expiry: %v", err)
	}
	// The admin lowers the maximum to a week: the old token is past it now.
	st := svc.Settings()
	st.MaxTokenLifetimeSeconds = int64(7 * 24 * time.Hour / time.Second)
	if _, err := svc.SetSettings(ctx, admin, st, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Authenticate(ctx, legacy); !identity.IsCode(err, identity.CodeUnauthenticated) {
		t.Fatalf("a 10-day-old token past a 7-day maximum: %v", err)
	}
	if err := svc.PruneExpiredTokens(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tok := range svc.ListTokens(admin) {
		if tok.ID == id {
			t.Fatal("the expired token was not pruned")
		}
	}
	st.MaxTokenLifetimeSeconds = 10
	if _, err := svc.SetSettings(ctx, admin, st, 0); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("a maximum of 10 seconds: %v", err)
	}
}
