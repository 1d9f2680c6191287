package tlsbatch

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// pair returns the two ends of a loopback TCP connection, the server end
// counting its writes.
func pair(t testing.TB) (server *countingConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		ch <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-ch
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { s.Close(); client.Close() })
	return &countingConn{Conn: s}, client
}

// A 256 KiB Write is sixteen records. crypto/tls sends them in sixteen
// system calls; Conn in one, and the bytes arrive intact and in order.
func TestWriteBatchesRecords(t *testing.T) {
	serverCfg, clientCfg := configs(t)
	payload := make([]byte, 256<<10)
	_, _ = rand.Read(payload)
	for _, tc := range []struct {
		name      string
		server    func(net.Conn) io.ReadWriteCloser
		maxWrites int64
	}{
		{"crypto/tls", func(c net.Conn) io.ReadWriteCloser { return tls.Server(c, serverCfg) }, 100},
		{"tlsbatch", func(c net.Conn) io.ReadWriteCloser { return Server(c, serverCfg) }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, cc := pair(t)
			srv, cli := tc.server(raw), Client(cc, clientCfg)
			errc := make(chan error, 1)
			go func() {
				// Handshake first, so the count below is the payload's alone.
				_, err := srv.Read(make([]byte, 1))
				errc <- err
			}()
			if _, err := cli.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			before := raw.writes.Load()
			go func() {
				_, err := srv.Write(payload)
				errc <- err
			}()
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(cli, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("payload corrupted in transit")
			}
			writes := raw.writes.Load() - before
			t.Logf("%s: %d KiB in %d socket writes", tc.name, len(payload)>>10, writes)
			if tc.name == "crypto/tls" && writes < 16 {
				t.Fatalf("crypto/tls sent 16 records in %d writes; the comparison is void", writes)
			}
			if writes > tc.maxWrites {
				t.Fatalf("%d socket writes, want at most %d", writes, tc.maxWrites)
			}
		})
	}
}

// Writes that end on a record boundary (multiples of 16 KiB) are not held
// back: a request/response exchange of them completes, both ways, with no
// other traffic to push them out.
func TestExactRecordMultiplesAreNotHeldBack(t *testing.T) {
	serverCfg, clientCfg := configs(t)
	raw, cc := pair(t)
	srv, cli := Server(raw, serverCfg), Client(cc, clientCfg)
	msg := make([]byte, 64<<10)
	go func() {
		buf := make([]byte, len(msg))
		for {
			if _, err := io.ReadFull(srv, buf); err != nil {
				return
			}
			if _, err := srv.Write(buf); err != nil {
				return
			}
		}
	}()
	_ = cli.SetDeadline(time.Now().Add(10 * time.Second))
	for i := range 20 {
		_, _ = rand.Read(msg)
		if _, err := cli.Write(msg); err != nil {
			t.Fatalf("round %d: write: %v", i, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(cli, got); err != nil {
			t.Fatalf("round %d: read: %v (a held-back record times out here)", i, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("round %d: echo differs", i)
		}
	}
}

// A request body goes through ReadFrom (net/http copies it onto the
// connection): a 1 MiB body from a pipe fed in 256 KiB writes leaves in a
// few socket writes, not one per 32 KiB.
func TestReadFromBatches(t *testing.T) {
	serverCfg, clientCfg := configs(t)
	raw, sc := pair(t)
	cli, srv := Client(raw, clientCfg), Server(sc, serverCfg)
	body := make([]byte, 1<<20)
	_, _ = rand.Read(body)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(srv)
		got <- b
	}()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	before := raw.writes.Load()
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(body); off += 256 << 10 {
			_, _ = pw.Write(body[off : off+256<<10])
		}
		pw.Close()
	}()
	n, err := io.Copy(cli, pr) // io.Copy finds ReadFrom, as net/http's does
	if err != nil || n != int64(len(body)) {
		t.Fatalf("copied %d bytes: %v", n, err)
	}
	writes := raw.writes.Load() - before
	cli.Close()
	if b := <-got; !bytes.Equal(b, body) {
		t.Fatalf("received %d bytes, not the body sent", len(b))
	}
	t.Logf("1 MiB in %d socket writes", writes)
	if writes > 8 {
		t.Fatalf("%d socket writes for 1 MiB, want at most 8", writes)
	}
}

// Many goroutines writing at once on one Conn: every byte arrives, records
// are never interleaved into garbage (TLS would fail to decrypt them).
func TestConcurrentWriters(t *testing.T) {
	serverCfg, clientCfg := configs(t)
	raw, cc := pair(t)
	srv, cli := Server(raw, serverCfg), Client(cc, clientCfg)
	const writers, per, size = 8, 20, 100 << 10
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			b := bytes.Repeat([]byte{0x5a}, size)
			for range per {
				if _, err := srv.Write(b); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); srv.Close() }()
	n, err := io.Copy(io.Discard, cli)
	if err != nil {
		t.Fatal(err)
	}
	if n != writers*per*size {
		t.Fatalf("received %d bytes, want %d", n, writers*per*size)
	}
}

