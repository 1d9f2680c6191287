package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Config configures a Server.
type Config struct {
	// Lookup resolves an export name (possibly empty, the default export)
	// to an export; it returns ErrNoExport for names it does not serve.
	Lookup func(ctx context.Context, name string) (*Export, error)
	// List names the exports for NBD_OPT_LIST; nil lists none.
	List func(ctx context.Context) []string
	// TLS, when set, is required: every client must upgrade with
	// NBD_OPT_STARTTLS before anything else (proto.md's FORCEDTLS).
	TLS *tls.Config
	// MaxInFlight bounds the requests one connection runs at once.
	MaxInFlight int
	// MaxPayload is the largest READ or WRITE accepted, advertised as the
	// maximum block size.
	MaxPayload uint32
	// HandshakeTimeout bounds the option haggling of one connection.
	HandshakeTimeout time.Duration
	Logger           *slog.Logger
}

// DefaultConfig returns the defaults: 16 requests in flight per
// connection (what QEMU keeps), 32 MiB payloads (what QEMU sends at most
// and what proto.md says no server should treat as an attack), 30 s
// to negotiate.
func DefaultConfig() Config {
	return Config{
		MaxInFlight:      16,
		MaxPayload:       32 << 20,
		HandshakeTimeout: 30 * time.Second,
		Logger:           slog.Default(),
	}
}

// Server serves exports over any number of listeners.
type Server struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	wg        sync.WaitGroup
}

// NewServer returns a server; zero fields of cfg take DefaultConfig's values.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("nbd: Config.Lookup is required")
	}
	def := DefaultConfig()
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = def.MaxInFlight
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = def.MaxPayload
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = def.HandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}, nil
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("nbd: server closed")

// Serve accepts connections on l (unix or TCP) until Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("nbd accept: %w", err)
		}
		delay = 0
		c := &conn{srv: s, nc: nc, log: s.log.With("remote", nc.RemoteAddr().String())}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, stops reading new requests, lets the requests
// already received finish and be answered, flushes every writable export
// and closes the connections. If ctx ends first the connections are cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		return fmt.Errorf("nbd shutdown: %w", ctx.Err())
	}
}

// Close is Shutdown without a deadline: a client that stops reading its
// replies can hold it up forever, so daemons should call Shutdown.
func (s *Server) Close() error { return s.Shutdown(context.Background()) }

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}
