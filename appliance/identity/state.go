package identity

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Identity's commands (range 32-127). Numbers are never reused.
const (
	MsgAudited          consensus.MessageType = 32
	MsgRecordAudit      consensus.MessageType = 33
	MsgCreateUser       consensus.MessageType = 34
	MsgCreateFirstAdmin consensus.MessageType = 35
	MsgUpdateUser       consensus.MessageType = 36
	MsgDeleteUser       consensus.MessageType = 37
	MsgCreateProject    consensus.MessageType = 38
	MsgUpdateProject    consensus.MessageType = 39
	MsgDeleteProject    consensus.MessageType = 40
	MsgSetMembership    consensus.MessageType = 41
	MsgDeleteMembership consensus.MessageType = 42
	MsgCreateToken      consensus.MessageType = 43
	MsgDeleteToken      consensus.MessageType = 44
	MsgCreateFlavor     consensus.MessageType = 45
	MsgUpdateFlavor     consensus.MessageType = 46
	MsgDeleteFlavor     consensus.MessageType = 47
	MsgSetQuota         consensus.MessageType = 48
	// Protocol 5 (consensus/protocol.go): older nodes know neither.
	MsgSetUserDisabled    consensus.MessageType = 55
	MsgDeleteEmptyProject consensus.MessageType = 56
	MsgPruneTokens        consensus.MessageType = 49
	MsgPruneAudit         consensus.MessageType = 50
)

// Table names.
const (
	tUsers    = "users"
	tProjects = "projects"
	tMembers  = "memberships"
	tTokens   = "tokens"
	tFlavors  = "flavors"
	tQuotas   = "quotas"
	tAudit    = "audit"
)

func idIndex() *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}}
}

// nameIndex is not declared unique: go-memdb does not enforce uniqueness on
// secondary indexes, so handlers check it themselves.
func nameIndex() *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: "name", Indexer: &memdb.StringFieldIndex{Field: "Name"}}
}

// tableWithUser is a table keyed by ID with an index on UserID.
func tableWithUser(name string) *memdb.TableSchema {
	return &memdb.TableSchema{Name: name, Indexes: map[string]*memdb.IndexSchema{"id": idIndex(), "user": fieldIndex("user", "UserID")}}
}

func fieldIndex(name, field string) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: name, Indexer: &memdb.StringFieldIndex{Field: field}}
}

// Register adds identity's tables and command handlers to reg.
func Register(reg *consensus.Registry) {
	consensus.RegisterTable[User](reg, &memdb.TableSchema{Name: tUsers, Indexes: map[string]*memdb.IndexSchema{"id": idIndex(), "name": nameIndex()}})
	consensus.RegisterTable[Project](reg, &memdb.TableSchema{Name: tProjects, Indexes: map[string]*memdb.IndexSchema{"id": idIndex(), "name": nameIndex()}})
	consensus.RegisterTable[Membership](reg, &memdb.TableSchema{Name: tMembers, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex(), "project": fieldIndex("project", "ProjectID"), "user": fieldIndex("user", "UserID")}})
	consensus.RegisterTable[Token](reg, tableWithUser(tTokens))
	consensus.RegisterTable[Flavor](reg, &memdb.TableSchema{Name: tFlavors, Indexes: map[string]*memdb.IndexSchema{"id": idIndex(), "name": nameIndex()}})
	consensus.RegisterTable[Quota](reg, &memdb.TableSchema{Name: tQuotas, Indexes: map[string]*memdb.IndexSchema{"id": idIndex()}})
	// Audit queries scan newest-first by id and filter, so the table has no
	// other index: each write pays for one radix insert, not two.
	consensus.RegisterTable[AuditEntry](reg, &memdb.TableSchema{Name: tAudit, Indexes: map[string]*memdb.IndexSchema{"id": idIndex()}})

	consensus.Handle(reg, MsgAudited, "Audited", applyAudited)
	consensus.Handle(reg, MsgRecordAudit, "RecordAudit", func(tx *consensus.Tx, c *AuditEntry) (any, error) {
		return nil, insertAudit(tx, *c)
	})
	consensus.Handle(reg, MsgCreateUser, "CreateUser", applyCreateUser)
	consensus.Handle(reg, MsgCreateFirstAdmin, "CreateFirstAdmin", applyCreateFirstAdmin)
	consensus.Handle(reg, MsgUpdateUser, "UpdateUser", applyUpdateUser)
	consensus.Handle(reg, MsgDeleteUser, "DeleteUser", applyDeleteUser)
	consensus.Handle(reg, MsgCreateProject, "CreateProject", applyCreateProject)
	consensus.Handle(reg, MsgUpdateProject, "UpdateProject", applyUpdateProject)
	consensus.Handle(reg, MsgDeleteProject, "DeleteProject", applyDeleteProject)
	consensus.HandleSince(reg, MsgDeleteEmptyProject, "DeleteEmptyProject", 5, applyDeleteEmptyProject)
	consensus.HandleSince(reg, MsgSetUserDisabled, "SetUserDisabled", 5, applySetUserDisabled)
	consensus.Handle(reg, MsgSetMembership, "SetMembership", applySetMembership)
	consensus.Handle(reg, MsgDeleteMembership, "DeleteMembership", applyDeleteMembership)
	consensus.Handle(reg, MsgCreateToken, "CreateToken", applyCreateToken)
	consensus.Handle(reg, MsgDeleteToken, "DeleteToken", applyDeleteToken)
	consensus.Handle(reg, MsgCreateFlavor, "CreateFlavor", applyCreateFlavor)
	consensus.Handle(reg, MsgUpdateFlavor, "UpdateFlavor", applyUpdateFlavor)
	consensus.Handle(reg, MsgDeleteFlavor, "DeleteFlavor", applyDeleteFlavor)
	consensus.Handle(reg, MsgSetQuota, "SetQuota", applySetQuota)
	consensus.Handle(reg, MsgPruneTokens, "PruneTokens", applyPruneTokens)
	consensus.Handle(reg, MsgPruneAudit, "PruneAudit", applyPruneAudit)
	consensus.Handle(reg, MsgRecordAuditBatch, "RecordAuditBatch", applyRecordAuditBatch)
	registerS3(reg)
	registerSettings(reg)
}

