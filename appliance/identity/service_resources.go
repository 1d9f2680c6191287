package identity

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// lookup finds a row by ID, then by name.
func lookup[T any](txn *memdb.Txn, table, ref string) *T {
	if v := consensus.First[T](txn, table, "id", ref); v != nil {
		return v
	}
	return consensus.First[T](txn, table, "name", ref)
}

func list[T any](txn *memdb.Txn, table string, keep func(*T) bool) []T {
	out := []T{}
	it, err := txn.Get(table, "id")
	if err != nil {
		return out
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if v := obj.(*T); keep == nil || keep(v) {
			out = append(out, *v)
		}
	}
	return out
}

// --- projects -------------------------------------------------------------------

// ProjectSpec is the input for creating a project.
type ProjectSpec struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	Quota       *Resources `json:"quota,omitempty"`
}

// ListProjects returns the projects the caller may see.
func (s *Service) ListProjects(p *Principal) []Project {
	return list[Project](s.read(), tProjects, func(pr *Project) bool { return p.Can(pr.ID, RoleReader) })
}

// GetProject returns a project by ID or name.
func (s *Service) GetProject(p *Principal, ref string) (*Project, error) {
	pr := lookup[Project](s.read(), tProjects, ref)
	// Not found and not allowed look the same, so names of other projects do not leak.
	if pr == nil || !p.Can(pr.ID, RoleReader) {
		return nil, notFound("project", ref)
	}
	return pr, nil
}

// CreateProject creates a project (cluster admins only) with the default quota.
func (s *Service) CreateProject(ctx context.Context, p *Principal, spec ProjectSpec) (*Project, error) {
	const action = "project.create"
	if !p.IsClusterAdmin() {
		return nil, s.deny(ctx, p, action, spec.Name, "", forbidden("create projects"))
	}
	if err := validateName("project name", spec.Name); err != nil {
		return nil, s.deny(ctx, p, action, spec.Name, "", err)
	}
	if len(spec.Description) > 1024 {
		return nil, s.deny(ctx, p, action, spec.Name, "", consensus.Errorf(consensus.CodeInvalid, "description is longer than 1024 characters"))
	}
	q := DefaultQuota
	if spec.Quota != nil {
		if err := spec.Quota.validate(); err != nil {
			return nil, s.deny(ctx, p, action, spec.Name, "", err)
		}
		q = *spec.Quota
	}
	pr := Project{ID: newID(), Name: spec.Name, Description: spec.Description, CreatedAt: s.cfg.Now().UTC()}
	var out Project
	err := s.mutate(ctx, p, action, spec.Name, pr.ID, MsgCreateProject, createProjectCmd{Project: pr, Quota: q}, &out)
	return &out, err
}

// UpdateProject changes a project's description; project admins may do it.
func (s *Service) UpdateProject(ctx context.Context, p *Principal, ref string, description *string, ifMatch uint64) (*Project, error) {
	const action = "project.update"
	pr, err := s.GetProject(p, ref)
	if err != nil {
		return nil, s.deny(ctx, p, action, ref, "", err)
	}
	if !p.Can(pr.ID, RoleAdmin) {
		return nil, s.deny(ctx, p, action, ref, pr.ID, forbidden("change project %s", pr.Name))
	}
	if description != nil && len(*description) > 1024 {
		return nil, s.deny(ctx, p, action, ref, pr.ID, consensus.Errorf(consensus.CodeInvalid, "description is longer than 1024 characters"))
	}
	var out Project
	err = s.mutate(ctx, p, action, pr.ID, pr.ID, MsgUpdateProject, updateProjectCmd{ID: pr.ID, IfMatch: ifMatch, Description: description}, &out)
	return &out, err
}

