package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Live migration, QEMU's side: the receiving QEMU is started with
// Machine.Incoming and listens (MigrateIncoming); the sending one streams
// its RAM and device state to it (Migrate) over TLS (SetMigrationTLS),
// stops the guest when what is left fits the downtime limit, and with
// pause-before-switchover waits there (status "pre-switchover") until told
// to go on (MigrateContinue) or to give up (MigrateCancel, which resumes
// the guest). The caller decides in between: that pause is where Cairn
// moves the VM's disks to the new node.

// Object and directory names of a migration's TLS.
const (
	migrationTLSID   = "migrate-tls"
	migrationAuthzID = "migrate-authz"
	migrationTLSDir  = "migrate-tls"
)

// MigrationTLS is one side's TLS for a migration stream: the CA both
// sides' certificates come from and this side's certificate and key
// (PEM). The receiving side (Server) lets in only a client whose
// certificate's subject is Peer, e.g. "CN=name" (QEMU's tls-authz); the
// sending side checks that the server's certificate names Peer
// (tls-hostname).
type MigrationTLS struct {
	Server        bool
	CA, Cert, Key []byte
	Peer          string
}

// SetMigrationTLS makes every migration of this QEMU use t: it writes the
// files into the run directory, for the VM's user alone, and creates
// QEMU's credentials from them.
func (i *Instance) SetMigrationTLS(ctx context.Context, t MigrationTLS) error {
	fail := func(err error) error { return fmt.Errorf("migration tls of vm %s: %w", i.name, err) }
	if len(t.CA) == 0 || len(t.Cert) == 0 || len(t.Key) == 0 || t.Peer == "" {
		return fail(errors.New("want a CA, a certificate, a key and the peer's name"))
	}
	// A second call (a retry) replaces the first.
	_ = i.exec(ctx, "object-del", map[string]any{"id": migrationTLSID}, nil, nil)
	_ = i.exec(ctx, "object-del", map[string]any{"id": migrationAuthzID}, nil, nil)
	side := "client"
	if t.Server {
		side = "server"
	}
	dir := filepath.Join(i.dir, migrationTLSDir)
	if err := writeTLSFiles(i.dir, map[string][]byte{"ca-cert.pem": t.CA, side + "-cert.pem": t.Cert, side + "-key.pem": t.Key}); err != nil {
		return fail(err)
	}
	creds := map[string]any{"qom-type": "tls-creds-x509", "id": migrationTLSID, "dir": dir, "endpoint": side, "verify-peer": true}
	if err := i.exec(ctx, "object-add", creds, nil, nil); err != nil {
		return fail(err)
	}
	params := map[string]any{"tls-creds": migrationTLSID}
	if t.Server {
		authz := map[string]any{"qom-type": "authz-simple", "id": migrationAuthzID, "identity": t.Peer}
		if err := i.exec(ctx, "object-add", authz, nil, nil); err != nil {
			return fail(err)
		}
		params["tls-authz"] = migrationAuthzID
	} else {
		params["tls-hostname"] = t.Peer
	}
	if err := i.exec(ctx, "migrate-set-parameters", params, nil, nil); err != nil {
		return fail(err)
	}
	return nil
}