// --- commands ----------------------------------------------------------------

// auditedCmd wraps a mutation with its audit entry: both commit in one
// transaction, so the log never shows a change that did not happen or misses
// one that did.
type auditedCmd struct {
	Audit   AuditEntry            `json:"audit"`
	Type    consensus.MessageType `json:"type"`
	Payload json.RawMessage       `json:"payload"`
}

type updateUserCmd struct {
	ID           string  `json:"id"`
	IfMatch      uint64  `json:"if_match,omitempty"`
	DisplayName  *string `json:"display_name,omitempty"`
	PasswordHash *string `json:"password_hash,omitempty"`
	ClusterAdmin *bool   `json:"cluster_admin,omitempty"`
	// RevokeTokens deletes the user's session and API tokens with the
	// change (of the password), all but KeepToken: the session that made it.
	RevokeTokens bool   `json:"revoke_tokens,omitempty"`
	KeepToken    string `json:"keep_token,omitempty"`
}

// setUserDisabledCmd disables or enables a user, on behalf of Actor: a
// cluster admin who can sign in, when the command applies (not merely
// when it was sent), and never the user themselves.
type setUserDisabledCmd struct {
	ID       string `json:"id"`
	Actor    string `json:"actor"`
	Disabled bool   `json:"disabled"`
}

type deleteCmd struct {
	ID      string `json:"id"`
	IfMatch uint64 `json:"if_match,omitempty"`
}

type createProjectCmd struct {
	Project Project   `json:"project"`
	Quota   Resources `json:"quota"`
	AdminID string    `json:"admin_id,omitempty"` // made project admin, if set
}

type updateProjectCmd struct {
	ID          string  `json:"id"`
	IfMatch     uint64  `json:"if_match,omitempty"`
	Description *string `json:"description,omitempty"`
}

type updateFlavorCmd struct {
	ID      string  `json:"id"`
	IfMatch uint64  `json:"if_match,omitempty"`
	Name    *string `json:"name,omitempty"`
}

type setQuotaCmd struct {
	ProjectID string    `json:"project_id"`
	IfMatch   uint64    `json:"if_match,omitempty"`
	Limits    Resources `json:"limits"`
}

type pruneTokensCmd struct {
	Now         time.Time `json:"now"`
	MaxLifetime bool      `json:"max_lifetime,omitempty"` // also prune API tokens past the cluster's maximum lifetime
}

// --- handlers ----------------------------------------------------------------

func applyAudited(tx *consensus.Tx, c *auditedCmd) (any, error) {
	v, err := tx.Dispatch(c.Type, c.Payload)
	if err != nil {
		return nil, err
	}
	entry := c.Audit
	entry.Result = "success"
	return v, insertAudit(tx, entry)
}

func insertAudit(tx *consensus.Tx, e AuditEntry) error {
	e.ID = fmt.Sprintf("%020d", tx.Index)
	return tx.Insert(tAudit, &e)
}

