package agent

import (
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Slow clients (slowloris) must not hold the API's and S3's connections
// forever, but S3 objects and images are large bodies that may take hours
// to arrive. So there is no total read timeout: the headers must arrive
// within HeaderTimeout (which also bounds the TLS handshake), an idle
// keep-alive connection is closed after IdleTimeout, and a request body
// must make progress: each read extends the connection's read deadline by
// BodyTimeout, so a stalled body is cut while a slow one completes. Once a
// body is older than BodyTimeout it must also average BodyMinRate, so one
// byte a minute (a login form that never ends) does not hold a connection.

// newHTTPServer is the API's and S3's server on addr with the node's
// timeouts.
func (a *Agent) newHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           bodyProgress(h, a.cfg.BodyTimeout, a.cfg.BodyMinRate),
		ReadHeaderTimeout: a.cfg.HeaderTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		ErrorLog:          log.New(serverLog{a.log}, "", 0),
	}
}

// serverLog takes net/http's own messages. A client that leaves in the
// middle of a TLS handshake (a port scan, a health probe) is everyday
// noise; anything else (a handler's panic, an accept error) is not, and is
// logged where an operator sees it.
type serverLog struct{ log *slog.Logger }

func (l serverLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	switch {
	case strings.Contains(msg, "TLS handshake error"):
		level = slog.LevelDebug
	case strings.Contains(msg, "panic serving"):
		level = slog.LevelError
	}
	l.log.Log(context.Background(), level, "http server: "+msg)
	return len(p), nil
}

// bodyProgress gives a request body timeout to read its next bytes in.
func bodyProgress(next http.Handler, timeout time.Duration, minRate int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A request without a body is left alone: its connection's
		// background read (which notices a client going away) must not
		// time out while a long response streams.
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		now := time.Now()
		if err := rc.SetReadDeadline(now.Add(timeout)); err != nil {
			next.ServeHTTP(w, r) // a connection without deadlines
			return
		}
		r.Body = &progressBody{ReadCloser: r.Body, rc: rc, timeout: timeout, minRate: minRate, start: now, extended: now}
		next.ServeHTTP(w, r)
	})
}

// progressBody extends the read deadline as bytes arrive.
type progressBody struct {
	io.ReadCloser
	rc       *http.ResponseController
	timeout  time.Duration
	minRate  int64 // bytes/s, averaged from start once the body is older than timeout
	start    time.Time
	total    int64
	extended time.Time
}

func (b *progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	// Once the whole body is in (err is io.EOF), net/http clears the
	// deadline for its background read: the handler may then work for
	// long (an image conversion) without the request being cancelled.
	// Moving the deadline costs a timer update: not on every read of a
	// fast upload, but well before the current one passes.
	b.total += int64(n)
	if n > 0 && err == nil {
		now := time.Now()
		age := now.Sub(b.start)
		tooSlow := age > b.timeout && float64(b.total) < float64(b.minRate)*age.Seconds()
		if now.Sub(b.extended) > b.timeout/8 && !tooSlow {
			b.extended = now
			_ = b.rc.SetReadDeadline(now.Add(b.timeout))
		}
	}
	return n, err
}
