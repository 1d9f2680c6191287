package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/appliance/watchdog"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/hypervisor/qemu"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/hashicorp/go-memdb"
)

// newCompute builds the compute services every node serves (the API's VM
// and image routes, the scheduler) from the config.
func (a *Agent) newCompute() {
	cfg := a.cfg
	// Uploads spooled when the node last stopped are abandoned.
	if err := os.RemoveAll(filepath.Join(cfg.DataDir, "images", "tmp")); err != nil {
		a.log.Warn("remove abandoned image uploads", "err", err)
	}
	a.images = hypervisor.NewImages(a.node, a.identity, a.objects, hypervisor.ImagesConfig{
		QEMUImg: strings.Fields(cfg.QEMUImg), TempDir: filepath.Join(cfg.DataDir, "images", "tmp"),
		Reserve: cfg.reserve(), Logger: a.log.With("component", "images")})
	a.compute = hypervisor.NewService(a.node, a.identity, a.images, a.log.With("component", "compute"))
	a.scheduler = hypervisor.NewScheduler(a.node, a.log.With("component", "scheduler"))
	// Every node watches the VM leases, so a new leader knows at once
	// which nodes are lost; the leader restarts their HA VMs.
	a.leases = hypervisor.NewLeases(a.node, hypervisor.DefaultHATiming)
	lost := func(node string) bool { _, lost := a.leases.Lost(node); return lost }
	a.scheduler.Lost, a.compute.Lost = lost, lost
	a.node.RegisterController("failover", hypervisor.NewFailover(a.node, a.leases, a.log.With("component", "failover")).Run)
	a.node.RegisterController("scheduler", a.scheduler.Run)
	a.compute.Quorum = a.quorumWithout
	drainer := hypervisor.NewDrainer(a.node, a.log.With("component", "drainer"))
	drainer.Lost, drainer.Disks = lost, a.compute
	a.node.RegisterController("drainer", drainer.Run)
	a.node.RegisterController("vm-reaper", a.every(30*time.Second, "purge VMs deleted on lost nodes", func(ctx context.Context) error {
		return a.scheduler.ReapDeleted(ctx, 5*time.Minute)
	}))
	a.node.RegisterController("default-network", a.ensureNetwork)
	a.node.RegisterController("console-key", func(ctx context.Context) {
		for ctx.Err() == nil {
			err := hypervisor.EnsureConsoleKey(ctx, a.node)
			if err == nil {
				return
			}
			a.log.Warn("make the console key", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	})
	a.newNodeAgent()
	local := func(vm, kind string) (string, bool) { return "", false }
	if cfg.VMs {
		local = a.vms.ConsoleFile
	}
	a.consoles = hypervisor.NewConsoles(a.compute, a.node, local, a.log.With("component", "consoles"))
	a.node.HandleRPC(hypervisor.ConsoleRPCPrefix, a.consoles.RPCHandler())
	var usage func(vmID, span string) ([]hypervisor.UsagePoint, bool)
	if cfg.VMs {
		usage = a.vms.Usage
	}
	a.usage = hypervisor.NewUsageReader(a.compute, a.node, usage)
	a.node.HandleRPC(hypervisor.UsageRPCPrefix, a.usage.RPCHandler())
}

// watchdogTimeout is the hardware watchdog's: a hung agent's box is reset
// within HATiming.Fence plus this, before its lease is lost (Lease).
var watchdogTimeout = hypervisor.DefaultHATiming.Lease - hypervisor.DefaultHATiming.Fence - time.Second

// ensureNetwork creates the default VM network once per cluster; the
// command is idempotent, so a new leader asking again is harmless.
func (a *Agent) ensureNetwork(ctx context.Context) {
	for ctx.Err() == nil {
		nw := netfabric.Network{ID: netfabric.DefaultNetworkID, Name: "default", CIDR: a.cfg.VMNetwork, CreatedAt: time.Now().UTC()}
		if netfabric.GetNetwork(a.node.Store().ReadTxn(), nw.ID) != nil {
			return
		}
		_, err := a.node.Apply(ctx, netfabric.MsgCreateNetwork, &nw, nil)
		if err == nil {
			return
		}
		a.log.Error("create the default VM network", "cidr", nw.CIDR, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
		}
	}
}

// newNodeAgent builds this node's side of compute: the VM network on the
// host and the agent that converges local QEMU processes.
func (a *Agent) newNodeAgent() {
	cfg := a.cfg
	log := a.log.With("component", "vms")
	hc := netfabric.DefaultHostConfig()
	hc.Bridge = cfg.VMBridge
	hc.Underlay = underlayAddr(a.node.RaftAddr())
	hc.Node = cfg.Name
	hc.Peers = a.peerAddrs
	hc.Logger = a.log
	a.vmNet = netfabric.NewHost(hc, netfabric.StoreLeases(a.node.Store(), netfabric.DefaultNetworkID))
	qemuArgv := strings.Fields(cfg.QEMU)
	accel := cfg.Accel
	if accel == "auto" {
		accel = hypervisor.Accel()
	}
	vols := hypervisor.NewLocalVolumes(filepath.Join(cfg.DataDir, "vms"), strings.Fields(cfg.QEMUImg))
	vols.SetReserve(cfg.reserve())
	nc := hypervisor.NodeConfig{
		Name:    cfg.Name,
		Driver:  qemu.NewDriver(qemu.DriverConfig{QEMU: qemuArgv, RunDir: cfg.VMRunDir, Logger: log}),
		Volumes: vols,
		Cache:   hypervisor.NewCache(filepath.Join(cfg.DataDir, "images", "cache"), a.objects),
		Net:     a.vmNet, Accel: accel, UnsafeTCGPrecopy: cfg.UnsafeTCGPrecopy,
		OVMFCode: cfg.OVMFCode, OVMFVars: cfg.OVMFVars, StopTimeout: cfg.VMStopTimeout, Logger: log,
		MigrationIP: cfg.Advertise, Peers: a.node,
	}
	if cfg.Watchdog != "" {
		a.watchdog = watchdog.New(cfg.Watchdog, watchdogTimeout, log)
		nc.Watchdog = a.watchdog
	}
	if cfg.VMs {
		version, err := hypervisor.QEMUVersion(qemuArgv)
		nc.QEMUVersion = version
		if err == nil {
			// QEMU runs as each VM's own user and opens the VM's disks
			// by path: it must get that far (search only, nothing
			// listable). The image cache stays root's: base images
			// reach QEMU as descriptors.
			err = hypervisor.Traversable(cfg.DataDir, filepath.Join(cfg.DataDir, "vms"), filepath.Dir(cfg.VMRunDir))
		}
		if err != nil {
			nc.QEMUError = err.Error()
			log.Error("this node cannot run VMs", "err", err)
		} else if err := hypervisor.Reachable(cfg.DataDir, cfg.VMRunDir); err != nil {
			// Said loudly, but not fatal: a test's or laptop's data dir
			// may sit under a private parent that is fixed by hand.
			log.Error("VMs will fail to start", "err", err)
		}
	}
	a.vms = hypervisor.NewNodeAgent(a.node, nc)
	a.node.HandleRPC(hypervisor.MigrationRPCPrefix, a.vms.MigrationRPC())
}

// runVMs keeps the VM network set up and the local VMs converged.
func (a *Agent) runVMs(ctx context.Context) {
	defer a.vmNet.Close()
	a.waitCaughtUp(ctx)
	ready := make(chan struct{})
	// Segments first: the NAT network's reconcile rebuilds the guard and
	// re-attaches taps, and only once the segments are known does it keep
	// project networks' traffic flowing across an agent restart.
	segsTried := make(chan struct{})
	go a.reconcileSegments(ctx, a.vmNet, segsTried)
	select {
	case <-segsTried:
	case <-ctx.Done():
		return
	}
	go a.reconcileNetwork(ctx, a.vmNet, ready)
	// VMs need the bridge for their taps; a VM that still comes too early
	// is retried by its worker.
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
	case <-ctx.Done():
		return
	}
	a.vms.Run(ctx)
}

// waitCaughtUp waits until this node's store holds every write the
// cluster had acknowledged (a read index). After a restart the store is
// the last snapshot until the leader says how far the log goes: networks,
// ports and routers made since would look gone, and reconciling from it
// would take down what running VMs use. Until then the kernel's state
// stays as the previous agent left it.
//
// A box cut off from the majority waits for as long as that lasts: after
// a while its DHCP and gateway ARP servers start for what is built here
// already, from the state it has (ServeExisting), so its guests keep their
// leases and gateways, and nothing is torn down.
func (a *Agent) waitCaughtUp(ctx context.Context) {
	start, served := time.Now(), false
	for logged := false; ctx.Err() == nil; logged = true {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.node.ConsistentRead(rctx)
		cancel()
		if err == nil {
			return
		}
		if !logged {
			a.log.Info("waiting for the replicated state to catch up before touching the VM networks", "err", err)
		}
		if !served && time.Since(start) > 15*time.Second {
			served = true
			txn := a.node.Store().ReadTxn()
			segs := netfabric.Segments(txn, a.cfg.Name, a.peerUnderlay)
			if err := a.vmNet.ServeExisting(netfabric.GetNetwork(txn, netfabric.DefaultNetworkID), segs); err != nil {
				a.log.Warn("serve DHCP from the state this node has", "err", err)
			} else {
				a.log.Warn("the cluster's state is out of reach: serving DHCP for what this node has built, changing nothing, until it answers")
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// refusals follows the default network's reconciles for the node's host
// record: a refusal because the network would shadow the node's own network
// (netfabric.IsShadowing) that stands for standingRefusal reconciles in a
// row (about 6 s) is reported until a reconcile is not refused. Any other
// outcome clears it: a success, and also another error (a tap that failed,
// a netlink hiccup), which comes from a step after the check passed, or
// from one too transient to take the node out of placement.
type refusals struct{ n int }

const standingRefusal = 3

// observe takes one reconcile's outcome and says what the host record
// should report (nil: nothing).
func (r *refusals) observe(err error) error {
	if !netfabric.IsShadowing(err) {
		r.n = 0
		return nil
	}
	r.n++
	if r.n < standingRefusal {
		return nil
	}
	return err
}

// reconcileNetwork keeps the host's bridge, NAT and DHCP server in line
// with the default network, repairing drift every minute. A refusal that
// stands is reported on the node's host record (refusals).
func (a *Agent) reconcileNetwork(ctx context.Context, host *netfabric.Host, ready chan<- struct{}) {
	var last string // the error last logged: a refusal that stands is said once
	var refused refusals
	failing := 0
	for ctx.Err() == nil {
		failed := false
		if nw := netfabric.GetNetwork(a.node.Store().ReadTxn(), netfabric.DefaultNetworkID); nw != nil {
			err := host.Reconcile(ctx, *nw)
			if err != nil {
				failed = true
				if err.Error() != last {
					a.log.Error("set up the VM network on this node", "err", err)
					last = err.Error()
				}
			} else {
				if last != "" {
					a.log.Info("the VM network is set up on this node")
				}
				last = ""
				if ready != nil {
					close(ready)
					ready = nil
				}
			}
			if report := refused.observe(err); ctx.Err() == nil {
				a.vms.SetNetworkError(report)
			}
		} else {
			refused = refusals{} // no network to set up, none refused
			a.vms.SetNetworkError(nil)
		}
		wait := time.Minute
		switch {
		case failed: // 2 s, 4 s, ... up to the minute
			failing++
			wait = min(time.Minute, 2*time.Second<<min(failing-1, 5))
		case ready != nil: // no network record yet
			wait = 2 * time.Second
		}
		if !failed {
			failing = 0
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// followArrivals follows the VMs moving live to this node. The function it
// returns gives them and a channel closed when they change: a migration's
// record changes every second with its progress, and only the set of them
// is worth reconciling the networks for.
func (a *Agent) followArrivals(ctx context.Context) func() ([]string, <-chan struct{}) {
	var (
		mu      sync.Mutex
		changed = make(chan struct{})
	)
	// The state's abandon channel is watched from before each read: a
	// snapshot restored between the read and the watch would otherwise
	// leave it watching the old database's channels for good.
	follow := func() (memdb.WatchSet, []string) {
		ws := memdb.NewWatchSet()
		ws.Add(a.node.Store().AbandonCh())
		return ws, hypervisor.Arriving(a.node.Store().ReadTxn(), a.cfg.Name, ws)
	}
	ws, vms := follow()
	go func() {
		for a.node.Store().Watch(ctx, ws) == nil {
			var now []string
			ws, now = follow()
			mu.Lock()
			if !slices.Equal(now, vms) {
				vms = now
				close(changed)
				changed = make(chan struct{})
			}
			mu.Unlock()
		}
	}()
	return func() ([]string, <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		return vms, changed
	}
}

// reconcileSegments keeps this node carrying the project networks that
// have ports here (netfabric's VXLAN segments), as the ports and networks
// in the state change, and every half minute for drift and for peers
// whose address gossip has changed.
func (a *Agent) reconcileSegments(ctx context.Context, host *netfabric.Host, tried chan<- struct{}) {
	arriving := a.followArrivals(ctx)
	for ctx.Err() == nil {
		txn := a.node.Store().ReadTxn()
		ws := memdb.NewWatchSet()
		netfabric.WatchSegments(txn, ws)
		vms, changed := arriving()
		ws.Add(changed)
		segs := netfabric.Segments(txn, a.cfg.Name, a.peerUnderlay, vms...)
		wait := 30 * time.Second
		if err := host.ReconcileSegments(ctx, segs); netfabric.OnlyRefused(err) {
			// Lasts until the rules change, which the watch sees.
			a.log.Error("some ports' security groups are too large for this node: those ports send nothing", "err", err)
		} else if err != nil {
			a.log.Error("set up project networks on this node", "err", err)
			wait = 2 * time.Second
		}
		plans := netfabric.RouterPlans(txn, a.cfg.Name)
		a.askRouterAddresses(ctx, plans)
		if err := host.ReconcileRouters(plans); err != nil {
			a.log.Error("set up routers on this node", "err", err)
			wait = 2 * time.Second
		}
		if tried != nil {
			close(tried)
			tried = nil
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		_ = a.node.Store().Watch(wctx, ws)
		cancel()
	}
}

// askRouterAddresses asks for this node's address on the external network
// of each router it runs that has a gateway and no address here yet. The
// answer comes back through the watch.
func (a *Agent) askRouterAddresses(ctx context.Context, plans []netfabric.RouterPlan) {
	for _, pl := range plans {
		if pl.External == nil || pl.Address.IsValid() {
			continue
		}
		cmd := netfabric.RouterNodeAddressCmd{Router: pl.Router.ID, Node: a.cfg.Name, CreatedAt: time.Now().UTC()}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := a.node.Apply(actx, netfabric.MsgRouterNodeAddress, cmd, nil); err != nil {
			a.log.Error("ask for this node's address of a router", "router", pl.Router.ID, "err", err)
		}
		cancel()
	}
}

// peerUnderlay is where another node's VXLAN segments end: the address of
// its Raft and RPC listener, which is on the network between the boxes.
func (a *Agent) peerUnderlay(node string) (netip.Addr, bool) {
	for _, n := range a.node.Status().Nodes {
		if n.Name == node {
			addr := underlayAddr(n.Address)
			return addr, addr.IsValid()
		}
	}
	return netip.Addr{}, false
}

// underlayAddr is the IP of a host:port address, or the zero Addr.
func underlayAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// peerAddrs lists the other nodes' addresses, from the Raft configuration
// and gossip: the VM network must not take them over (netfabric.HostConfig.Peers).
func (a *Agent) peerAddrs() []netip.Addr {
	var out []netip.Addr
	for _, n := range a.node.Status().Nodes {
		if ip := underlayAddr(n.Address); n.Name != a.cfg.Name && ip.IsValid() {
			out = append(out, ip)
		}
	}
	return out
}

// quorumWithout says why the cluster would lose its quorum if node went
// away, or nil: a majority of the voters must be healthy without it.
func (a *Agent) quorumWithout(node string) error {
	st := a.node.Status()
	voters, healthy := 0, 0
	var down []string
	for _, n := range st.Nodes {
		if n.Role != "voter" {
			continue
		}
		voters++
		switch {
		case n.Name == node:
		case n.Healthy:
			healthy++
		default:
			down = append(down, n.Name)
		}
	}
	if healthy <= voters/2 {
		return fmt.Errorf("without it %d of %d voting nodes would be up, and the cluster needs %d (down: %s)", healthy, voters, voters/2+1, strings.Join(down, ", "))
	}
	return nil
}
