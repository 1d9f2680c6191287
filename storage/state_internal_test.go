package storage

import (
	"context"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
)

// stateFixture is one in-process node with identity and storage
// registered, its first cluster admin signed in, and a project: for tests
// that drive storage's commands through the state machine alone.
type stateFixture struct {
	n     *consensus.Node
	id    *identity.Service
	admin *identity.Principal
	pr    *identity.Project
}

func newStateFixture(t *testing.T, spec identity.ProjectSpec) *stateFixture {
	t.Helper()
	c := consensustest.Start(t, 1, func(reg *consensus.Registry) {
		identity.Register(reg)
		Register(reg)
	})
	n := c.Leader()
	ctx := context.Background()
	id := identity.NewService(n, identity.DefaultConfig())
	if _, err := id.CreateFirstAdmin(ctx, "admin", "cluster-root-6161"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := id.Login(ctx, "admin", "cluster-root-6161")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := id.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := id.CreateProject(ctx, admin, spec)
	if err != nil {
		t.Fatal(err)
	}
	return &stateFixture{n: n, id: id, admin: admin, pr: pr}
}
