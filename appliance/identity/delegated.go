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

// Delegated tells whether p acts for a user of a trusted system (a hub).
// Such a principal makes nothing here that would outlive that system's
// grant: no token, S3 key or local user, no password, no node admitted.
func (p *Principal) Delegated() bool { return p != nil && p.TokenKind == TokenDelegated }

// TokenDelegated is the token kind of a Delegated principal.
const TokenDelegated = "delegated"

// errDelegatedCredential refuses a delegated principal a credential of
// its own here: it would outlive the hub's grant, out of the hub's sight.
var errDelegatedCredential = consensus.NewError(consensus.CodeForbidden, "a hub user cannot make tokens or keys on a site: ask the site's admin")

// errDelegatedUsers refuses a delegated principal the site's own users:
// a local account made or taken over would outlive the hub's grant.
var errDelegatedUsers = consensus.NewError(consensus.CodeForbidden, "a hub user cannot make, change or delete a site's own users: ask the site's admin")

// PrincipalOf is user id's principal as it stands now, without a token:
// for work queued on a user's behalf (a hub's intents), which acts with
// the rights the user has when it runs, and not at all once the user is
// gone or disabled (ErrUnauthenticated).
func (s *Service) PrincipalOf(id string) (*Principal, error) { return s.principalFor(id) }
