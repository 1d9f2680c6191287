package identity_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus/consensustest"
)

// New passwords need 12 characters and must not contain the user name, in
// any case; a user whose older password breaks the rules still logs in.
func TestPasswordRules(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	ctx := context.Background()
	if _, err := svc.Setup(ctx, svc.SetupCode(), "admin", "Admin-2026-xyz"); !errors.Is(err, identity.ErrPasswordHasName) {
		t.Fatalf("setup with the name in the password: %v", err)
	}
	admin := setupAdmin(t, svc)
	for _, c := range []struct {
		name, pw string
		want     error
	}{
		{"nurse", "short-pw", identity.ErrPasswordTooShort},
		{"nurse", "elevenchars", identity.ErrPasswordTooShort},
		{"nurse", "密码密码密码密码密码密", identity.ErrPasswordTooShort}, // 11 characters, 33 bytes
		{"nurse", "night-NURSE-shift", identity.ErrPasswordHasName},
		{"Nurse", "nurse-on-night-shift", identity.ErrPasswordHasName},
		{"nurse", string(make([]byte, 257)), identity.ErrPasswordTooLong},
		{"nurse", "twelve-chars", nil},
	} {
		_, err := svc.CreateUser(ctx, admin, identity.UserSpec{Name: c.name, Password: c.pw})
		if !errors.Is(err, c.want) && (c.want != nil || err != nil) {
			t.Errorf("user %s, password %q: %v, want %v", c.name, c.pw, err, c.want)
		}
	}
	u, err := svc.GetUser(admin, "nurse")
	if err != nil {
		t.Fatal(err)
	}
	weak := "weak"
	if _, err := svc.UpdateUser(ctx, admin, u.ID, identity.UserUpdate{Password: &weak}, 0); !errors.Is(err, identity.ErrPasswordTooShort) {
		t.Fatalf("reset to a short password: %v", err)
	}
	// A user from before the rules, with a short password, still logs in.
	hash, _ := identity.HashPassword("old")
	if _, err := c.Nodes[0].Apply(ctx, identity.MsgCreateUser, identity.User{ID: "0123456789abcdef", Name: "legacy", PasswordHash: hash, CreatedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Login(ctx, "legacy", "old"); err != nil {
		t.Fatalf("a user with an old weak password: %v", err)
	}
}