// DeleteProject removes an empty project (cluster admins only).
func (s *Service) DeleteProject(ctx context.Context, p *Principal, ref string, ifMatch uint64) error {
	const action = "project.delete"
	pr, err := s.GetProject(p, ref)
	if err != nil {
		return s.deny(ctx, p, action, ref, "", err)
	}
	if !p.IsClusterAdmin() {
		return s.deny(ctx, p, action, ref, pr.ID, forbidden("delete projects"))
	}
	// Protocol 5's command, which also counts what other domains keep of
	// the project; until every server speaks it, the refusal says so.
	return s.mutate(ctx, p, action, pr.ID, pr.ID, MsgDeleteEmptyProject, deleteCmd{ID: pr.ID, IfMatch: ifMatch}, nil)
}

// MemberView is a membership with the user's name.
type MemberView struct {
	UserID   string `json:"user_id"`
	UserName string `json:"user"`
	Role     Role   `json:"role"`
}

// ListMembers lists a project's members.
func (s *Service) ListMembers(p *Principal, ref string) ([]MemberView, error) {
	pr, err := s.GetProject(p, ref)
	if err != nil {
		return nil, err
	}
	txn := s.read()
	out := []MemberView{}
	it, _ := txn.Get(tMembers, "project", pr.ID)
	for obj := it.Next(); obj != nil; obj = it.Next() {
		m := obj.(*Membership)
		name := m.UserID
		if u := consensus.First[User](txn, tUsers, "id", m.UserID); u != nil {
			name = u.Name
		}
		out = append(out, MemberView{UserID: m.UserID, UserName: name, Role: m.Role})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserName < out[j].UserName })
	return out, nil
}

// SetMember gives a user a role in a project (project admins and cluster admins).
func (s *Service) SetMember(ctx context.Context, p *Principal, projectRef, userRef string, role Role) error {
	const action = "project.member.set"
	pr, err := s.GetProject(p, projectRef)
	if err != nil {
		return s.deny(ctx, p, action, userRef, "", err)
	}
	if !p.Can(pr.ID, RoleAdmin) {
		return s.deny(ctx, p, action, userRef, pr.ID, forbidden("manage members of %s", pr.Name))
	}
	if !role.valid() {
		return s.deny(ctx, p, action, userRef, pr.ID, consensus.Errorf(consensus.CodeInvalid, "role must be admin, member or reader, not %q", role))
	}
	u := lookup[User](s.read(), tUsers, userRef)
	if u == nil {
		return s.deny(ctx, p, action, userRef, pr.ID, notFound("user", userRef))
	}
	return s.mutate(ctx, p, action, u.Name+"="+string(role), pr.ID, MsgSetMembership, Membership{ProjectID: pr.ID, UserID: u.ID, Role: role}, nil)
}

// RemoveMember takes a user's role in a project away.
func (s *Service) RemoveMember(ctx context.Context, p *Principal, projectRef, userRef string) error {
	const action = "project.member.remove"
	pr, err := s.GetProject(p, projectRef)
	if err != nil {
		return s.deny(ctx, p, action, userRef, "", err)
	}
	if !p.Can(pr.ID, RoleAdmin) {
		return s.deny(ctx, p, action, userRef, pr.ID, forbidden("manage members of %s", pr.Name))
	}
	u := lookup[User](s.read(), tUsers, userRef)
	if u == nil {
		return s.deny(ctx, p, action, userRef, pr.ID, notFound("user", userRef))
	}
	return s.mutate(ctx, p, action, u.Name, pr.ID, MsgDeleteMembership, deleteCmd{ID: pr.ID + "/" + u.ID}, nil)
}

// --- users ------------------------------------------------------------------------

// UserSpec is the input for creating a user.
type UserSpec struct {
	Name         string `json:"name"`
	DisplayName  string `json:"display_name"`
	Password     string `json:"password"`
	ClusterAdmin bool   `json:"cluster_admin"`
}

// ListUsers lists users: all for cluster admins, otherwise just the caller.
func (s *Service) ListUsers(p *Principal) []User {
	users := list[User](s.read(), tUsers, func(u *User) bool { return p.IsClusterAdmin() || u.ID == p.User.ID })
	for i := range users {
		users[i].PasswordHash = ""
	}
	return users
}

