// Package netfabric owns the VMs' networks: IPAM in the replicated state and,
// on every node, the host side that makes a network real.
//
// The NAT'd default VM network (Neutron's role, first slice):
//
//   - Replicated state (network.go, ports.go): the networks and ports tables
//     and the commands MsgCreateNetwork, MsgDeleteNetwork, MsgCreatePort,
//     MsgReleasePorts and MsgBindPorts (message types 384-511 are
//     netfabric's; numbers are never reused). Other domains allocate and release ports inside their
//     own command handlers with AllocatePort and ReleasePorts, so a VM and its
//     NICs commit or fail together, and read with GetNetwork, ListNetworks,
//     PortsOf, PortByMAC and GetPort.
//   - Host (host.go, links.go, nft.go, dhcp.go): a reconciler of one node's
//     network namespace. It owns, by name, a bridge (cairnbr0) holding the
//     network's gateway address, tap devices with a prefix (cvm*), an IPv4
//     nftables table (cairn_nat: masquerade out of the network, replies only
//     in), port security (portsec.go: a bridge table that passes only what
//     a guest's own port may send, and an inet table that keeps guests off
//     the host's ports) and a DHCPv4 server on the bridge that answers only
//     MACs the replicated state knows. Reconcile rebuilds all of it
//     idempotently; Close stops DHCP and leaves the rest so VMs keep
//     networking (and its guards) across an agent restart; Teardown removes
//     everything it owns.
//
// Project networks (overlay.go) are a project's own layer 2: a network row
// with a Project, a VXLAN segment id (VNI) and an MTU; CIDRs may overlap
// across projects. Ports carry the node their VM runs on (BindPorts);
// Segments derives which segments a node carries and where their peers and
// remote ports are, and Host.ReconcileSegments builds them: a bridge with
// no address and a VXLAN device with a static forwarding table per
// segment, owned by name like the rest, whose bridge answers ARP and
// neighbour solicitations for the state's ports itself; segdhcp.go serves
// DHCP there for the node's own ports, and segdns.go DNS on the gateway
// address (the project's VM names, and a forwarder). A VLAN provider network is a project network on
// an 802.1Q VLAN of an interface every node has: its bridge's uplink is a
// VLAN device on that interface instead of a VXLAN device.
//
// secgroups.go, sgtable.go and sgfilter.go are security groups; router.go
// and routerns.go are distributed routers, external networks and floating
// IPs; vip.go holds the cluster's own address on the Raft leader.
//
// subnet6.go and segra.go are IPv6 subnets: addresses from the ports' MACs,
// router advertisements, gateway neighbour answers and DHCPv6 from each
// port's own node; routers route them between a project's networks.
//
// netfabric imports consensus and appliance/identity (projects) only. hypervisor (for ports and taps) and
// appliance (for wiring) import it.
package netfabric
