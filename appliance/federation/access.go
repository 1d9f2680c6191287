package federation

import (
	"context"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// Hub users' access to sites. A hub admin (the hub's cluster admin)
// administers every site. Anyone else has what grants give: a role on one
// site, or on a group of sites (a site is in at most one group). A site
// takes the role as the matching site role of its own for the call, in
// every project (site.go's Delegation): admin is the site's cluster
// admin, operator a member, read-only a reader.

// HubRole is a hub user's role on a site.
type HubRole string

// Hub roles, weakest first.
const (
	HubReadOnly HubRole = "read-only"
	HubOperator HubRole = "operator"
	HubAdmin    HubRole = "admin"
)

func (r HubRole) rank() int {
	switch r {
	case HubReadOnly:
		return 1
	case HubOperator:
		return 2
	case HubAdmin:
		return 3
	}
	return 0
}

// SiteRole is the site's own role a hub role acts with.
func (r HubRole) SiteRole() identity.Role {
	switch r {
	case HubReadOnly:
		return identity.RoleReader
	case HubOperator:
		return identity.RoleMember
	case HubAdmin:
		return identity.RoleAdmin
	}
	return ""
}

// Grant gives a hub user a role on a site or a group of sites.
type Grant struct {
	ID       string  `json:"id"` // user ID/scope
	UserID   string  `json:"user_id"`
	UserName string  `json:"user"`
	Scope    string  `json:"scope"` // site:ID or group:NAME
	Role     HubRole `json:"role"`
	Version  uint64  `json:"version"`
}

// Scopes of a grant.
func siteScope(id string) string    { return "site:" + id }
func groupScope(name string) string { return "group:" + name }

type setGrantCmd struct {
	Grant Grant `json:"grant"` // Role "": the grant is taken away
}

func applySetGrant(tx *consensus.Tx, c *setGrantCmd) (any, error) {
	g := c.Grant
	kind, ref, _ := strings.Cut(g.Scope, ":")
	switch {
	case g.UserID == "":
		return nil, consensus.Errorf(consensus.CodeInvalid, "a grant names a hub user")
	case kind == "site" && consensus.First[Site](tx.Txn, tSites, "id", ref) == nil:
		return nil, consensus.Errorf(consensus.CodeNotFound, "no site %s", ref)
	case kind == "group" && checkSiteName(ref) != nil:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a group's name is 1-63 lowercase letters, digits and dashes, starting with a letter")
	case kind != "site" && kind != "group":
		return nil, consensus.Errorf(consensus.CodeInvalid, "a grant is on a site or a group")
	case g.Role != "" && g.Role.rank() == 0:
		return nil, consensus.Errorf(consensus.CodeInvalid, "a hub role is admin, operator or read-only, not %q", g.Role)
	}
	g.ID = g.UserID + "/" + g.Scope
	if g.Role == "" {
		if cur := consensus.First[Grant](tx.Txn, tGrants, "id", g.ID); cur != nil {
			return nil, tx.Delete(tGrants, cur)
		}
		return nil, nil
	}
	g.Version = tx.Index
	return &g, tx.Insert(tGrants, &g)
}

type setSiteGroupCmd struct {
	Site  string `json:"site"`
	Group string `json:"group"` // "": none
}

func applySetSiteGroup(tx *consensus.Tx, c *setSiteGroupCmd) (any, error) {
	cur := siteByRef(tx.Txn, c.Site)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "no site %s", c.Site)
	}
	if c.Group != "" && checkSiteName(c.Group) != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a group's name is 1-63 lowercase letters, digits and dashes, starting with a letter")
	}
	s := *cur
	s.Group, s.Version = c.Group, tx.Index
	return &s, tx.Insert(tSites, &s)
}

// roleOn is p's role on site: what its grants on the site and its group
// give, at best; admin for a hub admin.
func roleOn(txn *memdb.Txn, p *identity.Principal, s *Site) HubRole {
	if p.IsClusterAdmin() {
		return HubAdmin
	}
	var best HubRole
	for _, scope := range []string{siteScope(s.ID), groupScope(s.Group)} {
		if scope == groupScope("") {
			continue
		}
		if g := consensus.First[Grant](txn, tGrants, "id", p.User.ID+"/"+scope); g != nil && g.Role.rank() > best.rank() {
			best = g.Role
		}
	}
	return best
}