// GetUser returns a user the caller may see.
func (s *Service) GetUser(p *Principal, ref string) (*User, error) {
	u := lookup[User](s.read(), tUsers, ref)
	if u == nil || (!p.IsClusterAdmin() && u.ID != p.User.ID) {
		return nil, notFound("user", ref)
	}
	return redactUser(u), nil
}

// CreateUser creates a user (cluster admins only).
func (s *Service) CreateUser(ctx context.Context, p *Principal, spec UserSpec) (*User, error) {
	const action = "user.create"
	if p.Delegated() {
		return nil, s.deny(ctx, p, action, spec.Name, "", errDelegatedUsers)
	}
	if !p.IsClusterAdmin() {
		return nil, s.deny(ctx, p, action, spec.Name, "", forbidden("create users"))
	}
	if err := validateName("username", spec.Name); err != nil {
		return nil, s.deny(ctx, p, action, spec.Name, "", err)
	}
	if err := validatePassword(spec.Name, spec.Password); err != nil {
		return nil, s.deny(ctx, p, action, spec.Name, "", err)
	}
	hash, err := s.hashPassword(ctx, spec.Password)
	if err != nil {
		return nil, err
	}
	u := User{ID: newID(), Name: spec.Name, DisplayName: spec.DisplayName, PasswordHash: hash, ClusterAdmin: spec.ClusterAdmin, CreatedAt: s.cfg.Now().UTC()}
	var out User
	if err := s.mutate(ctx, p, action, spec.Name, "", MsgCreateUser, u, &out); err != nil {
		return nil, err
	}
	return redactUser(&out), nil
}

// UserUpdate holds the fields to change; nil leaves a field alone.
type UserUpdate struct {
	DisplayName  *string `json:"display_name,omitempty"`
	Password     *string `json:"password,omitempty"`
	ClusterAdmin *bool   `json:"cluster_admin,omitempty"`
	// Disabled disables or enables the user (cluster admins, not on
	// themselves): see User.Disabled.
	Disabled *bool `json:"disabled,omitempty"`
	// CurrentPassword must come with a change of one's own password.
	CurrentPassword *string `json:"current_password,omitempty"`
}

// UpdateUser changes a user. Users may change their own name and password;
// only cluster admins change others or grant cluster admin. Changing one's
// own password needs the current one. A new password (one's own, or an
// admin's reset) revokes every session and API token of the user but the
// session that changed it.
func (s *Service) UpdateUser(ctx context.Context, p *Principal, ref string, up UserUpdate, ifMatch uint64) (*User, error) {
	const action = "user.update"
	if p.Delegated() {
		return nil, s.deny(ctx, p, action, ref, "", errDelegatedUsers)
	}
	u, err := s.GetUser(p, ref)
	if err != nil {
		return nil, s.deny(ctx, p, action, ref, "", err)
	}
	if up.ClusterAdmin != nil && !p.IsClusterAdmin() {
		return nil, s.deny(ctx, p, action, ref, "", forbidden("grant cluster admin"))
	}
	if up.Disabled != nil {
		if !p.IsClusterAdmin() {
			return nil, s.deny(ctx, p, action, ref, "", forbidden("disable users"))
		}
		if u.ID == p.User.ID {
			return nil, s.deny(ctx, p, action, ref, "", consensus.Errorf(consensus.CodeConflict, "cannot disable or enable yourself"))
		}
		if up.DisplayName == nil && up.Password == nil && up.ClusterAdmin == nil {
			return s.setDisabled(ctx, p, u, *up.Disabled, ifMatch)
		}
	}
	cmd := updateUserCmd{ID: u.ID, IfMatch: ifMatch, DisplayName: up.DisplayName, ClusterAdmin: up.ClusterAdmin}
	if up.Password != nil {
		self := u.ID == p.User.ID
		if self {
			if err := s.checkCurrentPassword(ctx, u.ID, up.CurrentPassword); err != nil {
				return nil, s.deny(ctx, p, action, ref, "", err)
			}
		}
		if err := validatePassword(u.Name, *up.Password); err != nil {
			return nil, s.deny(ctx, p, action, ref, "", err)
		}
		cmd.RevokeTokens = true
		if self {
			cmd.KeepToken = p.TokenID
		}
		hash, err := s.hashPassword(ctx, *up.Password)
		if err != nil {
			return nil, err
		}
		cmd.PasswordHash = &hash
	}
	var out User
	if err := s.mutate(ctx, p, action, u.Name, "", MsgUpdateUser, cmd, &out); err != nil {
		return nil, err
	}
	if up.Disabled != nil {
		return s.setDisabled(ctx, p, u, *up.Disabled, 0)
	}
	return redactUser(&out), nil
}

