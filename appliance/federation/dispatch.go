package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
)

// Intents are sent by the hub node holding each site's session (every
// hub node runs RunIntents), one site's in order of their making, one
// step at a time: a step whose answer did not arrive is sent again, and
// the site's ledger runs it once.

// Waits before a step is sent again (Hub.retry): the site did not
// answer, or could not run it now; it began it earlier and its end is not
// recorded yet.
const (
	retryUnanswered = 15 * time.Second
	retryBegun      = 5 * time.Second
)

// kick wakes the dispatcher: an intent was made, or a site connected.
func (h *Hub) kick() {
	select {
	case h.kickCh <- struct{}{}:
	default:
	}
}

// RunIntents sends pending intent steps to the sites connected to this
// hub node, until ctx ends.
func (h *Hub) RunIntents(ctx context.Context) {
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := h.c.Store().ReadTxn()
		it, err := txn.Get(tIntentSites, "state", IntentPending)
		if err != nil {
			return
		}
		ws.Add(it.WatchCh())
		if dit, err := txn.Get(tDistributions, "id"); err == nil {
			ws.Add(dit.WatchCh())
		}
		now := time.Now()
		due := map[string]bool{}
		live := map[string]bool{} // intents not expired, by ID
		for o := it.Next(); o != nil; o = it.Next() {
			s := o.(*IntentSite)
			if due[s.SiteID] {
				continue
			}
			ok, seen := live[s.IntentID]
			if !seen {
				in := consensus.First[Intent](txn, tIntents, "id", s.IntentID)
				ok = in != nil && now.Before(in.ExpiresAt)
				live[s.IntentID] = ok
			}
			if ok {
				due[s.SiteID] = true
			}
		}
		pushes := h.pendingPushes(now)
		h.mu.Lock()
		for site := range due {
			if s := h.sessions[site]; s != nil && !s.IsClosed() && !h.working[site] {
				h.working[site] = true
				go h.work(ctx, site)
			}
		}
		// Image pushes go beside intents: a long transfer holds up no
		// bulk operation.
		for site := range pushes {
			if s := h.sessions[site]; s != nil && !s.IsClosed() && !h.sending[site] {
				h.sending[site] = true
				go h.sendImages(ctx, site)
			}
		}
		h.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second) // expiries and waits
		go func() {
			select {
			case <-h.kickCh:
			case <-wctx.Done():
			}
			cancel()
		}()
		_ = h.c.Store().Watch(wctx, ws)
		cancel()
	}
}

// work sends one site its pending steps until none is due now.
func (h *Hub) work(ctx context.Context, siteID string) {
	defer func() {
		h.mu.Lock()
		delete(h.working, siteID)
		h.mu.Unlock()
		h.kick() // another round: more may have come meanwhile
	}()
	h.serveSite(ctx, siteID, func(waitUntil map[string]time.Time) (string, func() time.Duration) {
		in, step := h.nextStep(siteID, waitUntil)
		if in == nil {
			return "", nil
		}
		return in.ID, func() time.Duration { return h.sendStep(ctx, in, siteID, step) }
	})
}

// serveSite runs a site's queued jobs while its session lasts: next gives
// the one due now (its ID, and a run that says how long to wait before it
// is tried again, 0 when it is settled), or none; when none is due it
// waits for the soonest that waits, and ends when nothing does.
func (h *Hub) serveSite(ctx context.Context, siteID string, next func(waitUntil map[string]time.Time) (string, func() time.Duration)) {
	waitUntil := map[string]time.Time{} // job ID: not before
	for ctx.Err() == nil && h.Connected(siteID) {
		id, run := next(waitUntil)
		if run == nil {
			soonest := time.Time{}
			for _, t := range waitUntil {
				if soonest.IsZero() || t.Before(soonest) {
					soonest = t
				}
			}
			if soonest.IsZero() {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(soonest)):
			}
			for id, t := range waitUntil {
				if !time.Now().Before(t) {
					delete(waitUntil, id) // due again
				}
			}
			continue
		}
		if wait := run(); wait > 0 {
			waitUntil[id] = time.Now().Add(wait)
		} else {
			delete(waitUntil, id)
		}
	}
}

