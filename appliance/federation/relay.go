package federation

import (
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
	mux.HandleFunc(relayPath+"{site}/{path...}", func(w http.ResponseWriter, r *http.Request) {
		c, err := h.localClient(r.PathValue("site"))
		if err != nil {
			writeError(w, err)
			return
		}
		u := &url.URL{Scheme: "http", Host: "site", Path: "/" + r.PathValue("path"), RawQuery: r.URL.RawQuery}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, u.String(), r.Body)
		if err != nil {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "the call: %v", err))
			return
		}
		req.Header = r.Header.Clone()
		req.ContentLength = r.ContentLength
		res, err := c.Do(req)
		if err != nil {
			writeError(w, consensus.Errorf(consensus.CodeUnavailable, "site %s did not answer: %v", r.PathValue("site"), err))
			return
		}
		defer res.Body.Close()
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
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: relayTransport{next: rpc.Transport, base: "https://" + addr + relayPath + url.PathEscape(siteID)}}
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
	return next.RoundTrip(req)
}