// setDisabled disables or enables a user: a command of its own (protocol
// 5), which checks where it applies that the actor may.
func (s *Service) setDisabled(ctx context.Context, p *Principal, u *User, off bool, ifMatch uint64) (*User, error) {
	action := "user.enable"
	if off {
		action = "user.disable"
	}
	if err := checkVersion("user", u.ID, u.Version, ifMatch); err != nil {
		return nil, s.deny(ctx, p, action, u.Name, "", err)
	}
	var out User
	if err := s.mutate(ctx, p, action, u.Name, "", MsgSetUserDisabled, setUserDisabledCmd{ID: u.ID, Actor: p.User.ID, Disabled: off}, &out); err != nil {
		return nil, err
	}
	return redactUser(&out), nil
}

// DeleteUser removes a user with their memberships and tokens.
func (s *Service) DeleteUser(ctx context.Context, p *Principal, ref string, ifMatch uint64) error {
	const action = "user.delete"
	if p.Delegated() {
		return s.deny(ctx, p, action, ref, "", errDelegatedUsers)
	}
	if !p.IsClusterAdmin() {
		return s.deny(ctx, p, action, ref, "", forbidden("delete users"))
	}
	u, err := s.GetUser(p, ref)
	if err != nil {
		return s.deny(ctx, p, action, ref, "", err)
	}
	return s.mutate(ctx, p, action, u.Name, "", MsgDeleteUser, deleteCmd{ID: u.ID, IfMatch: ifMatch}, nil)
}

// --- tokens -------------------------------------------------------------------------

// ListTokens lists the caller's tokens (all tokens for cluster admins),
// without secrets, each with the expiry it really has (see expiresAt).
func (s *Service) ListTokens(p *Principal) []Token {
	txn := s.read()
	st := settingsIn(txn)
	toks := list[Token](txn, tTokens, func(t *Token) bool { return p.IsClusterAdmin() || t.UserID == p.User.ID })
	for i := range toks {
		toks[i].SecretHash = nil
		toks[i].ExpiresAt = expiresAt(&toks[i], st)
	}
	return toks
}

// CreateAPIToken issues a long-lived token for the caller; ttl 0 means the
// cluster's maximum lifetime, and a longer ttl is refused. The secret is
// returned once and never stored.
func (s *Service) CreateAPIToken(ctx context.Context, p *Principal, name string, ttl time.Duration) (string, *Token, error) {
	if p.Delegated() {
		return "", nil, s.deny(ctx, p, "token.create", name, "", errDelegatedCredential)
	}
	if err := validateName("token name", name); err != nil {
		return "", nil, s.deny(ctx, p, "token.create", name, "", err)
	}
	maxTTL := s.Settings().MaxTokenLifetime()
	if ttl < 0 || ttl > maxTTL {
		return "", nil, s.deny(ctx, p, "token.create", name, "", consensus.Errorf(consensus.CodeInvalid,
			"a token's lifetime must be at most the cluster's maximum, %d days", int(maxTTL.Hours()/24)))
	}
	if ttl == 0 {
		ttl = maxTTL
	}
	return s.issueToken(ctx, p, p.User.ID, TokenAPI, name, s.cfg.Now().UTC().Add(ttl))
}

// RevokeToken deletes a token: one's own, or anyone's for cluster admins.
func (s *Service) RevokeToken(ctx context.Context, p *Principal, id string) error {
	const action = "token.revoke"
	t := consensus.First[Token](s.read(), tTokens, "id", id)
	if t == nil || (!p.IsClusterAdmin() && t.UserID != p.User.ID) {
		return s.deny(ctx, p, action, id, "", notFound("token", id))
	}
	return s.mutate(ctx, p, action, id, "", MsgDeleteToken, deleteCmd{ID: id}, nil)
}

