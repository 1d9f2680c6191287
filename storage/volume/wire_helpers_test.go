package volume

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// memTarget is a replica in memory that keeps the epoch rules, for the
// protocol's tests. Hooks let a test hold calls, fail them or mark blocks
// corrupt.
type memTarget struct {
	mu                 sync.Mutex
	epoch              uint64
	data               []byte
	gens               []uint64
	corrupt            *CorruptError // reads overlapping it fail with it
	fail               error         // every call fails with it when set
	lastFUA, lastPunch bool
	flushes            int
	closed             bool

	gate     chan struct{} // calls wait for it to be closed, when set
	calls    atomic.Int64
	inflight atomic.Int64
	maxIn    atomic.Int64
}

func newMemTarget(size int64) *memTarget {
	return &memTarget{data: make([]byte, size), gens: make([]uint64, (size+ExtentSize-1)/ExtentSize)}
}

// enter counts a call and waits at the gate; the returned func ends it.
func (m *memTarget) enter(ctx context.Context) (func(), error) {
	m.calls.Add(1)
	n := m.inflight.Add(1)
	for {
		old := m.maxIn.Load()
		if n <= old || m.maxIn.CompareAndSwap(old, n) {
			break
		}
	}
	m.mu.Lock()
	gate := m.gate
	m.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	m.mu.Lock()
	return func() { m.mu.Unlock(); m.inflight.Add(-1) }, m.fail
}

func (m *memTarget) setGate(g chan struct{}) {
	m.mu.Lock()
	m.gate = g
	m.mu.Unlock()
}

func (m *memTarget) check(off, n int64) error {
	if off < 0 || n < 0 || off%BlockSize != 0 || n%BlockSize != 0 || off > int64(len(m.data)) || n > int64(len(m.data))-off {
		return fmt.Errorf("mem: range [%d, +%d) of %d: %w", off, n, len(m.data), syscall.EINVAL)
	}
	return nil
}

func (m *memTarget) fenced(epoch uint64) error {
	if epoch < m.epoch {
		return fmt.Errorf("mem: epoch %d < %d: %w", epoch, m.epoch, ErrFenced)
	}
	return nil
}

func (m *memTarget) setGens(off, n int64, gen uint64) {
	if n == 0 {
		return
	}
	for i := off / ExtentSize; i <= (off+n-1)/ExtentSize; i++ {
		m.gens[i] = gen
	}
}

func (m *memTarget) Fence(ctx context.Context, epoch uint64) (ReplicaState, error) {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return ReplicaState{}, err
	}
	if err := m.fenced(epoch); err != nil {
		return ReplicaState{}, err
	}
	m.epoch = epoch
	var mg uint64
	for _, g := range m.gens {
		mg = max(mg, g)
	}
	return ReplicaState{Size: int64(len(m.data)), Epoch: m.epoch, MaxGen: mg}, nil
}

func (m *memTarget) WriteAt(ctx context.Context, epoch, gen uint64, p []byte, off int64, fua bool) error {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return err
	}
	if err := m.fenced(epoch); err != nil {
		return err
	}
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(m.data[off:], p)
	m.setGens(off, int64(len(p)), gen)
	m.lastFUA = fua
	return nil
}

func (m *memTarget) Zero(ctx context.Context, epoch, gen uint64, off, length int64, punch bool) error {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return err
	}
	if err := m.fenced(epoch); err != nil {
		return err
	}
	if err := m.check(off, length); err != nil {
		return err
	}
	clear(m.data[off : off+length])
	m.setGens(off, length, gen)
	m.lastPunch = punch
	return nil
}

func (m *memTarget) ReadAt(ctx context.Context, p []byte, off int64) error {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return err
	}
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	if c := m.corrupt; c != nil && c.Off < off+int64(len(p)) && off < c.Off+c.Len {
		return c
	}
	copy(p, m.data[off:])
	return nil
}

// ReadLayer: a memTarget is not layered, so it holds every block.
func (m *memTarget) ReadLayer(ctx context.Context, p []byte, off int64, have Presence) error {
	if err := m.ReadAt(ctx, p, off); err != nil {
		return err
	}
	have.clear()
	have.fill(int64(len(p)) / BlockSize)
	return nil
}

func (m *memTarget) Flush(ctx context.Context, epoch uint64) error {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return err
	}
	if err := m.fenced(epoch); err != nil {
		return err
	}
	m.flushes++
	return nil
}

func (m *memTarget) extentLen(idx int64) int64 {
	return min(ExtentSize, int64(len(m.data))-idx*ExtentSize)
}

func (m *memTarget) Extents(ctx context.Context) ([]ExtentInfo, error) {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return nil, err
	}
	xs := make([]ExtentInfo, len(m.gens))
	for i := range xs {
		h := fnv.New64a()
		h.Write(m.data[int64(i)*ExtentSize : int64(i)*ExtentSize+m.extentLen(int64(i))])
		xs[i] = ExtentInfo{Gen: m.gens[i], Digest: h.Sum64()}
	}
	return xs, nil
}

func (m *memTarget) ReadExtent(ctx context.Context, idx int64, p []byte, have Presence) (int, error) {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return 0, err
	}
	if idx < 0 || idx >= int64(len(m.gens)) || len(p) < ExtentSize {
		return 0, fmt.Errorf("mem: extent %d: %w", idx, syscall.EINVAL)
	}
	n := m.extentLen(idx)
	if have != nil {
		have.clear()
		have.fill(n / BlockSize)
	}
	return copy(p, m.data[idx*ExtentSize:idx*ExtentSize+n]), nil
}

