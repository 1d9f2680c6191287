package federation

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/consensus"
)

// Intents are sent by the hub node holding each site's session (every
// hub node runs RunIntents), one site's in order of their making, one
// step at a time: a step whose answer did not arrive is sent again, and
// the site's ledger runs it once.

// Waits before a step is sent again.
const (
	retryUnanswered = 15 * time.Second // the site did not answer
	retryBegun      = 5 * time.Second  // the site began it earlier; its end is not recorded yet
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
		it, err := txn.Get(tIntents, "id")
		if err != nil {
			return
		}
		ws.Add(it.WatchCh())
		now := time.Now()
		due := map[string]bool{}
		for o := it.Next(); o != nil; o = it.Next() {
			in := o.(*Intent)
			if !now.Before(in.ExpiresAt) {
				continue
			}
			for _, s := range in.Sites {
				if s.State == IntentPending {
					due[s.SiteID] = true
				}
			}
		}
		h.mu.Lock()
		for site := range due {
			if s := h.sessions[site]; s != nil && !s.IsClosed() && !h.working[site] {
				h.working[site] = true
				go h.work(ctx, site)
			}
		}
		h.mu.Unlock()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
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
	waitUntil := map[string]time.Time{} // intent ID: not before
	for ctx.Err() == nil && h.Connected(siteID) {
		in, step := h.nextStep(siteID, waitUntil)
		if in == nil {
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
			continue
		}
		if wait := h.sendStep(ctx, in, siteID, step); wait > 0 {
			waitUntil[in.ID] = time.Now().Add(wait)
		} else {
			delete(waitUntil, in.ID)
		}
	}
}

// nextStep is the oldest unexpired intent pending at the site, not
// waiting, and its next step.
func (h *Hub) nextStep(siteID string, waitUntil map[string]time.Time) (*Intent, int) {
	it, err := h.c.Store().ReadTxn().Get(tIntents, "id")
	if err != nil {
		return nil, 0
	}
	now := time.Now()
	var best *Intent
	step := 0
	for o := it.Next(); o != nil; o = it.Next() {
		in := o.(*Intent)
		if !now.Before(in.ExpiresAt) || now.Before(waitUntil[in.ID]) || (best != nil && !in.CreatedAt.Before(best.CreatedAt)) {
			continue
		}
		for _, s := range in.Sites {
			if s.SiteID == siteID && s.State == IntentPending {
				best, step = in, s.Done
			}
		}
	}
	return best, step
}

// sendStep sends one step, records what came of it, and says how long to
// wait before sending it again (0: it is settled).
func (h *Hub) sendStep(ctx context.Context, in *Intent, siteID string, step int) time.Duration {
	record := func(res *StepResult, state, msg string) {
		cmd := intentStepCmd{IntentID: in.ID, SiteID: siteID, Step: step, Result: res, State: state, Message: msg, At: time.Now().UTC()}
		if res == nil && state == IntentPending {
			for _, s := range in.Sites {
				if s.SiteID == siteID && s.Message == msg {
					return // said already
				}
			}
		}
		if _, err := h.c.Apply(ctx, MsgIntentStep, cmd, nil); err != nil && consensus.ErrorCode(err) != consensus.CodeConflict {
			h.log.Warn("record an intent step", "intent", in.ID, "site", siteID, "err", err)
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
	c, err := h.SiteClient(siteID)
	if err != nil {
		return retryUnanswered
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
	res, err := c.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			record(nil, IntentPending, "the site did not answer; the step is sent again, and runs there once")
		}
		return retryUnanswered
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, maxResultBody))
	if res.StatusCode == http.StatusConflict && res.Header.Get(HeaderIntentState) == intentBegun {
		record(nil, IntentPending, "the site began this step earlier and has not recorded its end yet; asked again")
		return retryBegun
	}
	result := &StepResult{Status: res.StatusCode, Body: string(body)}
	if !httpOK(res.StatusCode) {
		record(result, IntentFailed, fmt.Sprintf("step %d (%s %s): the site answered %s", step+1, st.Method, st.Path, res.Status))
		return 0
	}
	record(result, IntentPending, "")
	return 0
}
