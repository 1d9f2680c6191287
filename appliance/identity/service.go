package identity

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// CodeUnauthenticated means no valid credentials came with the request.
const CodeUnauthenticated = "unauthenticated"

// ErrUnauthenticated is returned for a missing, unknown, expired or revoked token.
var ErrUnauthenticated = consensus.NewError(CodeUnauthenticated, "missing or invalid credentials")

// CodeUserDisabled is a login with the right password to a disabled account.
const CodeUserDisabled = "user_disabled"

// ErrUserDisabled is a login with the right password to a disabled account.
var ErrUserDisabled = consensus.NewError(CodeUserDisabled, "this account is disabled; a cluster admin can enable it")

// Cluster is what the service needs from the consensus node.
type Cluster interface {
	Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error)
	ConsistentRead(ctx context.Context) error
	Store() *consensus.Store
	Name() string
}

// Config configures the service. DefaultConfig holds the defaults; NewService
// also takes them for the login protections left zero.
type Config struct {
	SessionTTL     time.Duration
	AuditRetention int // newest audit entries kept in the replicated state; older ones live in each node's archive
	Logger         *slog.Logger
	Now            func() time.Time // the wall clock; replaceable in tests

	// Failed logins, per source address and per user name: the first
	// LoginFreeFailures cost nothing, then each refuses further attempts for
	// LoginBackoffBase, doubling up to LoginBackoffMax. LoginTableSize
	// bounds the entries this node keeps.
	LoginFreeFailures int
	LoginBackoffBase  time.Duration
	LoginBackoffMax   time.Duration
	LoginTableSize    int
	// FailedLoginWindow batches the audit records of failed logins: one per
	// source, user name and result per window, with a count.
	FailedLoginWindow time.Duration

	HashConcurrency int           // argon2 hashes at once on this node
	HashWait        time.Duration // how long a login waits for a free slot before 503

	NegativeCacheTTL  time.Duration // unknown tokens and S3 keys are remembered this long
	NegativeCacheSize int
	MissReads         int // linearizable reads for unknown credentials at once
}

// DefaultConfig returns the service defaults.
func DefaultConfig() Config {
	return Config{SessionTTL: 12 * time.Hour, AuditRetention: 10000, Logger: slog.Default(), Now: time.Now,
		LoginFreeFailures: 3, LoginBackoffBase: time.Second, LoginBackoffMax: 5 * time.Minute, LoginTableSize: 10000,
		FailedLoginWindow: 5 * time.Second,
		HashConcurrency:   runtime.NumCPU(), HashWait: 2 * time.Second,
		NegativeCacheTTL: 5 * time.Second, NegativeCacheSize: 10000, MissReads: 4}
}

// Service is identity's business logic, shared by the API and the UI.
type Service struct {
	c   Cluster
	cfg Config
	log *slog.Logger

	setupMu   sync.Mutex
	setupCode string

	logins    *loginLimiter
	failed    *failedLogins
	hashSlots chan struct{}
	neg       *negCache
	missReads chan struct{}
}

// NewService returns a service over the cluster.
func NewService(c Cluster, cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Zero values of the protection settings take the defaults.
	d := DefaultConfig()
	cfg.LoginFreeFailures = cmp.Or(cfg.LoginFreeFailures, d.LoginFreeFailures)
	cfg.LoginBackoffBase = cmp.Or(cfg.LoginBackoffBase, d.LoginBackoffBase)
	cfg.LoginBackoffMax = cmp.Or(cfg.LoginBackoffMax, d.LoginBackoffMax)
	cfg.LoginTableSize = cmp.Or(cfg.LoginTableSize, d.LoginTableSize)
	cfg.FailedLoginWindow = cmp.Or(cfg.FailedLoginWindow, d.FailedLoginWindow)
	cfg.HashConcurrency = cmp.Or(cfg.HashConcurrency, d.HashConcurrency)
	cfg.HashWait = cmp.Or(cfg.HashWait, d.HashWait)
	cfg.NegativeCacheTTL = cmp.Or(cfg.NegativeCacheTTL, d.NegativeCacheTTL)
	cfg.NegativeCacheSize = cmp.Or(cfg.NegativeCacheSize, d.NegativeCacheSize)
	cfg.MissReads = cmp.Or(cfg.MissReads, d.MissReads)
	return &Service{c: c, cfg: cfg, log: cfg.Logger, setupCode: newSetupCode(),
		logins:    newLoginLimiter(cfg),
		failed:    &failedLogins{pending: map[failedKey]*failedCount{}},
		hashSlots: make(chan struct{}, cfg.HashConcurrency),
		neg:       newNegCache(cfg.NegativeCacheTTL, cfg.NegativeCacheSize),
		missReads: make(chan struct{}, cfg.MissReads),
	}
}