func (m *memTarget) WriteExtent(ctx context.Context, epoch uint64, idx int64, gen uint64, p []byte, _ Presence) error {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return err
	}
	if err := m.fenced(epoch); err != nil {
		return err
	}
	if idx < 0 || idx >= int64(len(m.gens)) || int64(len(p)) != m.extentLen(idx) {
		return fmt.Errorf("mem: extent %d of %d bytes: %w", idx, len(p), syscall.EINVAL)
	}
	copy(m.data[idx*ExtentSize:], p)
	m.gens[idx] = gen
	return nil
}

func (m *memTarget) Resize(ctx context.Context, epoch uint64, size int64) error {
	done, err := m.enter(ctx)
	defer done()
	if err != nil {
		return err
	}
	if err := m.fenced(epoch); err != nil {
		return err
	}
	if size < int64(len(m.data)) || size%BlockSize != 0 || size > 64<<20 {
		return fmt.Errorf("mem: resize to %d: %w", size, syscall.EINVAL)
	}
	m.data = append(m.data, make([]byte, size-int64(len(m.data)))...)
	for int64(len(m.gens)) < (size+ExtentSize-1)/ExtentSize {
		m.gens = append(m.gens, 0)
	}
	return nil
}

func (m *memTarget) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

func (m *memTarget) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data...)
}

// fakeFiles is a replica store of memTargets: the directory is real (so
// the Host's disk scanning is tested), the bytes are in memory.
type fakeFiles struct {
	mu      sync.Mutex
	targets map[string]*memTarget // by directory
	opens   int
}

func newFakeFiles() *fakeFiles { return &fakeFiles{targets: make(map[string]*memTarget)} }

func (f *fakeFiles) seam() replicaFiles {
	return replicaFiles{
		create: func(dir string, size int64, _ bool) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if b, err := os.ReadFile(filepath.Join(dir, "size")); err == nil {
				if string(b) != strconv.FormatInt(size, 10) {
					return fmt.Errorf("fake: exists with size %s: %w", b, syscall.EEXIST)
				}
				return nil
			}
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			f.targets[dir] = newMemTarget(size)
			return os.WriteFile(filepath.Join(dir, "size"), []byte(strconv.FormatInt(size, 10)), 0o600)
		},
		open: func(dir string) (Target, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			t, ok := f.targets[dir]
			if !ok {
				return nil, fmt.Errorf("fake: %s: %w", dir, os.ErrNotExist)
			}
			f.opens++
			return t, nil
		},
		remove: func(dir string) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			delete(f.targets, dir)
			return os.RemoveAll(dir)
		},
	}
}

func (f *fakeFiles) target(dir string) *memTarget {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.targets[dir]
}

func wireTestLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(wireTestWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type wireTestWriter struct{ t testing.TB }

func (w wireTestWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// testNode is a Host served on a mutual-TLS port, as the cluster port serves it.
type testNode struct {
	host   *Host
	files  *fakeFiles
	disks  map[string]string
	addr   string
	client *http.Client
	srv    *httptest.Server

	mu    sync.Mutex
	conns []net.Conn // accepted TCP connections, to cut them
}

func newNode(t testing.TB) *testNode {
	t.Helper()
	files := newFakeFiles()
	n := newNodeWith(t, files.seam())
	n.files = files
	return n
}

// newNodeWith is newNode with the replica store files (defaultReplicaFiles
// for real replicas on disk).
func newNodeWith(t testing.TB, files replicaFiles) *testNode {
	t.Helper()
	n := &testNode{disks: map[string]string{"d1": t.TempDir(), "d2": t.TempDir()}}
	n.host = newHost(func() map[string]string { return n.disks }, wireTestLog(t), files)
	ca, leaf := wireTestCerts(t)
	inner := n.host.Handler()
	n.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// consensus.requireMember's check.
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "cluster certificate required", http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	n.srv.Listener = &recordingListener{Listener: n.srv.Listener, n: n}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	n.srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	n.srv.StartTLS()
	t.Cleanup(n.srv.Close)
	n.addr = n.srv.Listener.Addr().String()
	n.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{leaf},
	}}}
	t.Cleanup(n.client.CloseIdleConnections)
	t.Cleanup(func() { n.host.Close() })
	return n
}

// cut closes every connection the node accepted.
func (n *testNode) cut() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		c.Close()
	}
}

type recordingListener struct {
	net.Listener
	n *testNode
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.mu.Lock()
		l.n.conns = append(l.n.conns, c)
		l.n.mu.Unlock()
	}
	return c, err
}

// replica creates a replica on the node and returns its memTarget.
func (n *testNode) replica(t testing.TB, id string, size int64) *memTarget {
	t.Helper()
	if err := n.host.Create("d1", id, size, false); err != nil {
		t.Fatal(err)
	}
	return n.files.target(filepath.Join(n.disks["d1"], hostVolumesDir, id))
}

func (n *testNode) dial(t testing.TB, id string) Target {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Dial(ctx, n.client, n.addr, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// wireTestCerts makes a CA and one certificate for both ends, as the cluster
// CA signs every node's.
func wireTestCerts(t testing.TB) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return ca, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// pollUntil polls cond until it holds or the deadline passes.
func pollUntil(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ Target = (*memTarget)(nil)
