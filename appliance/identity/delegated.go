package identity

import (
	"strings"

	"github.com/cairnhq/cairn/consensus"
)

// Delegated is the principal of a user of a system this cluster trusts
// to act for its own users (a federation hub, through the session the
// site keeps with it): named name, with role in every project, and a
// cluster admin when role is admin. It is made per request, so projects
// made meanwhile are in it; it holds no token, and its name, which no
// local user can have (it holds an '@'), is what the audit log records.
func (s *Service) Delegated(id, name string, role Role) *Principal {
	p := &Principal{User: User{ID: id, Name: name, ClusterAdmin: role == RoleAdmin}, TokenKind: TokenDelegated, roles: map[string]Role{}}
	if !role.valid() || !strings.Contains(name, "@") {
		return &Principal{User: User{ID: id, Name: name}, TokenKind: TokenDelegated, roles: map[string]Role{}}
	}
	for _, pr := range list[Project](s.read(), tProjects, nil) {
		p.roles[pr.ID] = role
	}
	return p
}

// TokenDelegated is the token kind of a Delegated principal.
const TokenDelegated = "delegated"

// errDelegatedCredential refuses a delegated principal a credential of
// its own here: it would outlive the hub's grant, out of the hub's sight.
var errDelegatedCredential = consensus.NewError(consensus.CodeForbidden, "a hub user cannot make tokens or keys on a site: ask the site's admin")
