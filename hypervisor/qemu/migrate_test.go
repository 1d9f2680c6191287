package qemu

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage/nbd"
)

// TestLiveMigration moves a running guest, with a disk hot-plugged into
// it, from one QEMU to another over TLS: the receiving QEMU refuses a
// client whose certificate names someone else (the source runs on), and
// takes the guest from the right one, which then runs there.
func TestLiveMigration(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	kernel, initrd := testGuest(t)
	sock, gatedSock, gated := movingVolume(t)
	ca := newTestCA(t)
	src, dst := newTestDriver(t), newTestDriver(t)
	ctx := context.Background()
	m := Machine{Name: "mover", VCPUs: 1, MemoryMiB: 256, Accel: "tcg",
		Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 quiet panic=-1 cairnflood=100"}
	from, err := src.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	waitSerial(t, from, "tick 3")
	vol := Disk{ID: "vol", Source: "nbd+unix:///?socket=" + sock}
	if err := from.AttachDisk(ctx, vol); err != nil {
		t.Fatal(err)
	}
	layout, err := from.Layout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if layout.VCPUs != 1 || layout.MemoryMiB != 256 || layout.Grown != "" || layout.Ports["vol"] == "" {
		t.Fatalf("layout %+v: want 1 vCPU, 256 MiB, nothing grown, vol on a hot-plug port", layout)
	}
	if err := from.SetMigrationCapabilities(ctx, map[string]bool{"events": true, "pause-before-switchover": true}); err != nil {
		t.Fatal(err)
	}
	if err := from.SetMigrationParameters(ctx, map[string]any{"downtime-limit": 50, "max-bandwidth": int64(1) << 32}); err != nil {
		t.Fatal(err)
	}

	// The receiving QEMU has the disk on the same port.
	incoming := func(name string) (*Instance, string) {
		t.Helper()
		mm := m
		mm.Incoming = true
		v := vol
		v.Source = "nbd+unix:///?socket=" + gatedSock
		v.Port = layout.Ports["vol"]
		mm.Disks = []Disk{v}
		to, err := dst.Start(ctx, mm)
		if err != nil {
			t.Fatal(err)
		}
		cert, key := ca.issue(t, "target.test", true)
		if err := to.SetMigrationTLS(ctx, MigrationTLS{Server: true, CA: ca.pem, Cert: cert, Key: key, Peer: "CN=source.test"}); err != nil {
			t.Fatal(err)
		}
		if err := to.SetMigrationCapabilities(ctx, map[string]bool{"events": true}); err != nil {
			t.Fatal(err)
		}
		addr, err := to.MigrateIncoming(ctx, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		return to, addr
	}

	// A client certificate of the same CA but for another name is refused,
	// and the guest runs on where it was.
	to, addr := incoming("mover")
	cert, key := ca.issue(t, "intruder.test", false)
	if err := from.SetMigrationTLS(ctx, MigrationTLS{CA: ca.pem, Cert: cert, Key: key, Peer: "target.test"}); err != nil {
		t.Fatal(err)
	}
	if err := from.Migrate(ctx, addr); err != nil {
		t.Fatal(err)
	}
	if info := waitMigration(t, from, "failed", "completed"); info.Status != "failed" {
		t.Fatalf("migration with another name's certificate: %s, want failed", info.Status)
	}
	if st, err := from.Status(ctx); err != nil || !st.Running {
		t.Fatalf("source after a refused migration: %+v, %v; want running", st, err)
	}
	if err := to.Quit(ctx); err != nil {
		t.Fatal(err)
	}

	to, addr = incoming("mover")
	cert, key = ca.issue(t, "source.test", false)
	if err := from.SetMigrationTLS(ctx, MigrationTLS{CA: ca.pem, Cert: cert, Key: key, Peer: "target.test"}); err != nil {
		t.Fatal(err)
	}
	if err := from.Migrate(ctx, addr); err != nil {
		t.Fatal(err)
	}
	if info := waitMigration(t, from, "pre-switchover", "completed", "failed"); info.Status != "pre-switchover" {
		t.Fatalf("migration: %s (%s), want a pause before the switchover", info.Status, info.ErrorDesc)
	}
	if st, err := from.Status(ctx); err != nil || st.Running {
		t.Fatalf("source at the switchover: %+v, %v; want paused", st, err)
	}
	// (A read of the disk before the switchover would have held QEMU's
	// start-up: the geometry guess reads the first sector unless told.)
	if n := gated.held.Load(); n > 0 {
		t.Fatalf("the receiving QEMU sent %d requests before the switchover", n)
	}
	close(gated.open)
	if err := from.MigrateContinue(ctx); err != nil {
		t.Fatal(err)
	}
	info := waitMigration(t, from, "completed", "failed")
	if info.Status != "completed" {
		t.Fatalf("migration: %s (%s)", info.Status, info.ErrorDesc)
	}
	t.Logf("migrated in %d ms, downtime %d ms", info.TotalTime, info.Downtime)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := to.Status(ctx)
		if err == nil && st.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target after the migration: %+v, %v; want running", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if layout2, err := to.Layout(ctx); err != nil || layout2.Ports["vol"] != layout.Ports["vol"] {
		t.Fatalf("target's layout %+v, %v: want vol on %s", layout2, err, layout.Ports["vol"])
	}
	// The guest goes on ticking there: its serial log (the target's own)
	// shows ticks counted on from where the source left off.
	waitSerial(t, to, "tick ")
	for _, inst := range []*Instance{from, to} {
		if err := inst.Quit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPostCopyMigration moves a running guest in post-copy: the guest
// runs on the target from the switchover on, and the target fetches the
// memory not sent yet from the source as the guest touches it. The pause
// before the switchover holds as in pre-copy, with nothing asked of the
// disk before it. The target's QEMU, confined as an unprivileged user,
// can handle its own page faults only where the kernel lets such users
// (vm.unprivileged_userfaultfd=1, off on stock Debian): elsewhere it
// refuses the capability before anything is sent.
func TestPostCopyMigration(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	kernel, initrd := testGuest(t)
	uffd := testutil.LockSysctl(t, "vm.unprivileged_userfaultfd")
	sock, gatedSock, gated := movingVolume(t)
	ca := newTestCA(t)
	src, dst := newTestDriver(t), newTestDriver(t)
	ctx := context.Background()
	m := Machine{Name: "postcopy", VCPUs: 1, MemoryMiB: 256, Accel: "tcg",
		Kernel: kernel, Initrd: initrd, Append: "console=ttyS0 quiet panic=-1 cairnflood=100 cairnmemcheck=64"}
	vol := Disk{ID: "vol", Source: "nbd+unix:///?socket=" + sock}
	incoming := func(port string) (*Instance, error) {
		t.Helper()
		mm := m
		mm.Incoming = true
		v := vol
		v.Source, v.Port = "nbd+unix:///?socket="+gatedSock, port
		mm.Disks = []Disk{v}
		to, err := dst.Start(ctx, mm)
		if err != nil {
			t.Fatal(err)
		}
		return to, to.SetMigrationCapabilities(ctx, map[string]bool{"events": true, "postcopy-ram": true})
	}

	uffd.Set("0")
	to, err := incoming("")
	if err == nil {
		t.Fatal("a confined QEMU took post-copy with vm.unprivileged_userfaultfd=0")
	}
	t.Logf("with vm.unprivileged_userfaultfd=0: %v", err)
	if err := to.Quit(ctx); err != nil {
		t.Fatal(err)
	}

	uffd.Set("1")
	from, err := src.Start(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	waitSerial(t, from, "tick 3")
	if err := from.AttachDisk(ctx, vol); err != nil {
		t.Fatal(err)
	}
	layout, err := from.Layout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to, err = incoming(layout.Ports["vol"])
	if err != nil {
		t.Fatal(err)
	}
	cert, key := ca.issue(t, "target.test", true)
	if err := to.SetMigrationTLS(ctx, MigrationTLS{Server: true, CA: ca.pem, Cert: cert, Key: key, Peer: "CN=source.test"}); err != nil {
		t.Fatal(err)
	}
	addr, err := to.MigrateIncoming(ctx, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, key = ca.issue(t, "source.test", false)
	if err := from.SetMigrationTLS(ctx, MigrationTLS{CA: ca.pem, Cert: cert, Key: key, Peer: "target.test"}); err != nil {
		t.Fatal(err)
	}
	if err := from.SetMigrationCapabilities(ctx, map[string]bool{"events": true, "pause-before-switchover": true, "postcopy-ram": true}); err != nil {
		t.Fatal(err)
	}
	// Slow enough in both modes that memory is left to fetch after the
	// switchover, and the post-copy phase lasts long enough to be seen.
	if err := from.SetMigrationParameters(ctx, map[string]any{"max-bandwidth": 32 << 20, "max-postcopy-bandwidth": 4 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := from.Migrate(ctx, addr); err != nil {
		t.Fatal(err)
	}
	if err := from.MigrateStartPostcopy(ctx); err != nil {
		t.Fatal(err)
	}
	if info := waitMigration(t, from, "pre-switchover", "postcopy-active", "completed", "failed"); info.Status != "pre-switchover" {
		t.Fatalf("post-copy migration: %s (%s), want a pause before the switchover", info.Status, info.ErrorDesc)
	}
	if n := gated.held.Load(); n > 0 {
		t.Fatalf("the receiving QEMU sent %d requests before the switchover", n)
	}
	close(gated.open)
	if err := from.MigrateContinue(ctx); err != nil {
		t.Fatal(err)
	}
	// The guest runs on the target while memory is still on its way.
	info := waitMigration(t, from, "postcopy-active", "completed", "failed")
	if info.Status != "postcopy-active" {
		t.Fatalf("after the switchover: %s (%s), want postcopy-active", info.Status, info.ErrorDesc)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := to.Status(ctx)
		if err == nil && st.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("target in post-copy: %+v, %v; want running", st, err)
		}
	}
	waitSerial(t, to, "tick ")
	if info, err := from.QueryMigrate(ctx); err != nil || info.Status != "postcopy-active" {
		t.Fatalf("while the guest ticks on the target: %+v, %v; want it still fetching (postcopy-active)", info, err)
	}
	info = waitMigration(t, from, "completed", "failed")
	if info.Status != "completed" {
		t.Fatalf("post-copy migration: %s (%s)", info.Status, info.ErrorDesc)
	}
	t.Logf("moved in post-copy in %d ms, downtime %d ms, %d pages fetched out of turn", info.TotalTime, info.Downtime, info.RAM.PostcopyRequests)
	// The guest's memory came whole: it checks every page it writes.
	b, _ := os.ReadFile(to.SerialLog())
	rounds := strings.Count(string(b), memLine+"round")
	time.Sleep(3 * time.Second)
	b, _ = os.ReadFile(to.SerialLog())
	if strings.Contains(string(b), memLine+"BAD") || strings.Contains(string(b), "Kernel panic") || strings.Count(string(b), memLine+"round") <= rounds {
		t.Fatalf("the guest's memory after the migration:\n%s\n%s", badLines(string(b)), lastLines(string(b), 30))
	}
	if in, err := to.QueryMigrate(ctx); err != nil || in.Status != "completed" {
		t.Fatalf("the target's side: %+v, %v; want completed", in, err)
	}
	for _, inst := range []*Instance{from, to} {
		if err := inst.Quit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// movingVolume is a 4 MiB disk served twice over NBD: plainly, for the
// source, and through a server that holds every request until gated.open
// is closed (the switchover), for the receiving QEMU, as a volume's
// standby socket does: nothing may wait for it before then.
func movingVolume(t *testing.T) (sock, gatedSock string, gated *gatedBackend) {
	t.Helper()
	img := newImage(t, vmTempDir(t), "vol.raw", 4<<20)
	sock, _ = serveNBD(t, img)
	file, err := nbd.OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { file.Close() })
	gated = &gatedBackend{Backend: file, open: make(chan struct{})}
	return sock, serveBackend(t, gated), gated
}

// waitMigration polls until the migration reaches one of statuses.
func waitMigration(t *testing.T, inst *Instance, statuses ...string) MigrationInfo {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		info, err := inst.QueryMigrate(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range statuses {
			if info.Status == s {
				return info
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("migration is %s, want one of %v", info.Status, statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitSerial(t *testing.T, inst *Instance, want string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(inst.SerialLog())
		if bytes.Contains(b, []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial console never showed %q:\n%s", want, lastLines(string(b), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// gatedBackend holds every read and write until open is closed.
type gatedBackend struct {
	nbd.Backend
	open chan struct{}
	held atomic.Int64
}

func (g *gatedBackend) wait(ctx context.Context) error {
	select {
	case <-g.open:
		return nil
	default:
	}
	g.held.Add(1)
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gatedBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.Backend.ReadAt(ctx, p, off)
}

func (g *gatedBackend) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.Backend.WriteAt(ctx, p, off, fua)
}

// Flush before the gate opens has no write before it to make durable.
func (g *gatedBackend) Flush(ctx context.Context) error {
	select {
	case <-g.open:
		return g.Backend.Flush(ctx)
	default:
		return nil
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test migration CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{name},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// The migration's TLS files go into the run directory even when the VM's
// user (who owns it) has put a link where their directory goes: nothing
// is written or handed over outside.
func TestTLSFilesStayInTheRunDirectory(t *testing.T) {
	run, outside := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, run+"/"+migrationTLSDir); err != nil {
		t.Fatal(err)
	}
	if err := writeTLSFiles(run, map[string][]byte{"ca-cert.pem": []byte("ca")}); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(outside); len(left) != 0 {
		t.Fatalf("written outside the run directory: %v", left)
	}
	st, err := os.Lstat(run + "/" + migrationTLSDir)
	if err != nil || !st.IsDir() {
		t.Fatalf("%s: %v %v", migrationTLSDir, st, err)
	}
	if b, err := os.ReadFile(run + "/" + migrationTLSDir + "/ca-cert.pem"); err != nil || string(b) != "ca" {
		t.Fatalf("ca-cert.pem: %q %v", b, err)
	}
}

func badLines(s string) string {
	if i := strings.Index(s, "] BUG"); i >= 0 {
		return s[i:min(len(s), i+5000)]
	}
	if i := strings.Index(s, "] Oops"); i >= 0 {
		return s[max(0, i-200):min(len(s), i+5000)]
	}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, memLine+"BAD") || strings.Contains(l, "panic") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