func checkVersion(kind, id string, have, ifMatch uint64) error {
	if ifMatch != 0 && have != ifMatch {
		return consensus.Errorf(consensus.CodePreconditionFailed, "%s %s is at version %d, not %d", kind, id, have, ifMatch)
	}
	return nil
}

func notFound(kind, id string) error {
	return consensus.Errorm(consensus.CodeNotFound, "not_found", "%s %q not found", kind, id)
}

func applyCreateUser(tx *consensus.Tx, u *User) (any, error) {
	if consensus.First[User](tx.Txn, tUsers, "name", u.Name) != nil {
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "user_exists", "a user named %q already exists", u.Name)
	}
	if consensus.First[User](tx.Txn, tUsers, "id", u.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "user id %q already exists", u.ID)
	}
	row := *u
	row.Version = tx.Index
	return &row, tx.Insert(tUsers, &row)
}

// applyCreateFirstAdmin succeeds only while no cluster admin exists, so two
// setup codes used at the same moment on two nodes create exactly one admin.
func applyCreateFirstAdmin(tx *consensus.Tx, u *User) (any, error) {
	it, err := tx.Get(tUsers, "id")
	if err != nil {
		return nil, err
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if obj.(*User).ClusterAdmin {
			return nil, consensus.Errorf(consensus.CodeConflict, "setup is already done")
		}
	}
	u.ClusterAdmin = true
	return applyCreateUser(tx, u)
}

func applyUpdateUser(tx *consensus.Tx, c *updateUserCmd) (any, error) {
	cur := consensus.First[User](tx.Txn, tUsers, "id", c.ID)
	if cur == nil {
		return nil, notFound("user", c.ID)
	}
	if err := checkVersion("user", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	row := *cur
	if c.DisplayName != nil {
		row.DisplayName = *c.DisplayName
	}
	if c.PasswordHash != nil {
		row.PasswordHash = *c.PasswordHash
	}
	if c.RevokeTokens {
		for _, t := range list[Token](tx.Txn, tTokens, func(t *Token) bool { return t.UserID == c.ID && t.ID != c.KeepToken }) {
			if err := tx.Delete(tTokens, &t); err != nil {
				return nil, err
			}
		}
	}
	if c.ClusterAdmin != nil {
		if cur.ClusterAdmin && !cur.Disabled && !*c.ClusterAdmin && countAdmins(tx.Txn) == 1 {
			return nil, consensus.Errorf(consensus.CodeConflict, "cannot demote the last cluster admin")
		}
		row.ClusterAdmin = *c.ClusterAdmin
	}
	row.Version = tx.Index
	return &row, tx.Insert(tUsers, &row)
}

// countAdmins counts the cluster admins who can sign in.
func countAdmins(tx *memdb.Txn) int {
	n := 0
	it, _ := tx.Get(tUsers, "id")
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if u := obj.(*User); u.ClusterAdmin && !u.Disabled {
			n++
		}
	}
	return n
}

func applyDeleteUser(tx *consensus.Tx, c *deleteCmd) (any, error) {
	cur := consensus.First[User](tx.Txn, tUsers, "id", c.ID)
	if cur == nil {
		return nil, notFound("user", c.ID)
	}
	if err := checkVersion("user", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	if cur.ClusterAdmin && !cur.Disabled && countAdmins(tx.Txn) == 1 {
		return nil, consensus.Errorf(consensus.CodeConflict, "cannot delete the last cluster admin")
	}
	if _, err := tx.DeleteAll(tMembers, "user", c.ID); err != nil {
		return nil, err
	}
	if _, err := tx.DeleteAll(tTokens, "user", c.ID); err != nil {
		return nil, err
	}
	if _, err := tx.DeleteAll(tS3Creds, "user", c.ID); err != nil {
		return nil, err
	}
	return nil, tx.Delete(tUsers, cur)
}

func applyCreateProject(tx *consensus.Tx, c *createProjectCmd) (any, error) {
	if consensus.First[Project](tx.Txn, tProjects, "name", c.Project.Name) != nil {
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "project_exists", "a project named %q already exists", c.Project.Name)
	}
	if consensus.First[Project](tx.Txn, tProjects, "id", c.Project.ID) != nil {
		return nil, consensus.Errorf(consensus.CodeAlreadyExists, "project id %q already exists", c.Project.ID)
	}
	p := c.Project
	p.Version = tx.Index
	if err := tx.Insert(tProjects, &p); err != nil {
		return nil, err
	}
	if err := tx.Insert(tQuotas, &Quota{ID: p.ID, Limits: c.Quota, Version: tx.Index}); err != nil {
		return nil, err
	}
	if c.AdminID != "" {
		if consensus.First[User](tx.Txn, tUsers, "id", c.AdminID) == nil {
			return nil, notFound("user", c.AdminID)
		}
		m := &Membership{ID: p.ID + "/" + c.AdminID, ProjectID: p.ID, UserID: c.AdminID, Role: RoleAdmin, Version: tx.Index}
		if err := tx.Insert(tMembers, m); err != nil {
			return nil, err
		}
	}
	return &p, nil
}