// Principal is an authenticated caller.
type Principal struct {
	User      User
	TokenID   string
	TokenKind string
	roles     map[string]Role // project ID -> role
}

// IsClusterAdmin reports whether the caller administers the whole cluster.
func (p *Principal) IsClusterAdmin() bool { return p != nil && p.User.ClusterAdmin }

// RoleIn returns the caller's role in a project, or "" for none.
func (p *Principal) RoleIn(projectID string) Role { return p.roles[projectID] }

// Can reports whether the caller has at least role min in the project.
// Cluster admins can do everything.
func (p *Principal) Can(projectID string, min Role) bool {
	return p.IsClusterAdmin() || p.roles[projectID].rank() >= min.rank()
}

// ScopedTo returns the principal confined to one project, with the role the
// user has there (admin for a cluster admin) and no cluster-wide rights. An
// S3 access key acts through it, so a key never reaches another project.
func (p *Principal) ScopedTo(projectID string) *Principal {
	role := p.roles[projectID]
	if p.IsClusterAdmin() {
		role = RoleAdmin
	}
	s := &Principal{User: p.User, TokenID: p.TokenID, TokenKind: p.TokenKind, roles: map[string]Role{}}
	s.User.ClusterAdmin = false
	if role != "" {
		s.roles[projectID] = role
	}
	return s
}

// ProjectIDs lists the projects the caller has a role in.
func (p *Principal) ProjectIDs() []string {
	out := make([]string, 0, len(p.roles))
	for id := range p.roles {
		out = append(out, id)
	}
	return out
}

type ctxKey int

const remoteKey ctxKey = 0

// WithRemoteAddr records the client address for the audit log.
func WithRemoteAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteKey, addr)
}

func remoteAddr(ctx context.Context) string {
	r, _ := ctx.Value(remoteKey).(string)
	return r
}

func (s *Service) read() *memdb.Txn { return s.c.Store().ReadTxn() }

// Sync makes the next reads linearizable when consistent is set.
func (s *Service) Sync(ctx context.Context, consistent bool) error {
	if !consistent {
		return nil
	}
	return s.c.ConsistentRead(ctx)
}

// --- setup and login -----------------------------------------------------------

// SetupNeeded reports whether no cluster admin exists yet.
// A disabled admin still counts: setup makes the first admin only.
func (s *Service) SetupNeeded() bool {
	it, err := s.read().Get(tUsers, "id")
	if err != nil {
		return false
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if obj.(*User).ClusterAdmin {
			return false
		}
	}
	return true
}

// SetupCode is this node's one-time code for creating the first admin.
func (s *Service) SetupCode() string {
	s.setupMu.Lock()
	defer s.setupMu.Unlock()
	return s.setupCode
}

// Setup creates the first cluster admin when the one-time code matches. The
// FSM guarantees only one first admin ever, even if two nodes race.
func (s *Service) Setup(ctx context.Context, code, username, password string) (*User, error) {
	want := s.SetupCode()
	if subtle.ConstantTimeCompare([]byte(strings.ToUpper(strings.TrimSpace(code))), []byte(want)) != 1 {
		return nil, consensus.Errorf(consensus.CodeForbidden, "wrong setup code")
	}
	u, err := s.CreateFirstAdmin(ctx, username, password)
	if err != nil {
		return nil, err
	}
	s.setupMu.Lock()
	s.setupCode = newSetupCode() // one-time: the old code is spent
	s.setupMu.Unlock()
	return u, nil
}

// CreateFirstAdmin creates the first cluster admin without a setup code; the
// agent uses it for --admin-password-file.
func (s *Service) CreateFirstAdmin(ctx context.Context, username, password string) (*User, error) {
	if err := validateName("username", username); err != nil {
		return nil, err
	}
	if err := validatePassword(username, password); err != nil {
		return nil, err
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return nil, err
	}
	u := User{ID: newID(), Name: username, PasswordHash: hash, ClusterAdmin: true, CreatedAt: s.cfg.Now().UTC()}
	var out User
	sys := &Principal{User: User{Name: "setup"}}
	if err := s.mutate(ctx, sys, "setup.create_admin", username, "", MsgCreateFirstAdmin, u, &out); err != nil {
		return nil, err
	}
	return redactUser(&out), nil
}

// dummyHash is checked for unknown user names, so timing does not reveal
// which names exist.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"

