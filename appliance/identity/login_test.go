package identity_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
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

// clock is a wall clock a test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Failed logins back off per source address and per user name, doubling;
// the refusal says how long to wait and checks no password; a successful
// login after the wait clears the backoff.
func TestLoginBackoff(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	clk := &clock{now: time.Now()}
	cfg := identity.DefaultConfig()
	cfg.Now = clk.Now
	cfg.LoginFreeFailures = 2
	cfg.LoginBackoffBase = time.Second
	cfg.LoginBackoffMax = 4 * time.Second
	svc := identity.NewService(c.Nodes[0], cfg)
	admin := setupAdmin(t, svc)
	bg := context.Background()
	if _, err := svc.CreateUser(bg, admin, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	from := func(addr string) context.Context { return identity.WithRemoteAddr(bg, addr) }
	here := from("192.0.2.7:5555")
	login := func(ctx context.Context, user, pw string) error {
		_, _, err := svc.Login(ctx, user, pw)
		return err
	}
	throttled := func(err error, want time.Duration) {
		t.Helper()
		var te *identity.ThrottledError
		if !errors.As(err, &te) || te.RetryAfter != want || consensus.ErrorCode(err) != identity.CodeTooManyAttempts {
			t.Fatalf("got %v, want a refusal for %s", err, want)
		}
	}
	for range 3 {
		if err := login(here, "nurse", "wrong-password"); !identity.IsCode(err, identity.CodeUnauthenticated) {
			t.Fatalf("wrong password: %v", err)
		}
	}
	// Even the right password is refused during the backoff: from this
	// address for any user, and for this user from any address.
	throttled(login(here, "nurse", "night-shift-9471"), time.Second)
	throttled(login(here, "admin", "correct horse battery"), time.Second)
	throttled(login(from("203.0.113.9:1"), "NURSE", "night-shift-9471"), time.Second)
	if err := login(from("203.0.113.9:1"), "admin", "correct horse battery"); err != nil {
		t.Fatalf("another user from another address: %v", err)
	}
	clk.Add(time.Second)
	if err := login(here, "nurse", "wrong-password"); !identity.IsCode(err, identity.CodeUnauthenticated) {
		t.Fatalf("after the backoff: %v", err)
	}
	throttled(login(here, "nurse", "night-shift-9471"), 2*time.Second)
	clk.Add(2 * time.Second)
	_ = login(here, "nurse", "wrong-password")
	throttled(login(here, "nurse", "night-shift-9471"), 4*time.Second)
	clk.Add(4 * time.Second)
	_ = login(here, "nurse", "wrong-password")
	throttled(login(here, "nurse", "night-shift-9471"), 4*time.Second) // the cap
	clk.Add(4 * time.Second)
	if err := login(here, "nurse", "night-shift-9471"); err != nil {
		t.Fatalf("the right password after the backoff: %v", err)
	}
	// The success cleared it: the free failures are free again.
	for range 2 {
		if err := login(here, "nurse", "wrong-password"); !identity.IsCode(err, identity.CodeUnauthenticated) {
			t.Fatalf("after a success: %v", err)
		}
	}
	if err := login(here, "nurse", "night-shift-9471"); err != nil {
		t.Fatalf("after two new failures: %v", err)
	}
}

// At most HashConcurrency argon2 hashes run at once; a login that finds no
// free slot within HashWait is refused as busy, not queued without end.
func TestPasswordChecksAreBounded(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	cfg := identity.DefaultConfig()
	cfg.HashConcurrency = 1
	cfg.HashWait = time.Millisecond
	cfg.LoginFreeFailures = 100 // eight logins as one user at once: this test is about the hash slots
	svc := identity.NewService(c.Nodes[0], cfg)
	setupAdmin(t, svc)
	var ok, busy atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := identity.WithRemoteAddr(context.Background(), fmt.Sprintf("192.0.2.%d:1", i+1))
			_, _, err := svc.Login(ctx, "admin", "correct horse battery")
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, identity.ErrBusy) && consensus.ErrorCode(err) == consensus.CodeUnavailable:
				busy.Add(1)
			default:
				t.Errorf("login: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() == 0 || busy.Load() == 0 {
		t.Fatalf("%d logins succeeded and %d were refused as busy; want some of each", ok.Load(), busy.Load())
	}
}

