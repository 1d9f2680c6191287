package identity

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// MsgRecordAuditBatch records several audit entries in one command: the
// batched failed logins of one window.
const MsgRecordAuditBatch consensus.MessageType = 53

type auditBatchCmd struct {
	Entries []AuditEntry `json:"entries"`
}

func applyRecordAuditBatch(tx *consensus.Tx, c *auditBatchCmd) (any, error) {
	for i, e := range c.Entries {
		// One Raft index, several entries: a suffix keeps IDs unique and
		// still sorting by commit ("…0041" < "…0041.0001" < "…0042").
		e.ID = fmt.Sprintf("%020d.%04d", tx.Index, i)
		if err := tx.Insert(tAudit, &e); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// maxFailedKeys bounds one window's distinct (source, user, result) entries;
// the rest are counted together in one entry, so a spray of made-up user
// names from many addresses still costs one bounded command per window.
const maxFailedKeys = 100

// failedLogins collects this node's failed logins until the window ends.
type failedLogins struct {
	mu        sync.Mutex
	pending   map[failedKey]*failedCount
	scheduled bool
}

type failedKey struct{ source, user, result string }

type failedCount struct {
	n           int
	first, last time.Time
}

// loginFailed counts a refused login for the audit log. The first failure of
// a quiet period starts a window; when it ends, every (source, user, result)
// seen in it becomes one entry with its count, all in one command. So a
// flood of attempts costs the cluster one small command per window.
func (s *Service) loginFailed(remote, username, result string) {
	now := s.cfg.Now().UTC()
	k := failedKey{source: sourceOf(remote), user: clip(username), result: result}
	f := s.failed
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pending[k]; !ok && len(f.pending) >= maxFailedKeys {
		k = failedKey{source: "*", user: "*", result: result}
	}
	c := f.pending[k]
	if c == nil {
		c = &failedCount{first: now}
		f.pending[k] = c
	}
	c.n++
	c.last = now
	if !f.scheduled {
		f.scheduled = true
		time.AfterFunc(s.cfg.FailedLoginWindow, s.flushFailedLogins)
	}
}

// flushFailedLogins records the window's failed logins.
func (s *Service) flushFailedLogins() {
	f := s.failed
	f.mu.Lock()
	pending := f.pending
	f.pending = map[failedKey]*failedCount{}
	f.scheduled = false
	f.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	cmd := auditBatchCmd{}
	for k, c := range pending {
		msg, key := "wrong user name or password", "login_wrong"
		if k.result == CodeTooManyAttempts {
			msg, key = "refused during the backoff after failed logins", "login_backoff"
		}
		var args []string
		if c.n > 1 {
			first, last := c.first.Format(time.RFC3339), c.last.Format(time.RFC3339)
			msg = fmt.Sprintf("%s: %d attempts between %s and %s", msg, c.n, first, last)
			key, args = key+"_n", []string{strconv.Itoa(c.n), first, last}
		}
		cmd.Entries = append(cmd.Entries, AuditEntry{Time: c.last, UserName: k.user, Action: "auth.login", Resource: k.user,
			Result: k.result, Message: msg, Key: key, Args: args, RemoteAddr: k.source, Node: s.c.Name(), Count: c.n})
	}
	sort.Slice(cmd.Entries, func(i, j int) bool { return cmd.Entries[i].Time.Before(cmd.Entries[j].Time) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.c.Apply(ctx, MsgRecordAuditBatch, cmd, nil); err != nil {
		s.log.Error("audit records of failed logins lost", "entries", len(cmd.Entries), "err", err)
	}
}