// Through net/http, as the cluster port and the S3 endpoint use it: handlers
// see r.TLS with the client's verified certificate, and a large body streams
// both ways intact.
func TestHTTP(t *testing.T) {
	serverCfg, clientCfg := configs(t)
	serverCfg.ClientAuth = tls.RequireAndVerifyClientCert
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				http.Error(w, "no verified client certificate", http.StatusUnauthorized)
				return
			}
			_, _ = io.Copy(w, r.Body) // echo
		}),
	}
	go func() { _ = srv.Serve(NewListener(ln, serverCfg, 10*time.Second, nil)) }()
	t.Cleanup(func() { srv.Close() })

	clientCfg.ServerName = "" // Dial verifies the dialled host, 127.0.0.1
	client := &http.Client{Transport: &http.Transport{DialTLSContext: Dial((&net.Dialer{}).DialContext, clientCfg)}}
	t.Cleanup(client.CloseIdleConnections)
	body := make([]byte, 5<<20+123)
	_, _ = rand.Read(body)
	for i := range 3 { // the later rounds reuse the connection
		res, err := client.Post("https://"+ln.Addr().String()+"/echo", "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			t.Fatalf("round %d: %s: %s", i, res.Status, got)
		}
		if sha256.Sum256(got) != sha256.Sum256(body) {
			t.Fatalf("round %d: echoed body differs (%d bytes, want %d)", i, len(got), len(body))
		}
	}
}

// A client that connects and says nothing holds up nobody else, and is
// dropped when its handshake time is up; Close ends Accept.
func TestListenerHandshakeTimeout(t *testing.T) {
	serverCfg, clientCfg := configs(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(inner, serverCfg, 300*time.Millisecond, nil)
	mute, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := Dial((&net.Dialer{}).DialContext, clientCfg)(ctx, "tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c := <-accepted
	if c == nil {
		t.Fatal("accept failed")
	}
	if st := c.(*Conn).ConnectionState(); !st.HandshakeComplete {
		t.Fatal("Accept returned a connection before its handshake")
	}
	c.Close()
	_ = mute.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := mute.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the mute client was not dropped: read gave %v", err)
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// A client that does not trust the server's certificate gets an error, not
// a connection: Dial verifies the dialled host as http.Transport would.
func TestDialVerifies(t *testing.T) {
	serverCfg, _ := configs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = Server(c, serverCfg).Handshake(); c.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := Dial((&net.Dialer{}).DialContext, &tls.Config{})(ctx, "tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("dialled a server whose certificate nobody vouches for")
	}
}

// BenchmarkLoopback streams 1 GiB-scale bulk over loopback TLS with
// crypto/tls and with this package, side by side: MB/s, and CPU seconds per
// GiB (both ends, this process) as cpu-s/GiB.
func BenchmarkLoopback(b *testing.B) {
	serverCfg, clientCfg := configs(b)
	block := make([]byte, 256<<10)
	_, _ = rand.Read(block)
	for _, bc := range []struct {
		name   string
		server func(net.Conn) net.Conn
	}{
		{"crypto-tls", func(c net.Conn) net.Conn { return tls.Server(c, serverCfg) }},
		{"tlsbatch", func(c net.Conn) net.Conn { return Server(c, serverCfg) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			raw, cc := pair(b)
			srv, cli := bc.server(raw), Client(cc, clientCfg)
			done := make(chan error, 1)
			go func() {
				_, err := io.CopyBuffer(io.Discard, cli, make([]byte, 256<<10))
				done <- err
			}()
			b.SetBytes(int64(len(block)))
			cpu0 := processCPU()
			b.ResetTimer()
			for b.Loop() {
				if _, err := srv.Write(block); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			srv.Close()
			<-done
			b.ReportMetric((processCPU()-cpu0).Seconds()/(float64(b.N*len(block))/(1<<30)), "cpu-s/GiB")
		})
	}
}

// configs returns a server config with a fresh certificate for 127.0.0.1 and
// a client config that trusts it and presents one of its own.
func configs(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tlsbatch test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(parsed)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	return server, client
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