// countingNode counts the linearizable reads the service asks for: each is
// a round trip to the leader.
type countingNode struct {
	*consensus.Node
	reads atomic.Int64
}

func (n *countingNode) ConsistentRead(ctx context.Context) error {
	n.reads.Add(1)
	return n.Node.ConsistentRead(ctx)
}

// An unknown token or S3 access key costs one leader round trip, not one per
// request; one created afterwards (through another node) works as soon as
// it reaches this node, whatever the cache says.
func TestUnknownCredentialsAreCached(t *testing.T) {
	c := consensustest.Start(t, 3, register)
	clk := &clock{now: time.Now()}
	cfg := identity.DefaultConfig()
	cfg.Now = clk.Now
	cfg.NegativeCacheTTL = time.Minute
	other := identity.NewService(c.Leader(), cfg)
	admin := setupAdmin(t, other)
	counted := &countingNode{Node: c.Follower()}
	svc := identity.NewService(counted, cfg)
	ctx := context.Background()
	const id, secret = "0123456789abcdef", "made-up-secret"
	bearer := "cairn_" + id + "_" + secret
	for range 5 {
		if _, err := svc.Authenticate(ctx, bearer); !identity.IsCode(err, identity.CodeUnauthenticated) {
			t.Fatalf("unknown token: %v", err)
		}
		if _, _, err := svc.ResolveS3(ctx, "CRNUNKNOWNKEY"); !identity.IsCode(err, identity.CodeUnauthenticated) {
			t.Fatalf("unknown access key: %v", err)
		}
	}
	if n := counted.reads.Load(); n != 2 {
		t.Fatalf("10 lookups of 2 unknown credentials cost %d leader round trips, want 2", n)
	}
	clk.Add(2 * time.Minute)
	if _, err := svc.Authenticate(ctx, bearer); !identity.IsCode(err, identity.CodeUnauthenticated) || counted.reads.Load() != 3 {
		t.Fatalf("after the TTL: %v, %d round trips, want a third", err, counted.reads.Load())
	}
	// Both now come into being through the leader, with the very IDs the
	// follower has cached as unknown.
	sum := sha256.Sum256([]byte(secret))
	if _, err := c.Leader().Apply(ctx, identity.MsgCreateToken, identity.Token{ID: id, UserID: admin.User.ID, Kind: identity.TokenAPI,
		SecretHash: sum[:], CreatedAt: clk.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	pr, err := other.CreateProject(ctx, admin, identity.ProjectSpec{Name: "ward"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leader().Apply(ctx, identity.MsgCreateS3Credential, identity.S3Credential{ID: "CRNUNKNOWNKEY", Secret: "s", UserID: admin.User.ID,
		ProjectID: pr.ID, CreatedAt: clk.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the new token and key to work on the follower", func() error {
		if _, err := svc.Authenticate(ctx, bearer); err != nil {
			return err
		}
		_, _, err := svc.ResolveS3(ctx, "CRNUNKNOWNKEY")
		return err
	})
}

// Every failed login is audited with its source address and user name, but
// a flood of them becomes a few entries with counts, not one Raft command
// per attempt.
func TestFailedLoginsAreAuditedInBatches(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	cfg := identity.DefaultConfig()
	cfg.FailedLoginWindow = time.Second
	svc := identity.NewService(c.Nodes[0], cfg)
	admin := setupAdmin(t, svc)
	ctx := identity.WithRemoteAddr(context.Background(), "198.51.100.4:40000")
	const attempts = 40
	for range attempts {
		if _, _, err := svc.Login(ctx, "admin", "guessing-again"); err == nil {
			t.Fatal("a wrong password logged in")
		}
	}
	var es []identity.AuditEntry
	testutil.WaitFor(t, 10*time.Second, "the failed logins in the audit log", func() error {
		var err error
		es, err = svc.ListAudit(admin, identity.AuditFilter{Action: "auth.login", User: "admin", Limit: 1000})
		if err != nil {
			return err
		}
		n := 0
		for _, e := range es {
			if e.Result != "success" {
				n += e.Count
			}
		}
		if n != attempts {
			return fmt.Errorf("%d attempts audited, want %d", n, attempts)
		}
		return nil
	})
	failed := 0
	for _, e := range es {
		if e.Result == "success" {
			continue
		}
		failed++
		if e.RemoteAddr != "198.51.100.4" || e.UserName != "admin" || e.Node != "node1" {
			t.Errorf("entry lacks who or where: %+v", e)
		}
		if e.Result != identity.CodeUnauthenticated && e.Result != identity.CodeTooManyAttempts {
			t.Errorf("entry result %q", e.Result)
		}
		// Its detail has a key, with the count and the times when batched,
		// for pages in another language.
		if !strings.HasPrefix(e.Key, "login_") || e.Count > 1 && (len(e.Args) != 3 || e.Args[0] != strconv.Itoa(e.Count)) {
			t.Errorf("entry detail %q with key %q %v", e.Message, e.Key, e.Args)
		}
	}
	if failed > attempts/4 {
		t.Fatalf("%d audit entries for %d failed logins: not batched", failed, attempts)
	}
}

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// Guesses sent all at once are counted before their passwords are hashed:
// a burst cannot slip more than the free failures past the backoff while
// the first guesses are still being checked.
func TestConcurrentGuessesAreCounted(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	cfg := identity.DefaultConfig()
	cfg.LoginFreeFailures = 2
	cfg.HashWait = time.Minute // none is refused as busy: every guess is either checked or throttled
	svc := identity.NewService(c.Nodes[0], cfg)
	admin := setupAdmin(t, svc)
	bg := context.Background()
	if _, err := svc.CreateUser(bg, admin, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	var checked, throttled atomic.Int64
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := svc.Login(identity.WithRemoteAddr(bg, "192.0.2.7:5555"), "nurse", fmt.Sprintf("guess-number-%d", i))
			var te *identity.ThrottledError
			switch {
			case identity.IsCode(err, identity.CodeUnauthenticated) && !errors.As(err, &te):
				checked.Add(1)
			case errors.As(err, &te):
				throttled.Add(1)
			default:
				t.Errorf("a guess: %v", err)
			}
		}()
	}
	wg.Wait()
	if checked.Load() > 3 || checked.Load()+throttled.Load() != 20 {
		t.Fatalf("%d of 20 simultaneous guesses had their password checked (want at most 3: two free failures and the one that starts the backoff), %d throttled",
			checked.Load(), throttled.Load())
	}
}

// A stranger failing as a user backs off that user name, but not from a
// source the user has logged in from before.
func TestKnownSourceIsNotLockedOut(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	clk := &clock{now: time.Now()}
	cfg := identity.DefaultConfig()
	cfg.Now = clk.Now
	svc := identity.NewService(c.Nodes[0], cfg)
	admin := setupAdmin(t, svc)
	bg := context.Background()
	if _, err := svc.CreateUser(bg, admin, identity.UserSpec{Name: "nurse", Password: "night-shift-9471"}); err != nil {
		t.Fatal(err)
	}
	ward := identity.WithRemoteAddr(bg, "192.0.2.7:5555")
	if _, _, err := svc.Login(ward, "nurse", "night-shift-9471"); err != nil {
		t.Fatal(err)
	}
	stranger := identity.WithRemoteAddr(bg, "203.0.113.9:1")
	for range 6 {
		_, _, _ = svc.Login(stranger, "nurse", "not-her-password")
	}
	var te *identity.ThrottledError
	if _, _, err := svc.Login(identity.WithRemoteAddr(bg, "198.51.100.3:1"), "nurse", "night-shift-9471"); !errors.As(err, &te) {
		t.Fatalf("from a new address during the user's backoff: %v, want throttled", err)
	}
	if _, _, err := svc.Login(ward, "nurse", "night-shift-9471"); err != nil {
		t.Fatalf("from the ward's terminal she logged in from before: %v", err)
	}

	// Guesses from that terminal still back off, even when someone there
	// (a colleague, or the guesser with an account of their own) logs in
	// successfully in between: a success clears the source, not the pair.
	if _, err := svc.CreateUser(bg, admin, identity.UserSpec{Name: "porter", Password: "day-shift-20455"}); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for range 30 {
		_, _, err := svc.Login(ward, "nurse", "not-her-password")
		if !errors.As(err, &te) {
			checked++
		}
		if _, _, err := svc.Login(ward, "porter", "day-shift-20455"); err != nil && !errors.As(err, &te) {
			t.Fatal(err)
		}
	}
	if checked > cfg.LoginFreeFailures+1 {
		t.Fatalf("%d of 30 guesses from a known terminal had the password checked; a colleague's logins must not reset her count", checked)
	}
}