func applyUpdateProject(tx *consensus.Tx, c *updateProjectCmd) (any, error) {
	cur := consensus.First[Project](tx.Txn, tProjects, "id", c.ID)
	if cur == nil {
		return nil, notFound("project", c.ID)
	}
	if err := checkVersion("project", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	row := *cur
	if c.Description != nil {
		row.Description = *c.Description
	}
	row.Version = tx.Index
	return &row, tx.Insert(tProjects, &row)
}

// applyDeleteProject is the command older nodes know: it checks the
// quota's usage only. Kept as it was, so every node applies it alike.
func applyDeleteProject(tx *consensus.Tx, c *deleteCmd) (any, error) {
	cur := consensus.First[Project](tx.Txn, tProjects, "id", c.ID)
	if cur == nil {
		return nil, notFound("project", c.ID)
	}
	if err := checkVersion("project", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	if q := consensus.First[Quota](tx.Txn, tQuotas, "id", c.ID); q != nil && q.Usage != (Resources{}) {
		return nil, consensus.Errorf(consensus.CodeConflict, "project %s still has resources (%+v); delete them first", cur.Name, q.Usage)
	}
	return nil, removeProject(tx, cur)
}

// applyDeleteEmptyProject deletes a project that holds nothing: no usage,
// and nothing any domain's holder names (an empty bucket, an image, a
// security group of its own); what goes with it (its default security
// group) is swept in the same command.
func applyDeleteEmptyProject(tx *consensus.Tx, c *deleteCmd) (any, error) {
	cur := consensus.First[Project](tx.Txn, tProjects, "id", c.ID)
	if cur == nil {
		return nil, notFound("project", c.ID)
	}
	if err := checkVersion("project", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	if left := projectLeft(tx.Txn, c.ID); left != nil {
		return nil, consensus.Errorf(consensus.CodeConflict, "project %s still holds %v; delete them first", cur.Name, left)
	}
	for _, h := range projectHolders() {
		if h.Sweep != nil {
			if err := h.Sweep(tx, c.ID); err != nil {
				return nil, err
			}
		}
	}
	return nil, removeProject(tx, cur)
}

// removeProject deletes a project with its members, quota and S3 keys.
func removeProject(tx *consensus.Tx, cur *Project) error {
	if _, err := tx.DeleteAll(tMembers, "project", cur.ID); err != nil {
		return err
	}
	if _, err := tx.DeleteAll(tQuotas, "id", cur.ID); err != nil {
		return err
	}
	for _, cred := range list[S3Credential](tx.Txn, tS3Creds, func(k *S3Credential) bool { return k.ProjectID == cur.ID }) {
		if err := tx.Delete(tS3Creds, &cred); err != nil {
			return err
		}
	}
	return tx.Delete(tProjects, cur)
}

// applySetUserDisabled disables a user, ending every token of theirs
// (sessions, API and metrics tokens), or enables them again.
func applySetUserDisabled(tx *consensus.Tx, c *setUserDisabledCmd) (any, error) {
	cur := consensus.First[User](tx.Txn, tUsers, "id", c.ID)
	if cur == nil {
		return nil, notFound("user", c.ID)
	}
	actor := consensus.First[User](tx.Txn, tUsers, "id", c.Actor)
	if actor == nil || !actor.ClusterAdmin || actor.Disabled {
		return nil, consensus.Errorf(consensus.CodeForbidden, "only a cluster admin who can sign in disables or enables users")
	}
	if c.Actor == c.ID {
		return nil, consensus.Errorf(consensus.CodeConflict, "cannot disable or enable yourself")
	}
	if c.Disabled && cur.ClusterAdmin && !cur.Disabled && countAdmins(tx.Txn) == 1 {
		return nil, consensus.Errorf(consensus.CodeConflict, "cannot disable the last cluster admin")
	}
	row := *cur
	row.Disabled = c.Disabled
	row.Version = tx.Index
	if row.Disabled {
		if _, err := tx.DeleteAll(tTokens, "user", c.ID); err != nil {
			return nil, err
		}
	}
	return &row, tx.Insert(tUsers, &row)
}

func applySetMembership(tx *consensus.Tx, m *Membership) (any, error) {
	if consensus.First[Project](tx.Txn, tProjects, "id", m.ProjectID) == nil {
		return nil, notFound("project", m.ProjectID)
	}
	if consensus.First[User](tx.Txn, tUsers, "id", m.UserID) == nil {
		return nil, notFound("user", m.UserID)
	}
	row := *m
	row.ID = m.ProjectID + "/" + m.UserID
	row.Version = tx.Index
	return &row, tx.Insert(tMembers, &row)
}

func applyDeleteMembership(tx *consensus.Tx, c *deleteCmd) (any, error) {
	cur := consensus.First[Membership](tx.Txn, tMembers, "id", c.ID)
	if cur == nil {
		return nil, notFound("membership", c.ID)
	}
	return nil, tx.Delete(tMembers, cur)
}

func applyCreateToken(tx *consensus.Tx, t *Token) (any, error) {
	u := consensus.First[User](tx.Txn, tUsers, "id", t.UserID)
	if u == nil {
		return nil, notFound("user", t.UserID)
	}
	if u.Disabled { // disabled after the login that asked for it was checked
		return nil, ErrUserDisabled
	}
	row := *t
	row.Version = tx.Index
	return &row, tx.Insert(tTokens, &row)
}

func applyDeleteToken(tx *consensus.Tx, c *deleteCmd) (any, error) {
	cur := consensus.First[Token](tx.Txn, tTokens, "id", c.ID)
	if cur == nil {
		return nil, notFound("token", c.ID)
	}
	return nil, tx.Delete(tTokens, cur)
}

// applyPruneTokens drops expired tokens; the leader's clock travels in the command.
func applyPruneTokens(tx *consensus.Tx, c *pruneTokensCmd) (any, error) {
	it, err := tx.Get(tTokens, "id")
	if err != nil {
		return nil, err
	}
	var expired []*Token
	st := Settings{} // commands from before the maximum lifetime prune by ExpiresAt alone
	if c.MaxLifetime {
		st = settingsIn(tx.Txn)
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		t := obj.(*Token)
		if exp := expiresAt(t, st); !exp.IsZero() && exp.Before(c.Now) {
			expired = append(expired, t)
		}
	}
	for _, t := range expired {
		if err := tx.Delete(tTokens, t); err != nil {
			return nil, err
		}
	}
	return len(expired), nil
}

func applyCreateFlavor(tx *consensus.Tx, f *Flavor) (any, error) {
	if consensus.First[Flavor](tx.Txn, tFlavors, "name", f.Name) != nil {
		return nil, consensus.Errorm(consensus.CodeAlreadyExists, "flavor_exists", "a size (flavor) named %q already exists", f.Name)
	}
	row := *f
	row.Version = tx.Index
	return &row, tx.Insert(tFlavors, &row)
}

func applyUpdateFlavor(tx *consensus.Tx, c *updateFlavorCmd) (any, error) {
	cur := consensus.First[Flavor](tx.Txn, tFlavors, "id", c.ID)
	if cur == nil {
		return nil, notFound("flavor", c.ID)
	}
	if err := checkVersion("flavor", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	row := *cur
	if c.Name != nil && *c.Name != cur.Name {
		if consensus.First[Flavor](tx.Txn, tFlavors, "name", *c.Name) != nil {
			return nil, consensus.Errorm(consensus.CodeAlreadyExists, "flavor_exists", "a size (flavor) named %q already exists", *c.Name)
		}
		row.Name = *c.Name
	}
	row.Version = tx.Index
	return &row, tx.Insert(tFlavors, &row)
}

func applyDeleteFlavor(tx *consensus.Tx, c *deleteCmd) (any, error) {
	cur := consensus.First[Flavor](tx.Txn, tFlavors, "id", c.ID)
	if cur == nil {
		return nil, notFound("flavor", c.ID)
	}
	if err := checkVersion("flavor", c.ID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	return nil, tx.Delete(tFlavors, cur)
}

func applySetQuota(tx *consensus.Tx, c *setQuotaCmd) (any, error) {
	cur := consensus.First[Quota](tx.Txn, tQuotas, "id", c.ProjectID)
	if cur == nil {
		return nil, notFound("project", c.ProjectID)
	}
	if err := checkVersion("quota", c.ProjectID, cur.Version, c.IfMatch); err != nil {
		return nil, err
	}
	row := *cur
	row.Limits = c.Limits
	row.Version = tx.Index
	return &row, tx.Insert(tQuotas, &row)
}
