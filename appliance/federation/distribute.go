package federation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/cairnhq/cairn/consensus"
)

// Image pushes are sent by the hub node holding each site's session, one
// site's in order of their making, one at a time.

// note is why a push waits or failed: a code pages word in their
// language, and the text in English for the API.
type note struct{ code, text string }

// progressEvery is how often a push's progress is recorded while chunks
// flow.
const progressEvery = time.Second

// pendingPushes lists the sites with a push still to send.
func (h *Hub) pendingPushes(now time.Time) map[string]bool {
	due := map[string]bool{}
	it, err := h.c.Store().ReadTxn().Get(tDistributions, "id")
	if err != nil {
		return due
	}
	for o := it.Next(); o != nil; o = it.Next() {
		if d := o.(*Distribution); d.State == DistPending || d.State == DistImporting {
			due[d.SiteID] = true
		}
	}
	return due
}

// sendImages pushes a site its pending images while its session lasts.
func (h *Hub) sendImages(ctx context.Context, siteID string) {
	defer func() {
		h.mu.Lock()
		delete(h.sending, siteID)
		h.mu.Unlock()
	}()
	h.serveSite(ctx, siteID, func(waitUntil map[string]time.Time) (string, func() time.Duration) {
		d := h.nextPush(siteID, waitUntil)
		if d == nil {
			return "", nil
		}
		return d.ID, func() time.Duration { return h.push(ctx, d) }
	})
}

func (h *Hub) nextPush(siteID string, waitUntil map[string]time.Time) *Distribution {
	it, err := h.c.Store().ReadTxn().Get(tDistributions, "id")
	if err != nil {
		return nil
	}
	now := time.Now()
	var best *Distribution
	for o := it.Next(); o != nil; o = it.Next() {
		d := o.(*Distribution)
		if d.SiteID != siteID || (d.State != DistPending && d.State != DistImporting) || now.Before(waitUntil[d.ID]) {
			continue
		}
		if best == nil || d.CreatedAt.Before(best.CreatedAt) {
			best = d
		}
	}
	if best == nil {
		return nil
	}
	cp := *best // push moves it on as it goes; the store's row is not its
	return &cp
}

