package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus/leafca"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/storage/nbd"
)

// bare migrates the same guest between two QEMUs on this machine without
// Cairn: its disk (the guest image as a raw file) served to both over NBD
// by this process, as a volume is to Cairn's QEMUs; the stream over TLS
// with x509 certificates both sides verify, as Cairn's; every migration
// parameter QEMU's default.
type bare struct {
	drivers [2]*qemu.Driver
	ports   [2]int // each driver's QEMU forwards 127.0.0.1:port to the guest's 8080
	cur     int    // the driver whose QEMU runs the guest
	inst    *qemu.Instance
	sock    string
	ca      *leafca.CA
}

func newBare(ctx context.Context, t harness.T, guest string) (*bare, error) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "guest.raw")
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "raw", guest, raw).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu-img convert: %v: %s", err, out)
	}
	file, err := nbd.OpenFile(raw, false)
	if err != nil {
		return nil, err
	}
	srv, err := nbd.NewServer(nbd.Config{Lookup: func(context.Context, string) (*nbd.Export, error) {
		return &nbd.Export{Backend: file, MultiConn: true}, nil
	}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	runDir := fmt.Sprintf("/run/cairn-bench-ha-bare-%d", os.Getpid())
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return nil, err
	}
	b := &bare{sock: filepath.Join(runDir, "disk.sock")}
	ln, err := net.Listen("unix", b.sock)
	if err != nil {
		return nil, err
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		if b.inst != nil {
			_ = b.inst.Quit(context.Background())
		}
		ln.Close()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		file.Close()
		os.RemoveAll(runDir)
	})
	for i := range b.drivers {
		if b.ports[i], err = freePort(); err != nil {
			return nil, err
		}
		b.drivers[i] = qemu.NewDriver(qemu.DriverConfig{RunDir: filepath.Join(runDir, fmt.Sprint(i)), Unconfined: true, NoCgroups: true,
			Logger: slog.New(slog.DiscardHandler)})
	}
	certPEM, keyPEM, err := leafca.New("bench-ha bare migration CA")
	if err != nil {
		return nil, err
	}
	if b.ca, err = leafca.Parse(certPEM, keyPEM); err != nil {
		return nil, err
	}
	if b.inst, err = b.drivers[0].Start(ctx, b.machine(0)); err != nil {
		return nil, err
	}
	// Up once it answers on its port 8080 (it has its address).
	addr := "127.0.0.1:" + strconv.Itoa(b.ports[0])
	deadline := time.Now().Add(4 * time.Minute)
	for {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			got, _ := io.ReadAll(io.LimitReader(conn, 64))
			conn.Close()
			if strings.HasPrefix(string(got), "hostname=") {
				return b, nil
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(b.inst.SerialLog())
			return nil, fmt.Errorf("the bare guest did not answer on port 8080: %s", lastLine(string(log)))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// machine is the guest as Cairn's worker gives it to QEMU for the
// benchmark's flavor, booting from a volume, without seed, on driver i.
// Its NIC is QEMU's user-mode network (DHCP from QEMU; the guest's port
// 8080 reached at 127.0.0.1:b.ports[i]), which moves with it: the guest
// keeps its address, and answers on the target's port once it runs there.
func (b *bare) machine(i int) qemu.Machine {
	return qemu.Machine{Name: "bare-mover", VCPUs: 1, MaxVCPUs: 2, MemoryMiB: ramMiB, MaxMemoryMiB: 2 * ramMiB, Accel: hypervisor.Accel(),
		Disks:   []qemu.Disk{{ID: "root", Source: "nbd+unix:///?socket=" + b.sock, Format: "raw", Media: "disk", BootIndex: 1}},
		Forward: &qemu.Forward{HostPort: b.ports[i], GuestPort: 8080, MAC: "52:54:00:be:4c:01"}}
}

// freePort is a TCP port free on 127.0.0.1 now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// probes asks the guest's port 8080 through both drivers' forwards.
func (b *bare) probes() *probes {
	return startProbesAt("", "127.0.0.1:"+strconv.Itoa(b.ports[0]), "127.0.0.1:"+strconv.Itoa(b.ports[1]))
}

// migrate moves the guest to the other driver's QEMU.
func (b *bare) migrate(ctx context.Context) (run, error) {
	var r run
	p := b.probes()
	defer p.kill()
	time.Sleep(time.Second) // answers before the move, to measure a gap against
	t0 := time.Now()
	m := b.machine(1 - b.cur)
	m.Incoming = true
	to, err := b.drivers[1-b.cur].Start(ctx, m)
	if err != nil {
		return r, err
	}
	fail := func(err error) (run, error) {
		_ = to.Quit(context.WithoutCancel(ctx))
		return r, err
	}
	scert, skey, err := b.ca.Issue(leafca.Leaf{CN: "bare-target", DNS: []string{"bare-target"}, TTL: time.Hour, Backdate: time.Minute})
	if err != nil {
		return fail(err)
	}
	ccert, ckey, err := b.ca.Issue(leafca.Leaf{CN: "bare-source", Client: true, TTL: time.Hour, Backdate: time.Minute})
	if err != nil {
		return fail(err)
	}
	if err := to.SetMigrationTLS(ctx, qemu.MigrationTLS{Server: true, CA: b.ca.PEM, Cert: scert, Key: skey, Peer: "CN=bare-source"}); err != nil {
		return fail(err)
	}
	if err := b.inst.SetMigrationTLS(ctx, qemu.MigrationTLS{CA: b.ca.PEM, Cert: ccert, Key: ckey, Peer: "bare-target"}); err != nil {
		return fail(err)
	}
	addr, err := to.MigrateIncoming(ctx, "127.0.0.1")
	if err != nil {
		return fail(err)
	}
	if err := b.inst.Migrate(ctx, addr); err != nil {
		return fail(err)
	}
	var info qemu.MigrationInfo
	for deadline := time.Now().Add(5 * time.Minute); ; {
		if info, err = b.inst.QueryMigrate(ctx); err != nil {
			return fail(err)
		}
		if info.Done() && (info.Status != "completed" || info.TotalTime > 0) {
			break
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("migration %s after 5 minutes", info.Status))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if info.Status != "completed" {
		return fail(fmt.Errorf("migration %s: %s", info.Status, info.ErrorDesc))
	}
	for {
		st, err := to.Status(ctx)
		if err != nil {
			return fail(err)
		}
		if st.Running {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	r.total, r.downtime = time.Since(t0), time.Duration(info.Downtime)*time.Millisecond
	_ = b.inst.Kill(ctx)
	b.inst, b.cur = to, 1-b.cur
	time.Sleep(2 * time.Second) // answers after it
	r.gap, err = p.gap(t0.Add(-time.Second))
	return r, err
}
