package agent

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus/tlsbatch"
)

// slowServers runs the API's (net/http TLS) and S3's (tlsbatch) servers
// as the agent builds them, with short timeouts, around a handler that
// reads the whole body, takes a while over it, and answers its length.
func slowServers(t *testing.T) map[string]string {
	a := &Agent{cfg: DefaultConfig(), log: slog.Default()}
	a.cfg.HeaderTimeout, a.cfg.BodyTimeout, a.cfg.IdleTimeout = 300*time.Millisecond, 500*time.Millisecond, time.Second
	a.cfg.BodyMinRate = 200 // bytes/s: the steady upload below sends 500
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Work longer than the body timeout once the body is in (an
		// image conversion): the request must not be cancelled.
		select {
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusInternalServerError)
			return
		case <-time.After(2 * a.cfg.BodyTimeout):
		}
		fmt.Fprintf(w, "%d", n)
	})
	api := httptest.NewUnstartedServer(nil)
	api.Config = a.newHTTPServer("", h)
	api.StartTLS()
	t.Cleanup(api.Close)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s3 := a.newHTTPServer("", h)
	go func() { _ = s3.Serve(tlsbatch.NewListener(ln, api.TLS.Clone(), a.cfg.HeaderTimeout, nil)) }()
	t.Cleanup(func() { _ = s3.Close() })
	return map[string]string{"api": api.Listener.Addr().String(), "s3": ln.Addr().String()}
}

func dial(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reads what the server still sends and fails unless it
// closes the connection within limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration, what string) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the server still holds the connection after %s", what, limit)
	}
}

func TestSlowClientsAreCutAndSlowUploadsComplete(t *testing.T) {
	for name, addr := range slowServers(t) {
		t.Run(name, func(t *testing.T) {
			// Slowloris: headers that never end.
			c := dial(t, addr)
			if _, err := io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: cairn\r\nX-Slow: "); err != nil {
				t.Fatal(err)
			}
			closedWithin(t, c, 3*time.Second, "partial header")

			// A body that stalls half-way.
			c = dial(t, addr)
			if _, err := io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: cairn\r\nContent-Length: 1000\r\n\r\n"+strings.Repeat("a", 100)); err != nil {
				t.Fatal(err)
			}
			closedWithin(t, c, 3*time.Second, "stalled body")

			// A body that drips a byte now and then: every drop comes
			// within the body timeout, but it averages less than the
			// minimum rate once older than the timeout.
			c = dial(t, addr)
			if _, err := io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: cairn\r\nContent-Length: 1000\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			dripped := make(chan struct{})
			go func() {
				defer close(dripped)
				for range 20 {
					time.Sleep(150 * time.Millisecond)
					if _, err := io.WriteString(c, "d"); err != nil {
						return
					}
				}
			}()
			closedWithin(t, c, 2*time.Second, "dripping body")
			<-dripped

			// A slow but steady body of 2 s, four times the body
			// timeout, completes; then the connection idles and is
			// closed after the idle timeout.
			c = dial(t, addr)
			if _, err := io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: cairn\r\nContent-Length: 1000\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			for range 10 {
				time.Sleep(200 * time.Millisecond) // the client's pace
				if _, err := io.WriteString(c, strings.Repeat("b", 100)); err != nil {
					t.Fatal(err)
				}
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK || string(body) != "1000" {
				t.Fatalf("slow upload: %s %q", res.Status, body)
			}
			closedWithin(t, c, 3*time.Second, "idle keep-alive")

			// A request without a body whose answer takes longer than
			// the body timeout (a large GET) is not cut either.
			c = dial(t, addr)
			if _, err := io.WriteString(c, "GET /x HTTP/1.1\r\nHost: cairn\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			res, err = http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(res.Body)
			if res.StatusCode != http.StatusOK || string(body) != "0" {
				t.Fatalf("slow GET: %s %q", res.Status, body)
			}
		})
	}
}

// net/http's own messages reach the node's log at a level an operator
// sees, except a client leaving mid-handshake, which is everyday noise.
func TestServerErrorsAreLogged(t *testing.T) {
	var buf syncBuffer
	a := &Agent{cfg: DefaultConfig(), log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = a.newHTTPServer("", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("a bug") }))
	srv.StartTLS()
	defer srv.Close()

	if _, err := srv.Client().Get(srv.URL); err == nil {
		t.Fatal("a panicking handler answered")
	}
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("not a TLS hello\r\n\r\n"))
	io.Copy(io.Discard, c)
	c.Close()

	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(buf.String(), "TLS handshake error") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var panicLine, tlsLine string
	for _, l := range strings.Split(buf.String(), "\n") {
		switch {
		case strings.Contains(l, "panic serving") && panicLine == "":
			panicLine = l
		case strings.Contains(l, "TLS handshake error"):
			tlsLine = l
		}
	}
	if !strings.Contains(panicLine, "level=ERROR") || !strings.Contains(panicLine, "a bug") {
		t.Errorf("the handler's panic was logged as %q", panicLine)
	}
	if !strings.Contains(tlsLine, "level=DEBUG") {
		t.Errorf("a failed handshake was logged as %q", tlsLine)
	}
}
