package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairnhq/cairn/consensus/tlsbatch"
)

// ALPN protocol names multiplexed on the cluster port. Every connection is TLS;
// there is no plain-text cluster traffic.
const (
	alpnRaft = "cairn-raft"
	alpnRPC  = "http/1.1"
)

// clusterListener accepts TLS on the cluster port and hands each connection to
// Raft or to the RPC server by its negotiated ALPN protocol.
type clusterListener struct {
	ln   net.Listener // tlsbatch: handshakes done, 10 s each at most
	log  *slog.Logger
	raft *chanListener
	rpc  *chanListener
}

func listenCluster(addr string, cfg *tls.Config, log *slog.Logger) (*clusterListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on cluster port %s: %w", addr, err)
	}
	cl := &clusterListener{ln: tlsbatch.NewListener(ln, cfg, 10*time.Second, log.With("listener", "cluster")), log: log,
		raft: newChanListener(ln.Addr()), rpc: newChanListener(ln.Addr())}
	go cl.serve()
	return cl, nil
}

func (cl *clusterListener) serve() {
	for {
		c, err := cl.ln.Accept()
		if err != nil {
			cl.raft.close()
			cl.rpc.close()
			return
		}
		go cl.route(c.(*tlsbatch.Conn))
	}
}

func (cl *clusterListener) route(tc *tlsbatch.Conn) {
	st := tc.ConnectionState()
	switch st.NegotiatedProtocol {
	case alpnRaft:
		// Raft only between members: a verified client certificate is required.
		if len(st.VerifiedChains) == 0 {
			cl.log.Warn("raft connection without a cluster certificate refused", "remote", tc.RemoteAddr())
			tc.Close()
			return
		}
		cl.raft.push(tc.Conn) // plain *tls.Conn: Raft writes small messages
	default:
		cl.rpc.push(tc)
	}
}

func (cl *clusterListener) Close() error { return cl.ln.Close() }

// chanListener is a net.Listener fed by clusterListener.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) close()         { l.once.Do(func() { close(l.closed) }) }
func (l *chanListener) Close() error   { l.close(); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// raftStream is Raft's StreamLayer over the multiplexed TLS port.
type raftStream struct {
	*chanListener
	advertise net.Addr
	tls       *tls.Config
	// names are the server IDs the Raft configuration has at an address
	// (Raft dials by address only): the peer's certificate must be issued
	// to one of them, so a server's address pointed at another member
	// reaches no one. Nil or empty: any certificate of the CA will do.
	names func(addr string) []string
}

var _ raft.StreamLayer = (*raftStream)(nil)

func (s *raftStream) Addr() net.Addr { return s.advertise }

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	cfg := s.tls.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(string(addr))
		if err != nil {
			return nil, err
		}
		cfg.ServerName = host
	}
	if s.names != nil {
		if want := s.names(string(addr)); len(want) > 0 {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) > 0 && slices.Contains(want, cs.PeerCertificates[0].Subject.CommonName) {
					return nil
				}
				return fmt.Errorf("raft peer at %s is not %s", addr, strings.Join(want, " or "))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tcp, err := dialPeer(ctx, "tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	c := tls.Client(tcp, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		tcp.Close()
		return nil, err
	}
	if c.ConnectionState().NegotiatedProtocol != alpnRaft {
		c.Close()
		return nil, errors.New("peer does not speak cairn-raft")
	}
	return c, nil
}

// raftNamesAt lists the servers the Raft configuration places at addr.
func (n *Node) raftNamesAt(addr string) []string {
	servers, err := n.servers()
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range servers {
		if string(s.Address) == addr {
			out = append(out, string(s.ID))
		}
	}
	return out
}
