package identity

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// Login throttling, the bound on concurrent argon2 work and the negative
// cache of unknown credentials all live in memory on each node: they protect
// this node's CPU, memory and its leader round trips, and need no agreement.

// CodeTooManyAttempts means logins from this address or for this user are
// refused for a while after repeated failures.
const CodeTooManyAttempts = "too_many_attempts"

// ThrottledError refuses a login during a backoff; it carries the time left.
type ThrottledError struct{ RetryAfter time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed logins; try again in %d seconds", retrySeconds(e.RetryAfter))
}

// Unwrap gives the error its code, so the API and the UI treat it like the
// service's other errors.
func (e *ThrottledError) Unwrap() error {
	return consensus.NewError(CodeTooManyAttempts, "too many failed logins; try again in %d seconds", retrySeconds(e.RetryAfter))
}

// RetrySeconds is the whole number of seconds to wait, at least 1: the value
// of a Retry-After header.
func (e *ThrottledError) RetrySeconds() int { return retrySeconds(e.RetryAfter) }

func retrySeconds(d time.Duration) int { return max(1, int(math.Ceil(d.Seconds()))) }

// ErrBusy refuses a password check when this node already runs as many as it
// has CPUs and none finished within Config.HashWait: each costs 19 MiB and
// tens of milliseconds of a core.
var ErrBusy = consensus.NewError(consensus.CodeUnavailable, "too many password checks at once; try again in a moment")

// withHashSlot runs f, one of at most Config.HashConcurrency password hashes
// at once on this node; it waits at most Config.HashWait (or until ctx ends)
// for a slot and returns ErrBusy without running f if none frees.
func (s *Service) withHashSlot(ctx context.Context, f func()) error {
	t := time.NewTimer(s.cfg.HashWait)
	defer t.Stop()
	select {
	case s.hashSlots <- struct{}{}:
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ErrBusy
	}
	defer func() { <-s.hashSlots }()
	f()
	return nil
}

// loginLimiter counts failed logins per key (a source address, a user name)
// and refuses further attempts for a time that doubles with each failure
// past the first few. The table is bounded: idle entries are forgotten, and
// when it is full the least recently failed entry makes room.
type loginLimiter struct {
	mu      sync.Mutex
	free    int           // failures without any delay (typos)
	base    time.Duration // the first delay
	max     time.Duration // the longest delay
	size    int
	entries map[string]*loginFailures
	// known are the (source, user) pairs that logged in before: from there
	// the user's guesses count on the pair instead of the user name, so a
	// stranger failing as a user elsewhere does not lock the user out of
	// the places they work from, and guesses from here still back off.
	known map[string]bool
}

type loginFailures struct {
	n     int
	until time.Time // attempts before this are refused
	last  time.Time // of the last failure
}

func newLoginLimiter(cfg Config) *loginLimiter {
	return &loginLimiter{free: cfg.LoginFreeFailures, base: cfg.LoginBackoffBase, max: cfg.LoginBackoffMax,
		size: max(cfg.LoginTableSize, 2), entries: map[string]*loginFailures{}, known: map[string]bool{}}
}

// loginKeys are the limiter's keys of an attempt, the source's first and
// the user name's second. IPv6 addresses count per /64, which is what one
// subscriber usually gets.
func loginKeys(remote, username string) []string {
	return []string{"addr " + sourceOf(remote), "user " + strings.ToLower(clip(username))}
}

// clip bounds a user name typed at the login form before it is kept in
// memory or in the audit log; valid names are at most 63 bytes.
func clip(name string) string {
	if len(name) > 64 {
		return name[:64]
	}
	return name
}

// sourceOf reduces a "host:port" remote address to the source the limiter
// and the audit log count by.
func sourceOf(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// begin admits an attempt or returns how long it must wait. An admitted
// attempt is counted as failed before its password is checked, so a burst of
// concurrent guesses cannot all pass while the first ones are still hashing;
// a success forgets the count (succeed).
func (l *loginLimiter) begin(now time.Time, keys []string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys = l.counted(keys)
	if w := l.waitLocked(now, keys); w > 0 {
		return w
	}
	l.failLocked(now, keys)
	return 0
}

// abandon takes back the count of an attempt begin admitted whose password
// was never checked (no hash slot came free).
func (l *loginLimiter) abandon(keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.counted(keys) {
		e := l.entries[k]
		if e == nil {
			continue
		}
		if e.n--; e.n <= 0 {
			delete(l.entries, k)
		} else if e.n <= l.free {
			e.until = time.Time{}
		}
	}
}

// counted are the keys an attempt counts on: the source's, and the user
// name's, or for a (source, user) pair that logged in before the pair's.
func (l *loginLimiter) counted(keys []string) []string {
	if len(keys) == 2 && l.known[pairKey(keys)] {
		return []string{keys[0], pairKey(keys)}
	}
	return keys
}

func pairKey(keys []string) string { return keys[0] + " " + keys[1] }

// wait returns how long attempts with these keys are still refused.
func (l *loginLimiter) wait(now time.Time, keys []string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waitLocked(now, l.counted(keys))
}

func (l *loginLimiter) waitLocked(now time.Time, keys []string) time.Duration {
	var w time.Duration
	for _, k := range keys {
		if e := l.entries[k]; e != nil && now.Before(e.until) {
			w = max(w, e.until.Sub(now))
		}
	}
	return w
}

// fail records a failed attempt for each key.
func (l *loginLimiter) fail(now time.Time, keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failLocked(now, keys)
}

func (l *loginLimiter) failLocked(now time.Time, keys []string) {
	for _, k := range keys {
		e := l.entries[k]
		if e == nil {
			l.makeRoom(now)
			e = &loginFailures{}
			l.entries[k] = e
		}
		e.n++
		e.last = now
		if e.n > l.free {
			e.until = now.Add(l.delay(e.n - l.free))
		}
	}
}

// succeed forgets the failures of these keys and remembers the (source,
// user) pair as known.
func (l *loginLimiter) succeed(keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		delete(l.entries, k)
	}
	if len(keys) == 2 {
		delete(l.entries, pairKey(keys))
		if len(l.known) >= l.size {
			clear(l.known) // bounded; forgetting only brings back the default
		}
		l.known[pairKey(keys)] = true
	}
}

