package federation

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// Several hub nodes: a site's session is held by one of them (recorded in
// SiteInventory.HubNode), and a call or an ask that reaches another hub
// node is relayed to that one over the hub's cluster port (mutual TLS of
// the hub's cluster CA, consensus.Node.HandleRPC), which passes it down
// the session as if it had taken it. The headers that say whose call it
// is travel as the first node set them: only the hub's own nodes reach
// the cluster port.

// RPCPrefix is where the hub's nodes relay calls to each other.
const RPCPrefix = "/federation/v1/"

const relayPath = RPCPrefix + "relay/"

// peers is a hub node that reaches the others: consensus.Node.
type peers interface {
	RPCClient() *http.Client
	PeerAddr(name string) (string, bool)
}

// RPCHandler serves relayed calls to the sites whose sessions this node
// holds; mount it with consensus.Node.HandleRPC(RPCPrefix, h).
func (h *Hub) RPCHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+imagePath+"{sha}", h.serveImage)
	mux.HandleFunc(relayPath+"{site}/{path...}", func(w http.ResponseWriter, r *http.Request) {
		relayErr := func(err error) {
			w.Header().Set(headerRelayError, "1")
			writeError(w, err)
		}
		c, err := h.localClient(r.PathValue("site"))
		if err != nil {
			relayErr(err)
			return
		}
		u := &url.URL{Scheme: "http", Host: "site", Path: "/" + r.PathValue("path"), RawQuery: r.URL.RawQuery}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
		if err != nil {
			relayErr(consensus.Errorf(consensus.CodeInvalid, "the call: %v", err))
			return
		}
		req.Header = r.Header.Clone()
		dropHopHeaders(req.Header)
		req.ContentLength = r.ContentLength
		res, err := c.Do(req)
		if err != nil {
			relayErr(consensus.Errorf(consensus.CodeUnavailable, "site %s did not answer: %v", r.PathValue("site"), err))
			return
		}
		defer res.Body.Close()
		dropHopHeaders(res.Header)
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(res.StatusCode)
		_, _ = io.Copy(w, res.Body)
	})
	return mux
}

// relayClient is a client whose requests go to the site through the hub
// node that holds its session, or nil when no other node is known to.
func (h *Hub) relayClient(siteID string) *http.Client {
	p, ok := h.c.(peers)
	if !ok {
		return nil
	}
	inv := consensus.First[SiteInventory](h.c.Store().ReadTxn(), tInventory, "id", siteID)
	if inv == nil || !inv.Reachable(time.Now()) || inv.HubNode == "" || inv.HubNode == h.c.Name() {
		return nil
	}
	addr, ok := p.PeerAddr(inv.HubNode)
	rpc := p.RPCClient()
	if !ok || rpc == nil {
		return nil
	}
	next := rpc.Transport
	if t, ok := next.(*http.Transport); ok {
		// Bounded as a call down this node's own session is.
		t = t.Clone()
		t.ResponseHeaderTimeout = stepTimeout
		next = t
	}
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: relayTransport{next: next, base: "https://" + addr + relayPath + url.PathEscape(siteID)}}
}

// headerRelayError marks an answer of the relaying node itself (it no
// longer holds the session, or the site did not answer it), which the
// first node takes as an error of its own, not as the site's answer.
const headerRelayError = "Cairn-Relay-Error"

// dropHopHeaders removes the headers of one connection (RFC 9110 7.6.1).
func dropHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, k := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(k))
		}
	}
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		h.Del(k)
	}
}

// relayTransport sends a site's request to the peer that holds its
// session.
type relayTransport struct {
	next http.RoundTripper
	base string
}

func (t relayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	u, err := url.Parse(t.base + "/" + strings.TrimPrefix(r.URL.EscapedPath(), "/"))
	if err != nil {
		return nil, err
	}
	u.RawQuery = r.URL.RawQuery
	req := r.Clone(r.Context())
	req.URL, req.Host = u, u.Host
	next := t.next
	if next == nil {
		next = http.DefaultTransport
	}
	res, err := next.RoundTrip(req)
	if err == nil && res.Header.Get(headerRelayError) != "" {
		defer res.Body.Close()
		var e errorBody
		_ = json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&e)
		return nil, fmt.Errorf("relayed through the hub node that held the session: %s", e.Message)
	}
	return res, err
}