// Login checks a password and returns a new session token. Repeated failures
// from one source address or for one user name are refused for a growing
// time (a *ThrottledError) before any password is checked; every failure is
// audited, in batches.
func (s *Service) Login(ctx context.Context, username, password string) (string, *Token, error) {
	remote := remoteAddr(ctx)
	keys := loginKeys(remote, username)
	if wait := s.logins.begin(s.cfg.Now(), keys); wait > 0 {
		s.loginFailed(remote, username, CodeTooManyAttempts)
		return "", nil, &ThrottledError{RetryAfter: wait}
	}
	u := consensus.First[User](s.read(), tUsers, "name", username)
	hash := dummyHash
	if u != nil {
		hash = u.PasswordHash
	}
	ok := false
	if err := s.withHashSlot(ctx, func() { ok = CheckPassword(hash, password) }); err != nil {
		s.logins.abandon(keys)
		return "", nil, err
	}
	if u == nil || !ok { // counted as failed already, by begin
		s.loginFailed(remote, username, CodeUnauthenticated)
		s.log.Warn("login failed", "user", username, "remote", remote)
		return "", nil, ErrUnauthenticated
	}
	s.logins.succeed(keys)
	if u.Disabled {
		s.loginFailed(remote, username, CodeUnauthenticated)
		s.log.Warn("login to a disabled account", "user", username, "remote", remote)
		return "", nil, ErrUserDisabled
	}
	now := s.cfg.Now().UTC()
	return s.issueToken(ctx, &Principal{User: *u}, u.ID, TokenSession, "login", now.Add(s.cfg.SessionTTL))
}

// hashPassword hashes a new password in one of the node's hash slots.
func (s *Service) hashPassword(ctx context.Context, pw string) (string, error) {
	var hash string
	var err error
	if serr := s.withHashSlot(ctx, func() { hash, err = HashPassword(pw) }); serr != nil {
		return "", serr
	}
	return hash, err
}

func (s *Service) issueToken(ctx context.Context, p *Principal, userID, kind, name string, expires time.Time) (string, *Token, error) {
	id, secret, hash := newTokenSecret()
	t := Token{ID: id, UserID: userID, Kind: kind, Name: name, SecretHash: hash, CreatedAt: s.cfg.Now().UTC(), ExpiresAt: expires}
	var out Token
	action := "token.create"
	if kind == TokenSession {
		action = "auth.login"
	}
	s.neg.forget("token " + id)
	if err := s.mutate(ctx, p, action, id, "", MsgCreateToken, t, &out); err != nil {
		return "", nil, err
	}
	out.SecretHash = nil
	return formatToken(id, secret), &out, nil
}

// Authenticate resolves a bearer token to a principal. A token created a
// moment ago on another node may not have reached this one yet, so a miss is
// retried once after a linearizable read (see confirmMissing). A metrics
// token is refused: it reads /metrics (AuthorizeMetrics) and acts as nobody.
func (s *Service) Authenticate(ctx context.Context, bearer string) (*Principal, error) {
	p, err := s.authenticateAny(ctx, bearer)
	if err == nil && p.TokenKind == TokenMetrics {
		return nil, ErrUnauthenticated
	}
	return p, err
}

// authenticateAny is Authenticate for every kind of token.
func (s *Service) authenticateAny(ctx context.Context, bearer string) (*Principal, error) {
	id, secret, ok := parseToken(bearer)
	if !ok {
		return nil, ErrUnauthenticated
	}
	t := consensus.First[Token](s.read(), tTokens, "id", id)
	if t == nil {
		if _, err := s.confirmMissing(ctx, "token "+id, func() bool {
			t = consensus.First[Token](s.read(), tTokens, "id", id)
			return t != nil
		}); err != nil {
			return nil, err
		}
	}
	if t == nil || !tokenMatches(t, secret) {
		return nil, ErrUnauthenticated
	}
	if exp := expiresAt(t, s.Settings()); !exp.IsZero() && s.cfg.Now().After(exp) {
		return nil, ErrUnauthenticated
	}
	p, err := s.principalFor(t.UserID)
	if err != nil {
		return nil, err
	}
	p.TokenID, p.TokenKind = t.ID, t.Kind
	return p, nil
}

// Active reports whether a user exists and is not disabled, in this
// node's state: for sessions that outlive the check of their credential
// (a console), which end when it turns false.
func (s *Service) Active(userID string) bool {
	u := consensus.First[User](s.read(), tUsers, "id", userID)
	return u != nil && !u.Disabled
}

// principalFor builds a user's principal with their project roles.
func (s *Service) principalFor(userID string) (*Principal, error) {
	txn := s.read()
	u := consensus.First[User](txn, tUsers, "id", userID)
	if u == nil || u.Disabled {
		return nil, ErrUnauthenticated
	}
	p := &Principal{User: *u, roles: map[string]Role{}}
	it, err := txn.Get(tMembers, "user", u.ID)
	if err != nil {
		return nil, err
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		m := obj.(*Membership)
		p.roles[m.ProjectID] = m.Role
	}
	return p, nil
}

// Logout revokes the caller's own token.
func (s *Service) Logout(ctx context.Context, p *Principal) error {
	return s.mutate(ctx, p, "auth.logout", p.TokenID, "", MsgDeleteToken, deleteCmd{ID: p.TokenID}, nil)
}

