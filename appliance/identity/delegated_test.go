package identity_test

import (
	"context"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
)

// A hub user acting on a site (a delegated principal) has its role in
// every project, made before or after; as admin it administers the site,
// but makes nothing that would outlive the hub's grant: no token, S3 or
// metrics key, no local user, no password or admin right of one.
func TestDelegatedPrincipal(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	admin := setupAdmin(t, svc)
	ctx := context.Background()
	if _, err := svc.CreateProject(ctx, admin, identity.ProjectSpec{Name: "ward"}); err != nil {
		t.Fatal(err)
	}
	op := svc.Delegated("hub:ops", "ops@hub", identity.RoleMember)
	pr, err := svc.GetProject(admin, "ward")
	if err != nil {
		t.Fatal(err)
	}
	if op.IsClusterAdmin() || !op.Can(pr.ID, identity.RoleMember) || op.Can(pr.ID, identity.RoleAdmin) || !op.Delegated() {
		t.Fatalf("an operator's rights: admin %v, member %v", op.IsClusterAdmin(), op.Can(pr.ID, identity.RoleMember))
	}
	if bad := svc.Delegated("hub:x", "x", identity.RoleAdmin); bad.IsClusterAdmin() || bad.Can(pr.ID, identity.RoleReader) {
		t.Fatal("a delegated name without @, which a local user could have, has rights")
	}
	root := svc.Delegated("hub:it", "it@hub", identity.RoleAdmin)
	if !root.IsClusterAdmin() {
		t.Fatal("a hub admin is not the site's admin")
	}
	if _, err := svc.CreateProject(ctx, root, identity.ProjectSpec{Name: "tele"}); err != nil {
		t.Fatalf("a hub admin makes a project: %v", err)
	}
	pw, yes := "taken-over-1234", true
	for name, f := range map[string]func() error{
		"an API token":    func() error { _, _, err := svc.CreateAPIToken(ctx, root, "keep", 0); return err },
		"a metrics token": func() error { _, _, err := svc.CreateMetricsToken(ctx, root, "keep", 0); return err },
		"an S3 key":       func() error { _, err := svc.CreateS3Credential(ctx, root, "ward"); return err },
		"a local user": func() error {
			_, err := svc.CreateUser(ctx, root, identity.UserSpec{Name: "backdoor", Password: pw, ClusterAdmin: true})
			return err
		},
		"a password": func() error {
			_, err := svc.UpdateUser(ctx, root, admin.User.Name, identity.UserUpdate{Password: &pw}, 0)
			return err
		},
		"an admin's right": func() error {
			_, err := svc.UpdateUser(ctx, root, admin.User.Name, identity.UserUpdate{ClusterAdmin: &yes}, 0)
			return err
		},
		"a user deleted": func() error { return svc.DeleteUser(ctx, root, admin.User.Name, 0) },
	} {
		if err := f(); consensus.ErrorCode(err) != consensus.CodeForbidden {
			t.Fatalf("a hub admin made %s on the site: %v", name, err)
		}
	}
	if n := len(svc.ListUsers(admin)); n != 1 {
		t.Fatalf("%d users after the refusals", n)
	}
	if _, _, err := svc.Login(ctx, admin.User.Name, pw); err == nil {
		t.Fatal("the admin's password was changed")
	}
}