// PruneExpiredTokens removes expired tokens; the leader runs it periodically.
func (s *Service) PruneExpiredTokens(ctx context.Context) error {
	_, err := s.c.Apply(ctx, MsgPruneTokens, pruneTokensCmd{Now: s.cfg.Now().UTC(), MaxLifetime: true}, nil)
	return err
}

// --- flavors --------------------------------------------------------------------------

// FlavorSpec is the input for creating a flavor.
type FlavorSpec struct {
	Name    string `json:"name"`
	VCPUs   int64  `json:"vcpus"`
	RAMMiB  int64  `json:"ram_mib"`
	DiskGiB int64  `json:"disk_gib"`
	// LocalDisk: boot disks on the VM's node, not on a replicated volume.
	LocalDisk bool `json:"local_disk,omitempty"`
}

func (f FlavorSpec) validate() error {
	if err := validateName("flavor name", f.Name); err != nil {
		return err
	}
	switch {
	case f.VCPUs < 1 || f.VCPUs > 256:
		return consensus.Errorf(consensus.CodeInvalid, "vcpus must be 1-256, got %d", f.VCPUs)
	case f.RAMMiB < 64 || f.RAMMiB > 4<<20:
		return consensus.Errorf(consensus.CodeInvalid, "ram_mib must be 64-4194304, got %d", f.RAMMiB)
	case f.DiskGiB < 0 || f.DiskGiB > 64<<10:
		return consensus.Errorf(consensus.CodeInvalid, "disk_gib must be 0-65536, got %d", f.DiskGiB)
	}
	return nil
}

// ListFlavors lists all flavors; every authenticated user may.
func (s *Service) ListFlavors() []Flavor {
	fl := list[Flavor](s.read(), tFlavors, nil)
	sort.Slice(fl, func(i, j int) bool {
		if fl[i].VCPUs != fl[j].VCPUs {
			return fl[i].VCPUs < fl[j].VCPUs
		}
		return fl[i].Name < fl[j].Name
	})
	return fl
}

// GetFlavor returns a flavor by ID or name.
func (s *Service) GetFlavor(ref string) (*Flavor, error) {
	f := lookup[Flavor](s.read(), tFlavors, ref)
	if f == nil {
		return nil, notFound("flavor", ref)
	}
	return f, nil
}

// CreateFlavor adds a flavor (cluster admins only).
func (s *Service) CreateFlavor(ctx context.Context, p *Principal, spec FlavorSpec) (*Flavor, error) {
	const action = "flavor.create"
	if !p.IsClusterAdmin() {
		return nil, s.deny(ctx, p, action, spec.Name, "", forbidden("manage flavors"))
	}
	if err := spec.validate(); err != nil {
		return nil, s.deny(ctx, p, action, spec.Name, "", err)
	}
	f := Flavor{ID: newID(), Name: spec.Name, VCPUs: spec.VCPUs, RAMMiB: spec.RAMMiB, DiskGiB: spec.DiskGiB, LocalDisk: spec.LocalDisk, CreatedAt: s.cfg.Now().UTC()}
	var out Flavor
	err := s.mutate(ctx, p, action, spec.Name, "", MsgCreateFlavor, f, &out)
	return &out, err
}

// RenameFlavor renames a flavor. Sizes are immutable, as in OpenStack: running
// VMs keep the size they were created with.
func (s *Service) RenameFlavor(ctx context.Context, p *Principal, ref, name string, ifMatch uint64) (*Flavor, error) {
	const action = "flavor.update"
	if !p.IsClusterAdmin() {
		return nil, s.deny(ctx, p, action, ref, "", forbidden("manage flavors"))
	}
	f, err := s.GetFlavor(ref)
	if err != nil {
		return nil, s.deny(ctx, p, action, ref, "", err)
	}
	if err := validateName("flavor name", name); err != nil {
		return nil, s.deny(ctx, p, action, ref, "", err)
	}
	var out Flavor
	err = s.mutate(ctx, p, action, f.ID, "", MsgUpdateFlavor, updateFlavorCmd{ID: f.ID, IfMatch: ifMatch, Name: &name}, &out)
	return &out, err
}