func (l *loginLimiter) delay(n int) time.Duration {
	d := l.base
	for i := 1; i < n && d < l.max; i++ {
		d *= 2
	}
	return min(d, l.max)
}

// makeRoom keeps the table under its size: entries whose backoff ended and
// that have not failed for the longest delay are forgotten; if that frees
// nothing, the least recently failed entry goes, one not in backoff first,
// so a spray of new keys does not easily lift a running backoff.
func (l *loginLimiter) makeRoom(now time.Time) {
	if len(l.entries) < l.size {
		return
	}
	var victim string
	var victimBlocked bool
	var victimLast time.Time
	for k, e := range l.entries {
		blocked := now.Before(e.until)
		if !blocked && now.Sub(e.last) > l.max {
			delete(l.entries, k)
			continue
		}
		if victim == "" || (victimBlocked && !blocked) || (victimBlocked == blocked && e.last.Before(victimLast)) {
			victim, victimBlocked, victimLast = k, blocked, e.last
		}
	}
	if len(l.entries) >= l.size {
		delete(l.entries, victim)
	}
}

// negCache remembers, for a few seconds, credential IDs (token IDs, S3 access
// keys) that even a linearizable read did not find, so a client repeating
// an unknown one costs no leader round trip each time. It is bounded: when
// full it drops what expired, and if nothing did, everything.
type negCache struct {
	mu   sync.Mutex
	ttl  time.Duration
	size int
	m    map[string]time.Time // ID -> forgotten after
}

func newNegCache(ttl time.Duration, size int) *negCache {
	return &negCache{ttl: ttl, size: max(size, 1), m: map[string]time.Time{}}
}

func (c *negCache) has(now time.Time, id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[id]
	if ok && now.After(exp) {
		delete(c.m, id)
		return false
	}
	return ok
}

func (c *negCache) add(now time.Time, id string) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.size {
		for k, exp := range c.m {
			if now.After(exp) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.size {
			clear(c.m)
		}
	}
	c.m[id] = now.Add(c.ttl)
}

// forget drops an ID that now exists (a credential created on this node).
func (c *negCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// confirmMissing reports whether a credential ID this node's state lacks is
// really unknown. A credential created a moment ago through another node may
// not have reached this one yet, so a miss is looked up again after a
// linearizable read, unless the ID is in the negative cache. At most
// Config.MissReads such reads run at once: a flood of made-up IDs (each new,
// so the cache does not help) cannot queue up round trips to the leader; the
// excess is answered from this node's state.
func (s *Service) confirmMissing(ctx context.Context, id string, found func() bool) (bool, error) {
	if s.neg.has(s.cfg.Now(), id) {
		return true, nil
	}
	select {
	case s.missReads <- struct{}{}:
		defer func() { <-s.missReads }()
	default:
		return true, nil
	}
	if err := s.c.ConsistentRead(ctx); err != nil {
		return false, err
	}
	if found() {
		return false, nil
	}
	s.neg.add(s.cfg.Now(), id)
	return true, nil
}

// checkCurrentPassword verifies the password a user typed to change it. A
// stolen session must not become a way to guess it, so wrong guesses count
// against the user and address like failed logins do.
func (s *Service) checkCurrentPassword(ctx context.Context, userID string, pw *string) error {
	if pw == nil || *pw == "" {
		return ErrCurrentPasswordNeeded
	}
	u := consensus.First[User](s.read(), tUsers, "id", userID)
	if u == nil {
		return notFound("user", userID)
	}
	remote := remoteAddr(ctx)
	keys := loginKeys(remote, u.Name)
	if wait := s.logins.begin(s.cfg.Now(), keys); wait > 0 {
		return &ThrottledError{RetryAfter: wait}
	}
	ok := false
	if err := s.withHashSlot(ctx, func() { ok = CheckPassword(u.PasswordHash, *pw) }); err != nil {
		s.logins.abandon(keys)
		return err
	}
	if !ok {
		return ErrCurrentPasswordWrong
	}
	s.logins.succeed(keys)
	return nil
}