// writeTLSFiles writes files into a fresh migrate-tls directory of the run
// directory, for the VM's user (the run directory's owner) alone. The run
// directory is that user's, and a hostile QEMU may put links in it: every
// step goes through an os.Root (no link leads out of it) and chowns by
// descriptor, so nothing outside the run directory is written or handed
// over.
func writeTLSFiles(runDir string, files map[string][]byte) error {
	root, err := os.OpenRoot(runDir)
	if err != nil {
		return err
	}
	defer root.Close()
	uid, gid := -1, -1
	if st, err := root.Stat("."); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
			uid, gid = int(sys.Uid), int(sys.Gid)
		}
	}
	if err := root.RemoveAll(migrationTLSDir); err != nil {
		return err
	}
	if err := root.Mkdir(migrationTLSDir, 0o700); err != nil {
		return err
	}
	sub, err := root.OpenRoot(migrationTLSDir)
	if err != nil {
		return err
	}
	defer sub.Close()
	chown := func(f *os.File) error {
		if uid < 0 {
			return nil
		}
		return f.Chown(uid, gid)
	}
	for name, b := range files {
		f, err := sub.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = f.Write(b)
		if err == nil {
			err = chown(f)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	d, err := sub.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return chown(d)
}

// SetMigrationCapabilities turns QEMU's migration capabilities on or off
// (events, pause-before-switchover, auto-converge, postcopy-ram, ...).
// QEMU refuses while a migration runs.
func (i *Instance) SetMigrationCapabilities(ctx context.Context, caps map[string]bool) error {
	var list []map[string]any
	for name, on := range caps {
		list = append(list, map[string]any{"capability": name, "state": on})
	}
	return i.run(ctx, "set migration capabilities of", "migrate-set-capabilities", map[string]any{"capabilities": list}, nil)
}

// SetMigrationParameters sets QEMU's migration parameters
// (downtime-limit in ms, max-bandwidth in bytes/s, ...); most may change
// while a migration runs.
func (i *Instance) SetMigrationParameters(ctx context.Context, params map[string]any) error {
	return i.run(ctx, "set migration parameters of", "migrate-set-parameters", params, nil)
}

// MigrateIncoming makes a QEMU started with Machine.Incoming listen for
// the stream on host (an IP address of this node), on a port the kernel
// picks; it returns host:port.
func (i *Instance) MigrateIncoming(ctx context.Context, host string) (string, error) {
	if net.ParseIP(host) == nil {
		return "", fmt.Errorf("migrate-incoming vm %s: %q is not an IP address", i.name, host)
	}
	uri := "tcp:" + net.JoinHostPort(host, "0")
	if err := i.run(ctx, "migrate-incoming", "migrate-incoming", map[string]any{"uri": uri}, nil); err != nil {
		return "", err
	}
	var info struct {
		SocketAddress []struct {
			Type string `json:"type"`
			Host string `json:"host"`
			Port string `json:"port"`
		} `json:"socket-address"`
	}
	if err := i.run(ctx, "migrate-incoming", "query-migrate", nil, &info); err != nil {
		return "", err
	}
	for _, a := range info.SocketAddress {
		if p, err := strconv.Atoi(a.Port); a.Type == "inet" && err == nil && p > 0 {
			return net.JoinHostPort(host, a.Port), nil
		}
	}
	return "", fmt.Errorf("migrate-incoming vm %s: QEMU does not say which port it listens on", i.name)
}

// Migrate starts sending the VM to the QEMU listening at addr (host:port).
// It returns at once; MigrationInfo and the MIGRATION events follow it.
func (i *Instance) Migrate(ctx context.Context, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("migrate vm %s: %w", i.name, err)
	}
	return i.run(ctx, "migrate", "migrate", map[string]any{"uri": "tcp:" + addr}, nil)
}

// MigrateContinue lets a migration paused before its switchover finish.
func (i *Instance) MigrateContinue(ctx context.Context) error {
	return i.run(ctx, "continue the migration of", "migrate-continue", map[string]any{"state": "pre-switchover"}, nil)
}

// MigrateStartPostcopy switches a running migration to post-copy: from
// its switchover on the guest runs on the target, which fetches the
// memory not sent yet from the source as the guest touches it (and the
// source sends the rest meanwhile). Both QEMUs need the postcopy-ram
// capability from the start; the pause before the switchover holds as
// in pre-copy.
func (i *Instance) MigrateStartPostcopy(ctx context.Context) error {
	return i.run(ctx, "switch to post-copy the migration of", "migrate-start-postcopy", nil, nil)
}

// MigrateCancel gives a migration up; a guest that ran before it runs on.
func (i *Instance) MigrateCancel(ctx context.Context) error {
	return i.run(ctx, "cancel the migration of", "migrate_cancel", nil, nil)
}