// DeleteFlavor removes a flavor (cluster admins only).
func (s *Service) DeleteFlavor(ctx context.Context, p *Principal, ref string, ifMatch uint64) error {
	const action = "flavor.delete"
	if !p.IsClusterAdmin() {
		return s.deny(ctx, p, action, ref, "", forbidden("manage flavors"))
	}
	f, err := s.GetFlavor(ref)
	if err != nil {
		return s.deny(ctx, p, action, ref, "", err)
	}
	return s.mutate(ctx, p, action, f.ID, "", MsgDeleteFlavor, deleteCmd{ID: f.ID, IfMatch: ifMatch}, nil)
}

// --- quotas ----------------------------------------------------------------------------

// GetQuota returns a project's limits and usage.
func (s *Service) GetQuota(p *Principal, projectRef string) (*Quota, error) {
	pr, err := s.GetProject(p, projectRef)
	if err != nil {
		return nil, err
	}
	q := consensus.First[Quota](s.read(), tQuotas, "id", pr.ID)
	if q == nil {
		return nil, notFound("quota", projectRef)
	}
	return q, nil
}

// SetQuota replaces a project's limits (cluster admins only). Lowering a limit
// below current usage is allowed: it blocks new allocations, as in OpenStack.
func (s *Service) SetQuota(ctx context.Context, p *Principal, projectRef string, limits Resources, ifMatch uint64) (*Quota, error) {
	const action = "quota.set"
	if !p.IsClusterAdmin() {
		return nil, s.deny(ctx, p, action, projectRef, "", forbidden("set quotas"))
	}
	pr, err := s.GetProject(p, projectRef)
	if err != nil {
		return nil, s.deny(ctx, p, action, projectRef, "", err)
	}
	if err := limits.validate(); err != nil {
		return nil, s.deny(ctx, p, action, projectRef, pr.ID, err)
	}
	var out Quota
	err = s.mutate(ctx, p, action, pr.ID, pr.ID, MsgSetQuota, setQuotaCmd{ProjectID: pr.ID, IfMatch: ifMatch, Limits: limits}, &out)
	return &out, err
}

// --- audit -----------------------------------------------------------------------------

// AuditFilter narrows an audit query.
type AuditFilter struct {
	ProjectID string
	User      string
	Action    string // prefix, e.g. "project."
	Before    string // entry ID to page backwards from
	Limit     int
}

// ListAudit returns entries newest first. Cluster admins see everything;
// project admins see their projects' entries.
func (s *Service) ListAudit(p *Principal, f AuditFilter) ([]AuditEntry, error) {
	if f.ProjectID != "" {
		pr, err := s.GetProject(p, f.ProjectID)
		if err != nil {
			return nil, err
		}
		f.ProjectID = pr.ID
	}
	if !p.IsClusterAdmin() && (f.ProjectID == "" || !p.Can(f.ProjectID, RoleAdmin)) {
		if f.ProjectID == "" {
			return nil, forbidden("read the audit log")
		}
		return nil, forbidden("read the audit log of this project")
	}
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	txn := s.read()
	it, err := txn.ReverseLowerBound(tAudit, "id", maxKey(f.Before))
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	out := []AuditEntry{}
	for obj := it.Next(); obj != nil && len(out) < f.Limit; obj = it.Next() {
		e := obj.(*AuditEntry)
		if f.Before != "" && e.ID >= f.Before {
			continue
		}
		if (f.ProjectID != "" && e.ProjectID != f.ProjectID) || (f.User != "" && e.UserName != f.User) ||
			(f.Action != "" && !strings.HasPrefix(e.Action, f.Action)) {
			continue
		}
		out = append(out, *e)
	}
	return out, nil
}

func maxKey(before string) string {
	if before == "" {
		return "~" // sorts after every zero-padded index
	}
	return before
}
