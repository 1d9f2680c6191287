package nbd

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// conn is one client connection: handshake, then transmission.
type conn struct {
	srv *Server
	nc  net.Conn
	log *slog.Logger

	mu      sync.Mutex
	stopped bool
}

// stop asks the connection to read nothing more: a blocked read returns
// at once, and the connection then finishes what it received.
func (c *conn) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	c.nc.SetReadDeadline(time.Unix(1, 0))
}

func (c *conn) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// setReadDeadline sets a deadline unless stop already set its own.
func (c *conn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.nc.SetReadDeadline(t)
	}
}

func (c *conn) serve() {
	var tc *tls.Conn
	defer func() {
		if tc != nil {
			tc.Close() // sends close_notify, then closes nc
		}
		c.nc.Close()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := &c.srv.cfg
	h := &handshake{cfg: cfg, r: bufio.NewReaderSize(c.nc, 64<<10), w: c.nc}
	if cfg.TLS != nil {
		h.upgrade = func() (io.Reader, io.Writer, error) {
			tc = tls.Server(c.nc, cfg.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return nil, nil, err
			}
			return tc, tc, nil
		}
		h.peer = func() []*x509.Certificate {
			// Only a chain that verified against cfg.TLS's client CAs.
			if cs := tc.ConnectionState(); len(cs.VerifiedChains) > 0 {
				return cs.VerifiedChains[0]
			}
			return nil
		}
	}
	c.setReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	neg, err := h.run(ctx)
	if err != nil {
		if !errors.Is(err, errAbort) {
			c.log.Info("nbd handshake failed", "err", err)
		}
		return
	}
	c.setReadDeadline(time.Time{})
	log := c.log.With("export", neg.export.Name)
	log.Debug("nbd transmission", "structured", neg.structured, "tls", tc != nil)
	s := newSession(neg, cfg, h.r, h.w, log)
	s.onWriteError = func() { c.nc.Close() }
	if err := s.run(ctx, c.isStopped); err != nil {
		log.Info("nbd connection closed", "err", err)
	}
}
