package netfabric

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/cairnhq/cairn/consensus"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// HostConfig names what a Host owns in its network namespace.
type HostConfig struct {
	Bridge    string // the VMs' bridge, holding the network's gateway address
	TapPrefix string // taps whose names start with it are ours
	NFTable   string // our IPv4 nftables table; nothing else in it survives a Reconcile
	// PortTable (bridge family) holds port security, GuardTable (inet) keeps
	// the VMs off the host's own ports (portsec.go); both are ours alone.
	PortTable  string
	GuardTable string
	// SGTable (inet) holds project networks' security groups (sgtable.go).
	SGTable string
	// RouteTable (bridge) sends guests' frames for their gateway to the
	// local router; RouterNSPrefix starts the names of the routers'
	// namespaces (empty: one made from this node's own namespace), which
	// are this Host's alone (routerns.go).
	RouteTable     string
	RouterNSPrefix string
	// SegmentPrefix starts the names of project networks' bridges
	// (prefix+"b"+VNI) and VXLAN devices (prefix+"x"+VNI), overlay.go.
	SegmentPrefix string
	// Underlay is this node's address on the network between the nodes:
	// project networks' VXLAN segments run from it.
	Underlay netip.Addr
	// Node is this node's name: a project network's DHCP here answers the
	// ports bound to it.
	Node string
	// ResolvConf lists files to take DNS servers from: the NAT network's
	// guests get them when the network names none (the first file with a
	// non-loopback IPv4 nameserver wins), and project networks' DNS
	// forwarder asks them (the first file naming any, loopback included).
	ResolvConf []string
	// OnLease, if set, is called after an ACK, so the caller can mark a
	// port's address as seen by its guest. It runs on the DHCP goroutine.
	OnLease func(mac net.HardwareAddr, ip netip.Addr)
	// Peers, if set, gives the addresses of the cluster's other nodes: a
	// VM network holding one would send this node's traffic for that
	// node into the VMs' bridge, and is refused.
	Peers  func() []netip.Addr
	Logger *slog.Logger
}

// DefaultHostConfig returns the names a Cairn node uses.
func DefaultHostConfig() HostConfig {
	return HostConfig{
		Bridge:        "cairnbr0",
		TapPrefix:     "cvm",
		NFTable:       "cairn_nat",
		PortTable:     "cairn_ports",
		GuardTable:    "cairn_guard",
		SGTable:       "cairn_sg",
		RouteTable:    "cairn_routes",
		SegmentPrefix: "cn",
		ResolvConf:    []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"},
		Logger:        slog.Default(),
	}
}

// LeaseSource is what the DHCP server asks about the guests: the caller backs
// it with the replicated state (see StoreLeases).
type LeaseSource interface {
	// Lease returns the address and hostname of the port with this MAC.
	Lease(mac net.HardwareAddr) (ip netip.Addr, hostname string, ok bool)
	// Network returns the network being served, as currently desired.
	Network() (Network, bool)
	// Ports returns the ports of every network, for port security and to
	// put each tap on its network's bridge.
	Ports() []Port
	// PortByMAC returns the port with this MAC, of any network.
	PortByMAC(mac net.HardwareAddr) (Port, bool)
	// Filters returns the security-group filters of those of the ports
	// (by id) that are on project networks, as the state has them now.
	Filters(ports []string) map[string]PortFilter
}

// Host reconciles one node's side of the VM network in the current network
// namespace: a bridge with the gateway address, taps attached to it, an
// nftables table for NAT, IPv4 forwarding, and a DHCP server on the bridge.
// It owns those objects by name and rebuilds them; nothing else on the host
// is touched. Call its methods from a goroutine in the namespace it manages.
type Host struct {
	cfg    HostConfig
	leases LeaseSource
	log    *slog.Logger

	psMu sync.Mutex // one port-security rebuild at a time, so the last applied read the latest ports
	rtMu sync.Mutex // one router reconcile at a time

	natMu   sync.Mutex
	natSeen map[string]string // router namespace -> the translation last swept for

	segSrv map[string]*segServer // by network id; h.mu
	dialer *nsDialer             // the DNS forwarder's sockets (segdns.go); h.mu

	segMu sync.Mutex
	segs  map[string]Segment // by network id, as last built
	peers []netip.Addr       // the underlay addresses VXLAN is taken from

	// zonesSwept: the first ReconcileSegments after a start has forgotten
	// the connections of every conntrack zone no segment here uses (a
	// segment removed while the agent was down left them behind); h.mu.
	zonesSwept bool

	mu      sync.Mutex
	nw      Network // as last reconciled
	hostDNS []net.IP
	dhcp    *dhcpServer
}

// NewHost returns a Host; it changes nothing until Reconcile.
func NewHost(cfg HostConfig, leases LeaseSource) *Host {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Host{cfg: cfg, leases: leases, log: log.With("component", "netfabric")}
}

