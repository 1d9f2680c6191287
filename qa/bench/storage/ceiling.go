package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairnhq/cairn/consensus/tlsbatch"
	"github.com/cairnhq/cairn/qa/bench/benchrun"
)

// measureTLSCeiling is what any HTTPS object server could serve on this
// machine: an in-process Go HTTPS server on loopback handing out one
// in-memory object of size bytes, read by clients concurrent Go HTTPS
// clients for about d. No disks, no erasure coding, no second hop: the cost
// of TLS and loopback TCP alone, on the same cores as the real run. The
// server's TLS is the S3 port's own (tlsbatch), the cheapest we have, so the
// ceiling is a fair floor for what one TLS hop costs. It returns MiB/s and
// the CPU seconds (server and clients) per GiB served.
func measureTLSCeiling(ctx context.Context, size int64, clients int, d time.Duration) (mibs, cpuPerGiB float64, err error) {
	cert, pool, err := selfSigned()
	if err != nil {
		return 0, 0, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	body := make([]byte, size)
	_, _ = rand.Read(body)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = w.Write(body)
		}),
	}
	go func() {
		_ = srv.Serve(tlsbatch.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}}, 10*time.Second, nil))
	}()
	defer srv.Close()

	client := benchrun.NewClient(&tls.Config{RootCAs: pool}, nil)
	url := "https://" + ln.Addr().String() + "/object"
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var total atomic.Int64
	var firstErr error
	var once sync.Once
	start, cpu0 := time.Now(), benchrun.SelfCPU()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
				res, err := client.Do(req)
				if err == nil {
					var n int64
					n, err = drain(res.Body)
					res.Body.Close()
					total.Add(n)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, 0, firstErr
	}
	_, perGiB := cpuUse{client: benchrun.SelfCPU() - cpu0}.perGiB(total.Load())
	return mibps(total.Load(), time.Since(start)), perGiB, nil
}

// selfSigned makes a throwaway ECDSA certificate for 127.0.0.1, as the
// cluster's own certificates are.
func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool, nil
}

// drain reads r to its end in 256 KiB reads, as a client that stores or
// forwards an object would. io.Copy to io.Discard reads 8 KiB at a time, and
// on two shared cores the extra calls would come out of the nodes' share.
func drain(r io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{io.Discard}, r, make([]byte, 256<<10))
}