// push moves one push on as far as it goes now; it says how long to wait
// before trying it again (0: it is settled, or moved on).
func (h *Hub) push(ctx context.Context, d *Distribution) time.Duration {
	sent := int64(0)
	record := func(state string, n note, received int64, resumed bool, result string) bool {
		cmd := distributionProgressCmd{ID: d.ID, From: d.State, State: state, Received: received, Sent: sent, Resumed: resumed, Note: n.code, Message: n.text, Result: result, At: time.Now().UTC()}
		if _, err := h.c.Apply(ctx, MsgDistributionProgress, cmd, nil); err != nil {
			if consensus.ErrorCode(err) != consensus.CodeConflict {
				h.log.Warn("record an image push", "push", d.ID, "err", err)
			}
			return false
		}
		d.State, d.Received, sent = state, received, 0
		return true
	}
	if d.State == DistPending && !time.Now().Before(d.ExpiresAt) {
		record(DistFailed, note{"expired", "the site was not reached before the push expired"}, d.Received, false, "")
		return 0
	}
	txn := h.c.Store().ReadTxn()
	site := consensus.First[Site](txn, tSites, "id", d.SiteID)
	p, err := h.id.PrincipalOf(d.UserID)
	if err != nil || site == nil {
		record(DistFailed, note{"maker_gone", "the push's maker, " + d.UserName + ", is no longer a hub user that can sign in"}, d.Received, false, "")
		return 0
	}
	role := roleOn(txn, p, site)
	if role == "" || role == HubReadOnly {
		record(DistFailed, note{"no_role", d.UserName + " no longer has a role on site " + site.Name + " that changes it"}, d.Received, false, "")
		return 0
	}
	c, err := h.localClient(d.SiteID)
	if err != nil {
		return h.retry.unanswered
	}
	base := "http://site/fed/v1/images/" + d.Image
	size := "?size=" + strconv.FormatInt(d.Size, 10)
	var answered http.Header // the last answer's headers
	call := func(method, u string, body io.Reader, hdr map[string]string, out any) (int, []byte, error) {
		answered = nil
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		if strings.Contains(u, "/import?") {
			// The site answers when the import ends: ten minutes, and
			// more at 20 MB/s (as the site bounds it), and a minute.
			cancel()
			rctx, cancel = context.WithTimeout(ctx, stepTimeout+time.Duration(d.Size/(20<<20))*time.Second+time.Minute)
		}
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, method, u, body)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set(HeaderUser, p.User.Name)
		req.Header.Set(HeaderRole, string(role))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		answered = res.Header
		b, _ := io.ReadAll(io.LimitReader(res.Body, maxResultBody))
		if out != nil && res.StatusCode < 300 {
			if err := json.Unmarshal(b, out); err != nil {
				return res.StatusCode, b, err
			}
		}
		return res.StatusCode, b, nil
	}

	if d.State == DistPending {
		f, err := os.Open(filepath.Join(h.ImageDir, d.Image))
		if err != nil {
			var holders []string
			if im := consensus.First[HubImage](txn, tHubImages, "id", d.Image); im != nil {
				holders = im.Holders
			}
			if d.Note != "not_on_node" {
				record(DistPending, note{"not_on_node", fmt.Sprintf("the image is being copied from hub nodes %v to %s, which holds the site's session; the push begins once it is there", holders, h.c.Name())}, d.Received, false, "")
			}
			return h.retry.unanswered
		}
		defer f.Close()
		var st staged
		if code, b, err := call("GET", base+size, nil, nil, &st); err != nil || code != http.StatusOK {
			h.log.Warn("ask a site how much of an image it holds", "site", d.Site, "status", code, "body", string(b), "err", err)
			return h.retry.unanswered
		}
		resumed := st.Received > 0 && st.Received < d.Size
		if st.Received != d.Received || resumed {
			record(DistPending, note{}, st.Received, resumed, "")
		}
		limit := rate.Inf
		if d.RateKiB > 0 {
			limit = rate.Limit(d.RateKiB << 10)
		}
		lim := rate.NewLimiter(limit, ChunkSize)
		buf := make([]byte, ChunkSize)
		last := time.Now()
		for off := st.Received; off < d.Size; {
			n, err := f.ReadAt(buf[:min(int64(ChunkSize), d.Size-off)], off)
			if err != nil && !(err == io.EOF && int64(n) == d.Size-off) {
				record(DistFailed, note{"read_failed", "read the image on the hub: " + err.Error()}, off, false, "")
				return 0
			}
			if err := lim.WaitN(ctx, n); err != nil {
				return h.retry.unanswered
			}
			sum := sha256.Sum256(buf[:n])
			var next staged
			code, b, err := call("PUT", base+"/chunks/"+strconv.FormatInt(off/ChunkSize, 10)+size, bytes.NewReader(buf[:n]), map[string]string{HeaderChunkSHA256: hex.EncodeToString(sum[:])}, &next)
			sent += int64(n)
			switch {
			case err != nil:
				record(DistPending, note{"link_broke", "the link broke; the push goes on from what the site holds"}, off, false, "")
				return h.retry.unanswered
			case code == http.StatusConflict:
				_ = json.Unmarshal(b, &next)
				off = next.Received
				continue
			case code != http.StatusOK:
				record(DistFailed, note{"chunk_refused", fmt.Sprintf("the site refused chunk %d: %s", off/ChunkSize, strings.TrimSpace(string(b)))}, off, false, "")
				return 0
			}
			off = next.Received
			if time.Since(last) >= progressEvery && off < d.Size {
				if !record(DistPending, note{}, off, false, "") {
					return h.retry.begun // expired or moved on meanwhile: read again
				}
				last = time.Now()
			}
		}
		if !record(DistImporting, note{}, d.Size, false, "") {
			return h.retry.begun
		}
	}
	// The import is done as the pusher with the role they have now: a
	// long transfer does not carry a grant taken away meanwhile.
	txn = h.c.Store().ReadTxn()
	if site = consensus.First[Site](txn, tSites, "id", d.SiteID); site == nil || !site.Active() {
		record(DistFailed, note{"no_role", "the site is no longer enrolled"}, d.Size, false, "")
		return 0
	}
	if role = roleOn(txn, p, site); role == "" || role == HubReadOnly {
		record(DistFailed, note{"no_role", d.UserName + " no longer has a role on site " + site.Name + " that changes it"}, d.Size, false, "")
		return 0
	}
	q := url.Values{"size": {strconv.FormatInt(d.Size, 10)}, "dist": {d.ID}, "name": {d.Name}, "project": {d.Project}}
	if d.Visibility != "" {
		q.Set("visibility", d.Visibility)
	}
	code, b, err := call("POST", base+"/import?"+q.Encode(), nil, nil, nil)
	state := answered.Get(HeaderIntentState)
	switch {
	case err != nil:
		return h.retry.unanswered
	case state == intentNotRun || state == intentBegun:
		return h.retry.unanswered // not run now, or runs still: asked again
	case state == intentUnknown:
		record(DistFailed, note{"import_refused", "the import began at the site and its end was never recorded: whether the image is there, the site's image list says"}, d.Size, false, string(b))
	case code == http.StatusConflict && (strings.Contains(string(b), "not all here") || strings.Contains(string(b), "does not have its hash")):
		// The site lost what it held (its leader changed) or holds
		// something else: sent again.
		record(DistPending, note{"resent", "the site no longer holds the image whole; it is sent again"}, 0, false, "")
		return h.retry.begun
	case code >= 200 && code < 300:
		record(DistDone, note{}, d.Size, false, string(b))
	default:
		record(DistFailed, note{"import_refused", fmt.Sprintf("the site refused the import: HTTP %d", code)}, d.Size, false, string(b))
	}
	return 0
}
