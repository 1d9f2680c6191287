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

// A disabled user cannot sign in (told so only with the right password),
// loses every session and API token, and their S3 keys are refused until a
// cluster admin enables them again. Only cluster admins disable, never
// themselves, never the last cluster admin who can sign in.
func TestDisabledUser(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	admin := setupAdmin(t, svc)
	ctx := context.Background()
	const pw = "night-shift-9471"
	if _, err := svc.CreateUser(ctx, admin, identity.UserSpec{Name: "nurse", Password: pw}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateProject(ctx, admin, identity.ProjectSpec{Name: "ward"}); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetMember(ctx, admin, "ward", "nurse", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	session, _, err := svc.Login(ctx, "nurse", pw)
	if err != nil {
		t.Fatal(err)
	}
	np, err := svc.Authenticate(ctx, session)
	if err != nil {
		t.Fatal(err)
	}
	script, _, err := svc.CreateAPIToken(ctx, np, "backup", 0)
	if err != nil {
		t.Fatal(err)
	}
	key, err := svc.CreateS3Credential(ctx, np, "ward")
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false

	// Who may not.
	if _, err := svc.UpdateUser(ctx, np, "nurse", identity.UserUpdate{Disabled: &yes}, 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a user disables themselves: %v", err)
	}
	if _, err := svc.UpdateUser(ctx, admin, admin.User.Name, identity.UserUpdate{Disabled: &yes}, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("an admin disables themselves: %v", err)
	}
	if _, err := svc.Authenticate(ctx, session); err != nil {
		t.Fatalf("refusals changed something: %v", err)
	}

	u, err := svc.UpdateUser(ctx, admin, "nurse", identity.UserUpdate{Disabled: &yes}, 0)
	if err != nil || !u.Disabled {
		t.Fatalf("disable: %+v, %v", u, err)
	}
	for name, tok := range map[string]string{"session": session, "API token": script} {
		if _, err := svc.Authenticate(ctx, tok); !errors.Is(err, identity.ErrUnauthenticated) {
			t.Errorf("the disabled user's %s: %v", name, err)
		}
	}
	if _, _, err := svc.ResolveS3(ctx, key.ID); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Errorf("the disabled user's S3 key: %v", err)
	}
	if _, _, err := svc.Login(ctx, "nurse", pw); !errors.Is(err, identity.ErrUserDisabled) {
		t.Errorf("login to the disabled account: %v", err)
	}
	// A login checked just before the disable landed: its token is refused
	// where it applies.
	late := identity.Token{ID: "late-session", UserID: u.ID, Kind: identity.TokenSession, CreatedAt: time.Now().UTC()}
	if _, err := c.Nodes[0].Apply(ctx, identity.MsgCreateToken, &late, nil); !identity.IsCode(err, identity.CodeUserDisabled) {
		t.Errorf("a token for the disabled user: %v", err)
	}
	if _, _, err := svc.Login(ctx, "nurse", "not-the-password"); !errors.Is(err, identity.ErrUnauthenticated) || errors.Is(err, identity.ErrUserDisabled) {
		t.Errorf("a wrong password to the disabled account says %v: it must not tell the account is disabled", err)
	}

	// The last cluster admin who can sign in stays. Two admins who
	// disable each other at once: the first applied wins; the second,
	// whose principal was read before and still says admin, is refused
	// where it applies, its sender being disabled by then. The loser
	// cannot enable themselves, nor act on anyone. A disabled admin does
	// not count, so they can be deleted; the last one cannot be demoted
	// nor delete themselves.
	if _, err := svc.CreateUser(ctx, admin, identity.UserSpec{Name: "deputy", Password: "second-pw-5521", ClusterAdmin: true}); err != nil {
		t.Fatal(err)
	}
	deputyTok, _, err := svc.Login(ctx, "deputy", "second-pw-5521")
	if err != nil {
		t.Fatal(err)
	}
	deputy, err := svc.Authenticate(ctx, deputyTok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.UpdateUser(ctx, deputy, "deputy", identity.UserUpdate{Disabled: &yes}, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("deputy disables themselves: %v", err)
	}
	errs := make(chan error, 2)
	go func() {
		_, err := svc.UpdateUser(ctx, admin, "deputy", identity.UserUpdate{Disabled: &yes}, 0)
		errs <- err
	}()
	go func() {
		_, err := svc.UpdateUser(ctx, deputy, admin.User.Name, identity.UserUpdate{Disabled: &yes}, 0)
		errs <- err
	}()
	e1, e2 := <-errs, <-errs
	if (e1 == nil) == (e2 == nil) || consensus.ErrorCode(errors.Join(e1, e2)) != consensus.CodeForbidden {
		t.Fatalf("two admins disabling each other: %v and %v; want one to win", e1, e2)
	}
	boss, gone, loser := admin, "deputy", deputy
	if u, _ := svc.GetUser(admin, admin.User.Name); u.Disabled {
		boss, gone, loser = deputy, admin.User.Name, admin
	}
	if _, err := svc.UpdateUser(ctx, loser, loser.User.Name, identity.UserUpdate{Disabled: &no}, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("a disabled admin enables themselves: %v", err)
	}
	if _, err := svc.UpdateUser(ctx, loser, "nurse", identity.UserUpdate{Disabled: &no}, 0); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("a disabled admin's old principal enables someone: %v", err)
	}
	if u, _ := svc.GetUser(boss, loser.User.Name); !u.Disabled {
		t.Fatal("the loser is enabled again")
	}
	// Demoting a disabled admin is allowed: they do not count.
	if _, err := svc.UpdateUser(ctx, boss, gone, identity.UserUpdate{ClusterAdmin: &no}, 0); err != nil {
		t.Fatalf("demote a disabled admin: %v", err)
	}
	if err := svc.DeleteUser(ctx, boss, gone, 0); err != nil {
		t.Fatalf("delete a disabled admin while one enabled admin remains: %v", err)
	}
	if _, err := svc.UpdateUser(ctx, boss, boss.User.Name, identity.UserUpdate{ClusterAdmin: &no}, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("demote the last admin: %v", err)
	}
	if err := svc.DeleteUser(ctx, boss, boss.User.Name, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("the last admin deletes themselves: %v", err)
	}
	admin = boss

	// Enabled again: the password works, the S3 key too; the old tokens
	// stay revoked.
	if _, err := svc.UpdateUser(ctx, admin, "nurse", identity.UserUpdate{Disabled: &no}, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Login(ctx, "nurse", pw); err != nil {
		t.Errorf("login once enabled: %v", err)
	}
	if _, _, err := svc.ResolveS3(ctx, key.ID); err != nil {
		t.Errorf("the S3 key once enabled: %v", err)
	}
	if _, err := svc.Authenticate(ctx, script); !errors.Is(err, identity.ErrUnauthenticated) {
		t.Errorf("an API token revoked by the disable came back: %v", err)
	}
}