// Reconcile makes the host serve nw: the bridge up with the gateway address,
// our taps on it, forwarding on, the NAT table rebuilt and the DHCP server
// running. It is idempotent and repairs whatever drifted, including what an
// earlier crash left half done.
func (h *Host) Reconcile(ctx context.Context, nw Network) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	pfx, err := ParseCIDR(nw.CIDR)
	if err != nil {
		return fmt.Errorf("reconcile network %s: %w", nw.ID, err)
	}
	gw := pfx.Addr().Next()
	if nw.Gateway != "" && nw.Gateway != gw.String() {
		return fmt.Errorf("reconcile network %s: gateway %s is not the first host of %s", nw.ID, nw.Gateway, pfx)
	}
	nw.Gateway = gw.String()
	if err := h.refuseShadowing(pfx); err != nil {
		if IsShadowing(err) {
			return err // in its own words, which the host record shows
		}
		return fmt.Errorf("reconcile network %s: %w", nw.ID, err)
	}
	steps := []func() error{
		func() error {
			br, err := h.ensureBridge(netip.PrefixFrom(gw, pfx.Bits()))
			if err != nil {
				return err
			}
			if h.dhcp != nil && h.dhcp.ifindex != br.Attrs().Index {
				h.log.Info("bridge was recreated; restarting DHCP", "bridge", h.cfg.Bridge)
				h.stopDHCP()
			}
			h.nw, h.hostDNS = nw, resolvers(h.cfg.ResolvConf)
			if h.dhcp == nil {
				return h.startDHCP(br.Attrs().Index)
			}
			return nil
		},
		h.applyPortSecurity, // before the taps join the bridge
		h.attachTaps,
		enableForwarding,
		func() error { return buildNATRuleset(h.cfg.NFTable, h.cfg.Bridge, pfx).apply() },
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reconcile network %s: %w", nw.ID, err)
		}
		if err := step(); err != nil {
			return fmt.Errorf("reconcile network %s: %w", nw.ID, err)
		}
	}
	return nil
}

// ServeExisting starts the DHCP (and gateway ARP) servers of what is
// already built on this node, for nat and segs, and changes nothing else:
// no device, table or tap is added or removed. It is for an agent that
// cannot read the cluster's current state yet (its box cut off from the
// majority after a restart): its guests keep their leases and gateways
// from what the node knows, and the next Reconcile takes over.
func (h *Host) ServeExisting(nat *Network, segs []Segment) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	if nat != nil && h.dhcp == nil {
		if br, err := netlink.LinkByName(h.cfg.Bridge); err == nil {
			h.nw, h.hostDNS = *nat, resolvers(h.cfg.ResolvConf)
			errs = append(errs, h.startDHCP(br.Attrs().Index))
		}
	}
	for _, s := range segs {
		if br, err := netlink.LinkByName(h.segmentBridge(s.Network.VNI)); err == nil {
			errs = append(errs, h.ensureSegmentServer(s, br))
		}
	}
	return errors.Join(errs...)
}

// Close stops the DHCP server. The bridge, taps and tables stay, so
// running VMs keep their network (and its guards) while the agent
// restarts.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopDHCP()
	h.stopSegmentServers(nil)
	h.closeDialer()
	return nil
}

// Teardown removes everything the Host owns: DHCP, taps, bridge and table.
// It is for tests and for taking a node out of the cluster; IPv4 forwarding
// is left as it is, since other things on the host may depend on it.
func (h *Host) Teardown() error {
	// Both locks, in Reconcile's order, for the whole teardown: no
	// reconcile or port-security rebuild brings anything back meanwhile.
	h.mu.Lock()
	defer h.mu.Unlock()
	h.psMu.Lock()
	defer h.psMu.Unlock()
	h.stopDHCP()
	h.stopSegmentServers(nil)
	h.closeDialer()
	h.nw = Network{}
	errs := []error{h.ReconcileRouters(nil), h.PruneTaps(func(string) bool { return false }), h.removeBridge(), h.removeSegments(),
		deleteNFTable(nftables.TableFamilyIPv4, h.cfg.NFTable),
		deleteNFTable(nftables.TableFamilyBridge, h.cfg.PortTable),
		deleteNFTable(nftables.TableFamilyINet, h.cfg.GuardTable),
		deleteNFTable(nftables.TableFamilyINet, h.cfg.SGTable)}
	if h.cfg.RouteTable != "" {
		errs = append(errs, deleteNFTable(nftables.TableFamilyBridge, h.cfg.RouteTable))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tear down network host state: %w", err)
	}
	return nil
}

// StoreLeases returns a LeaseSource that reads the ports of one network from
// the replicated state on every question, so new ports are served at once.
func StoreLeases(s *consensus.Store, networkID string) LeaseSource {
	return storeLeases{s: s, id: networkID}
}

type storeLeases struct {
	s  *consensus.Store
	id string
}

func (l storeLeases) Lease(mac net.HardwareAddr) (netip.Addr, string, bool) {
	p := PortByMAC(l.s.ReadTxn(), mac)
	if p == nil || p.NetworkID != l.id {
		return netip.Addr{}, "", false
	}
	return p.Addr(), p.Hostname, true
}

func (l storeLeases) Ports() []Port { return AllPorts(l.s.ReadTxn()) }

func (l storeLeases) PortByMAC(mac net.HardwareAddr) (Port, bool) {
	if p := PortByMAC(l.s.ReadTxn(), mac); p != nil {
		return *p, true
	}
	return Port{}, false
}

func (l storeLeases) Filters(ports []string) map[string]PortFilter {
	return Filters(l.s.ReadTxn(), ports)
}

func (l storeLeases) Network() (Network, bool) {
	nw := GetNetwork(l.s.ReadTxn(), l.id)
	if nw == nil {
		return Network{}, false
	}
	return *nw, true
}
