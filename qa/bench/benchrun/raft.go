package benchrun

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// ProjectWrites is Cairn's replicated write as bench-consensus measures it and
// bench-storage uses it for reference: key k is a project of its own, and a
// write sets that project's description with PATCH /api/v1/projects/{id}
// through one node's API, which is authentication, validation and one Raft
// entry holding the change and its audit record.
type ProjectWrites struct {
	APIs     []string       // each node's API, "https://IP:8443"
	Clients  []*http.Client // one per node, as from NewClient
	Token    string         // an admin's bearer token
	projects []string       // project IDs, by key
}

// Create makes one project per key, named prefix-k, key k through node k mod
// the number of nodes.
func (p *ProjectWrites) Create(ctx context.Context, keys int, prefix string) error {
	for k := len(p.projects); k < keys; k++ {
		var res struct{ ID string }
		i := k % len(p.APIs)
		body := map[string]string{"name": fmt.Sprintf("%s-%d", prefix, k)}
		if err := CallJSON(ctx, p.Clients[i], "POST", p.APIs[i]+"/api/v1/projects", p.Token, body, &res, 201); err != nil {
			return fmt.Errorf("create project %s-%d: %w", prefix, k, err)
		}
		p.projects = append(p.projects, res.ID)
	}
	return nil
}

// Keys is the number of projects made by Create.
func (p *ProjectWrites) Keys() int { return len(p.projects) }

// Write sets key's project's description to a fresh WriteValue through node i
// and returns once the cluster has acknowledged it.
func (p *ProjectWrites) Write(ctx context.Context, i, key int) error {
	body := map[string]string{"description": WriteValue()}
	return CallJSON(ctx, p.Clients[i], "PATCH", p.APIs[i]+"/api/v1/projects/"+p.projects[key], p.Token, body, nil, 200)
}

// WriteValue is a fresh value for one replicated write: 64 random bytes,
// hex-encoded. bench-consensus writes it to both systems.
func WriteValue() string {
	var b [64]byte
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return hex.EncodeToString(b[:])
}

// Dials counts the connections a transport from NewTransport opened, so a
// report can show that a load reused its connections rather than measuring
// TCP and TLS set-up.
type Dials struct{ n atomic.Int64 }

// Load returns the number of connections opened so far.
func (d *Dials) Load() int64 {
	if d == nil {
		return 0
	}
	return d.n.Load()
}

// NewTransport returns a transport for one node: HTTP/1.1 over TLS with a
// keep-alive pool large enough (256) that every closed-loop worker keeps its
// connection between requests. Each connection it opens is counted in dials
// when that is not nil.
func NewTransport(tlsCfg *tls.Config, dials *Dials) *http.Transport {
	dialer := &net.Dialer{Timeout: 2 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: tlsCfg,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials != nil {
				dials.n.Add(1)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	return tr
}

// NewClient is an http.Client over NewTransport.
func NewClient(tlsCfg *tls.Config, dials *Dials) *http.Client {
	return &http.Client{Transport: NewTransport(tlsCfg, dials)}
}