// nextStep is the oldest unexpired intent pending at the site, in the
// order the hub's log made them, and its next step; nil while that one
// waits (a site's intents run in order).
func (h *Hub) nextStep(siteID string, waitUntil map[string]time.Time) (*Intent, int) {
	txn := h.c.Store().ReadTxn()
	it, err := txn.Get(tIntentSites, "site", siteID)
	if err != nil {
		return nil, 0
	}
	now := time.Now()
	var best *Intent
	step := 0
	for o := it.Next(); o != nil; o = it.Next() {
		s := o.(*IntentSite)
		if s.State != IntentPending {
			continue
		}
		in := consensus.First[Intent](txn, tIntents, "id", s.IntentID)
		if in == nil || !now.Before(in.ExpiresAt) || (best != nil && in.Seq > best.Seq) {
			continue
		}
		best, step = in, s.Done
	}
	if best != nil && now.Before(waitUntil[best.ID]) {
		return nil, 0
	}
	return best, step
}

// sendStep sends one step, records what came of it, and says how long to
// wait before sending it again (0: it is settled).
func (h *Hub) sendStep(ctx context.Context, in *Intent, siteID string, step int) (wait time.Duration) {
	recorded := true
	defer func() {
		if !recorded && wait == 0 {
			wait = h.retry.begun // not recorded: not sent again at once
		}
	}()
	record := func(res *StepResult, state, msg string) {
		cmd := intentStepCmd{IntentID: in.ID, SiteID: siteID, Step: step, Result: res, State: state, Message: msg, At: time.Now().UTC()}
		if res == nil && state == IntentPending {
			if s := intentSite(h.c.Store().ReadTxn(), in.ID, siteID); s != nil && s.Message == msg {
				return // said already
			}
		}
		if _, err := h.c.Apply(ctx, MsgIntentStep, cmd, nil); err != nil && consensus.ErrorCode(err) != consensus.CodeConflict {
			h.log.Warn("record an intent step", "intent", in.ID, "site", siteID, "err", err)
			recorded = false
		}
	}
	txn := h.c.Store().ReadTxn()
	site := consensus.First[Site](txn, tSites, "id", siteID)
	p, err := h.id.PrincipalOf(in.UserID)
	if err != nil || site == nil {
		record(nil, IntentFailed, "the intent's maker, "+in.UserName+", is no longer a hub user that can sign in")
		return 0
	}
	role := roleOn(txn, p, site)
	if role == "" || role == HubReadOnly {
		record(nil, IntentFailed, in.UserName+" no longer has a role on site "+site.Name+" that changes it")
		return 0
	}
	c, err := h.localClient(siteID)
	if err != nil {
		return h.retry.unanswered
	}
	st := in.Steps[step]
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, st.Method, "http://site/fed/v1"+st.Path, bytes.NewReader(st.Body))
	if err != nil {
		record(nil, IntentFailed, fmt.Sprintf("step %d: %v", step+1, err))
		return 0
	}
	if len(st.Body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(HeaderUser, p.User.Name)
	req.Header.Set(HeaderRole, string(role))
	req.Header.Set(HeaderIntent, in.ID+"/"+strconv.Itoa(step))
	req.Header.Set(HeaderIntentDeadline, in.ExpiresAt.UTC().Format(time.RFC3339))
	res, err := c.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			record(nil, IntentPending, "the site did not answer; the step is sent again, and runs there once")
		}
		return h.retry.unanswered
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, maxResultBody))
	switch res.Header.Get(HeaderIntentState) {
	case intentBegun:
		record(nil, IntentPending, "the site began this step earlier and has not recorded its end yet; asked again")
		return h.retry.begun
	case intentNotRun:
		record(nil, IntentPending, "the site could not run the step now ("+errorText(body)+"); asked again")
		return h.retry.unanswered
	case intentUnknown:
		record(nil, IntentFailed, fmt.Sprintf("step %d (%s %s): %s", step+1, st.Method, st.Path, errorText(body)))
		return 0
	}
	switch {
	case res.StatusCode >= 500 || res.StatusCode == http.StatusTooManyRequests:
		record(&StepResult{Status: res.StatusCode, Body: string(body)}, IntentFailed,
			fmt.Sprintf("step %d (%s %s): the site answered %s; whether it took effect, the site's audit log says", step+1, st.Method, st.Path, res.Status))
	case !httpOK(res.StatusCode):
		record(&StepResult{Status: res.StatusCode, Body: string(body)}, IntentFailed, fmt.Sprintf("step %d (%s %s): the site answered %s", step+1, st.Method, st.Path, res.Status))
	default:
		// What a success said, in short: the full answer is the site's.
		record(&StepResult{Status: res.StatusCode, Body: string(body[:min(len(body), maxSuccessBody)])}, IntentPending, "")
	}
	return 0
}

// maxSuccessBody bounds what the hub keeps of a step's successful answer
// (a failure keeps maxResultBody).
const maxSuccessBody = 256

// errorText is the message of an error body, or the body.
func errorText(b []byte) string {
	var e errorBody
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		return e.Message
	}
	return strings.TrimSpace(string(b))
}
