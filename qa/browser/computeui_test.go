package browser_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/ui"
)

// computeUI is the web UI over real identity, storage and compute services
// on an in-process single-node cluster with two disk directories and the
// default VM network, but no hosts: VMs stay waiting for a node. It lets
// the VM and image pages be driven in a browser without QEMU; tests that
// boot guests use cairntest instead. It is served on a harness bridge, so
// the browser can run in the bridge's client namespace.
type computeUI struct {
	URL      string          // https://<bridge's host address>:port
	Bridge   *harness.Bridge // nil without root
	Identity *identity.Service
	Compute  *hypervisor.Service
	Images   *hypervisor.Images
	Root     *identity.Principal // the cluster admin "root"
	Password string
}

// startComputeUI starts it. Console tickets are real, but nothing serves
// the WebSockets they are for, so the console page shows noVNC failing to
// connect.
func startComputeUI(t *testing.T) *computeUI {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c := &computeUI{Password: "correct horse"}
	var (
		agent   *storage.DiskAgent
		objects *storage.Objects
		disks   *storage.Service
	)
	base := t.TempDir()
	node := consensustest.StartWith(t, 1, func(reg *consensus.Registry) {
		identity.Register(reg)
		storage.Register(reg)
		hypervisor.Register(reg)
		netfabric.Register(reg)
	}, func(_ int, n *consensus.Node) {
		cfg := identity.DefaultConfig()
		cfg.Logger = log
		c.Identity = identity.NewService(n, cfg)
		disks = storage.NewService(n, c.Identity)
		agent = storage.NewDiskAgent(n, disks, log, time.Second)
		shards := storage.NewShards(n, agent)
		n.HandleRPC(storage.RPCPrefix, shards.Handler())
		objects = storage.NewObjects(n, c.Identity, shards, log)
		c.Images = hypervisor.NewImages(n, c.Identity, objects, hypervisor.ImagesConfig{TempDir: filepath.Join(base, "images"), Logger: log})
		c.Compute = hypervisor.NewService(n, c.Identity, c.Images, log)
	}).Nodes[0]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	var dirs []string
	for range 2 {
		d, err := os.MkdirTemp(base, "disk-")
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	if err := agent.EnsureDisks(ctx, dirs); err != nil {
		t.Fatal(err)
	}
	go func() { agent.Run(ctx); close(done) }()

	nw := netfabric.Network{ID: hypervisor.DefaultNetwork, Name: "default", CIDR: "10.213.0.0/16", CreatedAt: time.Now().UTC()}
	if err := hypervisor.EnsureConsoleKey(ctx, node); err != nil {
		t.Fatal(err)
	}
	if _, err := node.Apply(ctx, netfabric.MsgCreateNetwork, &nw, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Identity.CreateFirstAdmin(ctx, "root", c.Password); err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.Identity.Login(ctx, "root", c.Password)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root, err = c.Identity.Authenticate(ctx, tok); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "two healthy disks", func() error {
		ds, err := disks.ListDisks(c.Root)
		if err != nil {
			return err
		}
		ok := 0
		for _, d := range ds {
			if d.Health == storage.HealthOK && d.FreeBytes > 0 {
				ok++
			}
		}
		if ok != 2 {
			return fmt.Errorf("%d of %d disks healthy", ok, len(ds))
		}
		return nil
	})

	h, err := ui.New(ui.Deps{
		Identity: c.Identity, Status: node.Status, Logger: log,
		Objects: objects, Storage: disks,
		Compute: c.Compute, Images: c.Images,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Without root there are no bridges: the browser stays in the host's
	// namespace, on loopback.
	host := "127.0.0.1"
	if os.Geteuid() == 0 {
		c.Bridge = harness.NewBridge(t)
		host = c.Bridge.HostAddr().String()
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c.URL = srv.URL
	return c
}

// setupProjectFlavor creates the project and the flavor a VM needs and
// returns their IDs.
func setupProjectFlavor(t *testing.T, c *computeUI) (project, flavor string) {
	t.Helper()
	ctx := context.Background()
	pr, err := c.Identity.CreateProject(ctx, c.Root, identity.ProjectSpec{Name: "radiology"})
	if err != nil {
		t.Fatal(err)
	}
	fl, err := c.Identity.CreateFlavor(ctx, c.Root, identity.FlavorSpec{Name: "m1.small", VCPUs: 1, RAMMiB: 512, DiskGiB: 1})
	if err != nil {
		t.Fatal(err)
	}
	return pr.ID, fl.ID
}