// MigrationInfo is query-migrate's answer, as much as Cairn reads.
type MigrationInfo struct {
	// Status: none, setup, active, pre-switchover, device, completed,
	// failed, cancelling, cancelled, postcopy-active, postcopy-paused
	// (the stream broke in post-copy: the guest waits for pages), ...
	Status           string `json:"status"`
	TotalTime        int64  `json:"total-time"`        // ms so far, or in all once completed
	ExpectedDowntime int64  `json:"expected-downtime"` // ms, while active
	Downtime         int64  `json:"downtime"`          // ms, once completed
	SetupTime        int64  `json:"setup-time"`
	ErrorDesc        string `json:"error-desc"`
	RAM              struct {
		Transferred    int64   `json:"transferred"`
		Remaining      int64   `json:"remaining"`
		Total          int64   `json:"total"`
		DirtyPagesRate int64   `json:"dirty-pages-rate"` // pages/s
		PageSize       int64   `json:"page-size"`
		Mbps           float64 `json:"mbps"`
		DirtySyncCount int64   `json:"dirty-sync-count"` // iterations so far
		// PostcopyRequests counts the pages the target asked for out
		// of turn, its guest having touched them (post-copy).
		PostcopyRequests int64 `json:"postcopy-requests"`
	} `json:"ram"`
	CPUThrottlePercentage int64 `json:"cpu-throttle-percentage"`
}

// DirtyRate is the guest's rate of dirtying memory, in bytes/s.
func (m MigrationInfo) DirtyRate() int64 { return m.RAM.DirtyPagesRate * max(m.RAM.PageSize, 4096) }

// Done says whether the migration has ended, one way or the other.
func (m MigrationInfo) Done() bool {
	switch m.Status {
	case "completed", "failed", "cancelled":
		return true
	}
	return false
}

// QueryMigrate reports the migration's progress.
func (i *Instance) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var m MigrationInfo
	err := i.run(ctx, "query the migration of", "query-migrate", nil, &m)
	return m, err
}

// Layout is what of a running VM a live migration's receiving QEMU must
// reproduce on its command line.
type Layout struct {
	VCPUs, MaxVCPUs int
	MemoryMiB       int
	// Ports are the hot-plug root ports of the disks plugged into them, by
	// disk ID.
	Ports map[string]string
	// Grown says what was added while it ran that a new QEMU cannot be
	// started with yet (vCPUs or memory hot-plugged), "" if nothing.
	Grown string
}

// Layout reads the VM's devices as QEMU has them now.
func (i *Instance) Layout(ctx context.Context) (Layout, error) {
	l := Layout{Ports: map[string]string{}}
	slots, err := i.cpuSlots(ctx, "layout")
	if err != nil {
		return l, err
	}
	cpus := false
	for _, s := range slots {
		l.MaxVCPUs += s.VCPUsCount
		if s.QOMPath != "" {
			l.VCPUs += s.VCPUsCount
			cpus = cpus || strings.HasPrefix(s.QOMPath, "/machine/peripheral")
		}
	}
	var mem struct {
		Base    int64 `json:"base-memory"`
		Plugged int64 `json:"plugged-memory"`
	}
	if err := i.run(ctx, "layout", "query-memory-size-summary", nil, &mem); err != nil {
		return l, err
	}
	l.MemoryMiB = int(mem.Base / mib)
	switch {
	case cpus && mem.Plugged > 0:
		l.Grown = "vCPUs and memory"
	case cpus:
		l.Grown = "vCPUs"
	case mem.Plugged > 0:
		l.Grown = "memory"
	}
	var buses []struct {
		Devices []pciDevice `json:"devices"`
	}
	if err := i.run(ctx, "layout", "query-pci", nil, &buses); err != nil {
		return l, err
	}
	for _, b := range buses {
		for _, dev := range b.Devices {
			if !strings.HasPrefix(dev.QdevID, hotplugPortPrefix) || dev.Bridge == nil {
				continue
			}
			for _, d := range dev.Bridge.Devices {
				if d.QdevID != "" {
					l.Ports[d.QdevID] = dev.QdevID
				}
			}
		}
	}
	return l, nil
}