// RoleOn is p's role on a site (by ID or name), "" for none.
func (h *Hub) RoleOn(p *identity.Principal, site string) HubRole {
	txn := h.c.Store().ReadTxn()
	s := siteByRef(txn, site)
	if s == nil {
		return ""
	}
	return roleOn(txn, p, s)
}

// visibleSite finds a site p has a role on, as not found otherwise (a
// user learns nothing of sites outside their grants).
func (h *Hub) visibleSite(txn *memdb.Txn, p *identity.Principal, ref string) (*Site, HubRole, error) {
	s := siteByRef(txn, ref)
	if s == nil {
		return nil, "", consensus.Errorf(consensus.CodeNotFound, "no site %s", ref)
	}
	r := roleOn(txn, p, s)
	if r == "" {
		return nil, "", consensus.Errorf(consensus.CodeNotFound, "no site %s", ref)
	}
	return s, r, nil
}

// GrantSpec gives user a role on a site or a group; Role "" takes it away.
type GrantSpec struct {
	User  string  `json:"user"`
	Site  string  `json:"site,omitempty"`
	Group string  `json:"group,omitempty"`
	Role  HubRole `json:"role"`
}

// SetGrant gives or takes a hub user's role on a site or a group (hub
// admin).
func (h *Hub) SetGrant(ctx context.Context, p *identity.Principal, spec GrantSpec) (*Grant, error) {
	const action = "federation.grant"
	scope := groupScope(spec.Group)
	if !p.IsClusterAdmin() {
		return nil, h.id.Deny(ctx, p, action, spec.User, "", consensus.Errorf(consensus.CodeForbidden, "only hub admins give roles on sites"))
	}
	if (spec.Site == "") == (spec.Group == "") {
		return nil, h.id.Deny(ctx, p, action, spec.User, "", consensus.Errorf(consensus.CodeInvalid, "a grant is on one site or one group"))
	}
	if err := h.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	u, err := h.id.GetUser(p, spec.User)
	if err != nil {
		return nil, h.id.Deny(ctx, p, action, spec.User, "", err)
	}
	if spec.Site != "" {
		s := siteByRef(h.c.Store().ReadTxn(), spec.Site)
		if s == nil {
			return nil, h.id.Deny(ctx, p, action, spec.User, "", consensus.Errorf(consensus.CodeNotFound, "no site %s", spec.Site))
		}
		scope = siteScope(s.ID)
	}
	var out Grant
	if err := h.id.Mutate(ctx, p, action, u.Name+" "+scope, "", MsgSetGrant, setGrantCmd{Grant: Grant{UserID: u.ID, UserName: u.Name, Scope: scope, Role: spec.Role}}, &out); err != nil {
		return nil, err
	}
	if spec.Role == "" {
		return nil, nil
	}
	return &out, nil
}

// Grants lists the roles given on sites and groups (hub admin), or the
// caller's own.
func (h *Hub) Grants(p *identity.Principal) []Grant {
	it, err := h.c.Store().ReadTxn().Get(tGrants, "id")
	if err != nil {
		return nil
	}
	out := []Grant{}
	for o := it.Next(); o != nil; o = it.Next() {
		if g := o.(*Grant); p.IsClusterAdmin() || g.UserID == p.User.ID {
			out = append(out, *g)
		}
	}
	return out
}

// SetGroup puts a site in a group, or ("") in none (hub admin).
func (h *Hub) SetGroup(ctx context.Context, p *identity.Principal, site, group string) (*Site, error) {
	const action = "federation.site.group"
	if !p.IsClusterAdmin() {
		return nil, h.id.Deny(ctx, p, action, site, "", consensus.Errorf(consensus.CodeForbidden, "only hub admins group sites"))
	}
	var out Site
	if err := h.id.Mutate(ctx, p, action, site, "", MsgSetSiteGroup, setSiteGroupCmd{Site: site, Group: group}, &out); err != nil {
		return nil, err
	}
	out.Serials = nil
	return &out, nil
}