// --- mutation and audit -----------------------------------------------------------

// Mutate replicates another domain's command with its audit entry, exactly as
// identity's own mutations are: the change and the entry commit together, a
// rejection is audited on its own. Storage, compute and network use it.
func (s *Service) Mutate(ctx context.Context, p *Principal, action, resource, projectID string, t consensus.MessageType, cmd, out any) error {
	return s.mutate(ctx, p, action, resource, projectID, t, cmd, out)
}

// Deny audits a request another domain refused before replication.
func (s *Service) Deny(ctx context.Context, p *Principal, action, resource, projectID string, err error) error {
	return s.deny(ctx, p, action, resource, projectID, err)
}

// gater is a cluster that refuses commands some node would not know
// (consensus.Node.Gate).
type gater interface {
	Gate(consensus.MessageType) error
}

// mutate replicates a command together with its audit entry. If the command
// is rejected, the rejection is audited on its own.
func (s *Service) mutate(ctx context.Context, p *Principal, action, resource, projectID string, t consensus.MessageType, cmd, out any) error {
	entry := s.auditEntry(ctx, p, action, resource, projectID)
	// The envelope is known to every node; the command inside it may be
	// newer than some (consensus/protocol.go).
	if g, ok := s.c.(gater); ok {
		if err := g.Gate(t); err != nil {
			s.recordFailure(ctx, entry, err)
			return err
		}
	}
	env, err := audited(entry, t, cmd)
	if err != nil {
		return err
	}
	_, err = s.c.Apply(ctx, MsgAudited, env, out)
	if err != nil && consensus.ErrorCode(err) != "" && consensus.ErrorCode(err) != consensus.CodeUnavailable {
		s.recordFailure(ctx, entry, err)
	}
	return err
}

// audited is the envelope that applies cmd with its audit entry. The bytes
// of an attached command stay beside the envelope (consensus.Attached):
// the inner command, run in the envelope's transaction, finds them there.
func audited(entry AuditEntry, t consensus.MessageType, cmd any) (any, error) {
	if a, ok := cmd.(consensus.Attached); ok {
		env, err := audited(entry, t, a.Cmd)
		if err != nil {
			return nil, err
		}
		return consensus.Attached{Cmd: env, Bytes: a.Bytes, Plain: func() (any, error) {
			c, err := a.Plain()
			if err != nil {
				return nil, err
			}
			return audited(entry, t, c)
		}}, nil
	}
	payload, err := consensus.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	return auditedCmd{Audit: entry, Type: t, Payload: payload}, nil
}

// deny audits a request refused before it reached the FSM and returns err.
func (s *Service) deny(ctx context.Context, p *Principal, action, resource, projectID string, err error) error {
	s.recordFailure(ctx, s.auditEntry(ctx, p, action, resource, projectID), err)
	return err
}

func (s *Service) recordFailure(ctx context.Context, e AuditEntry, err error) {
	e.Result = consensus.ErrorCode(err)
	if e.Result == "" {
		e.Result = "error"
	}
	e.Message = err.Error()
	var ce *consensus.Error
	if errors.As(err, &ce) && ce.Message == e.Message { // not wrapped in words of another's
		e.Key, e.Format, e.Args, e.Inner = ce.Key, ce.Format, ce.Args, ce.Inner
	}
	if _, aerr := s.c.Apply(ctx, MsgRecordAudit, e, nil); aerr != nil {
		s.log.Error("audit record lost", "action", e.Action, "err", aerr)
	}
}

func (s *Service) auditEntry(ctx context.Context, p *Principal, action, resource, projectID string) AuditEntry {
	remote, _ := ctx.Value(remoteKey).(string)
	e := AuditEntry{Time: s.cfg.Now().UTC(), Action: action, Resource: resource, ProjectID: projectID, RemoteAddr: remote, Node: s.c.Name()}
	if p != nil {
		e.UserID, e.UserName = p.User.ID, p.User.Name
	}
	return e
}

// --- validation helpers -------------------------------------------------------------

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// validateName checks a name of kind ("username", "project name"…); its
// refusal's key (name_rule) lets a page say the rule in its language.
func validateName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return consensus.Errorm(consensus.CodeInvalid, "name_rule", kind+" %q must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// forbidden refuses a request: "not allowed to " and what it asked.
func forbidden(format string, args ...any) error {
	return consensus.Errorf(consensus.CodeForbidden, "not allowed to "+format, args...)
}

// IsCode reports whether err carries the given code.
func IsCode(err error, code string) bool {
	var e *consensus.Error
	return errors.As(err, &e) && e.Code == code
}

func redactUser(u *User) *User {
	c := *u
	c.PasswordHash = ""
	return &c
}
