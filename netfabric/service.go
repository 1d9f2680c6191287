package netfabric

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"regexp"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Cluster is what the network service needs from the consensus node.
type Cluster interface {
	Apply(ctx context.Context, t consensus.MessageType, cmd any, out any) (uint64, error)
	ConsistentRead(ctx context.Context) error
	Store() *consensus.Store
}

// Service is the networks' API: projects' own networks, which their
// members create and delete and their readers see, and the cluster's NAT
// networks (the default network), which every user sees and uses.
type Service struct {
	c  Cluster
	id *identity.Service
}

// NewService returns the network service.
func NewService(c Cluster, id *identity.Service) *Service { return &Service{c: c, id: id} }

// NetworkCreate asks for a project network.
type NetworkCreate struct {
	Name    string   `json:"name"`
	Project string   `json:"project,omitempty"` // name or ID; default: the caller's only project
	CIDR    string   `json:"cidr"`              // IPv4, /16 to /29
	DNS     []string `json:"dns,omitempty"`     // handed out by DHCP (IPv4) and RAs and DHCPv6 (IPv6)
	MTU     int      `json:"mtu,omitempty"`     // default 1450 (a 1500-byte underlay)
	Pools   []Pool   `json:"pools,omitempty"`   // where VMs' addresses come from; default: all
	Routes  []Route  `json:"routes,omitempty"`  // static routes handed out by DHCP
	Domain  string   `json:"domain,omitempty"`  // the DNS domain guests search
	// External makes a cluster admin's external network instead: the
	// uplink on the interface named Interface on every node, with the
	// upstream router at Gateway; Pools are what routers and floating IPs
	// take. It belongs to no project.
	External  bool   `json:"external,omitempty"`
	Interface string `json:"interface,omitempty"`
	Gateway   string `json:"gateway,omitempty"`
	// VLAN makes a project's VLAN provider network instead, on VLAN VLAN
	// of Interface on every node: a cluster admin's call, since it puts
	// the project's VMs on the site's own network. SiteGateway says its
	// Gateway (default: the first address) is the site's router there.
	VLAN        int  `json:"vlan,omitempty"`
	SiteGateway bool `json:"site_gateway,omitempty"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

func invalid(format string, args ...any) error {
	return consensus.Errorf(consensus.CodeInvalid, format, args...)
}

func notFound(kind, ref string) error {
	return consensus.Errorm(consensus.CodeNotFound, "not_found", "%s %q not found", kind, ref)
}

// CreateNetwork creates a project network. Its CIDR may be another
// project's too; within the project it may not overlap another network.
func (s *Service) CreateNetwork(ctx context.Context, p *identity.Principal, req NetworkCreate) (*Network, error) {
	const action = "network.create"
	deny := func(project string, err error) (*Network, error) {
		return nil, s.id.Deny(ctx, p, action, req.Name, project, err)
	}
	if req.External {
		return s.createExternal(ctx, p, req)
	}
	if req.Gateway != "" && !req.SiteGateway {
		return deny("", invalid("only an external network, or a VLAN network with a site gateway, names its gateway; a project network's is its first address"))
	}
	if req.SiteGateway && req.VLAN == 0 {
		return deny("", invalid("only a VLAN network has a site's router as its gateway"))
	}
	if (req.VLAN != 0) != (req.Interface != "") {
		return deny("", invalid("a VLAN network names both its VLAN id and its interface; only an external network names an interface alone"))
	}
	pr, err := s.project(p, req.Project)
	if err != nil {
		return deny("", err)
	}
	if req.VLAN != 0 && !p.IsClusterAdmin() {
		return deny(pr.ID, consensus.Errorf(consensus.CodeForbidden, "only a cluster admin creates VLAN networks: they join the project to the site's own network"))
	}
	if !p.Can(pr.ID, identity.RoleMember) {
		return deny(pr.ID, consensus.Errorf(consensus.CodeForbidden, "not allowed to create networks in project %s", pr.Name))
	}
	if !nameRE.MatchString(req.Name) {
		return deny(pr.ID, consensus.Errorm(consensus.CodeInvalid, "name_rule", "network name %q must be 1-63 letters, digits, dots, dashes or underscores", req.Name))
	}
	// DNS servers of both families come in one list; the network keeps
	// them apart (Network.DNS6).
	var dns4, dns6 []string
	for _, d := range req.DNS {
		if a, err := netip.ParseAddr(d); err == nil && a.Is6() {
			dns6 = append(dns6, d)
		} else {
			dns4 = append(dns4, d)
		}
	}
	if len(dns4) > maxDNS || len(dns6) > maxDNS {
		return deny(pr.ID, invalid("at most %d DNS servers of each kind", maxDNS))
	}
	nw := Network{ID: newID("net"), Name: req.Name, Project: pr.ID, CIDR: req.CIDR, DNS: dns4, DNS6: dns6, MTU: req.MTU,
		Pools: req.Pools, Routes: req.Routes, VLAN: req.VLAN, Interface: req.Interface, Domain: req.Domain,
		Gateway: req.Gateway, SiteGateway: req.SiteGateway, Charged: true, AllocZone: true, CreatedAt: time.Now().UTC()}
	var out Network
	if err := s.id.Mutate(ctx, p, action, req.Name, pr.ID, MsgCreateNetwork, nw, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// createExternal creates an external network: the cluster admin's.
func (s *Service) createExternal(ctx context.Context, p *identity.Principal, req NetworkCreate) (*Network, error) {
	const action = "network.create"
	if !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, req.Name, "", consensus.Errorf(consensus.CodeForbidden, "only a cluster admin creates external networks"))
	}
	if !nameRE.MatchString(req.Name) || req.Name == DefaultNetworkID || generatedID.MatchString(req.Name) {
		return nil, s.id.Deny(ctx, p, action, req.Name, "", invalid("network name %q must be 1-63 letters, digits, dots, dashes or underscores, and not reserved", req.Name))
	}
	if req.Project != "" || len(req.Routes) > 0 || len(req.DNS) > 0 || req.MTU != 0 || req.VLAN != 0 || req.Domain != "" || req.SiteGateway {
		return nil, s.id.Deny(ctx, p, action, req.Name, "", invalid("an external network belongs to no project and has no routes, DNS servers, MTU, VLAN or site gateway of its own"))
	}
	for _, nw := range ListNetworks(s.c.Store().ReadTxn()) {
		if !nw.IsOverlay() && nw.Name == req.Name {
			return nil, s.id.Deny(ctx, p, action, req.Name, "", consensus.Errorm(consensus.CodeAlreadyExists, "cluster_network_exists", "a network named %q already exists", req.Name))
		}
	}
	nw := Network{ID: newID("net"), Name: req.Name, CIDR: req.CIDR, Gateway: req.Gateway, Pools: req.Pools, External: true,
		Interface: req.Interface, CreatedAt: time.Now().UTC()}
	var out Network
	if err := s.id.Mutate(ctx, p, action, req.Name, "", MsgCreateNetwork, nw, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetNetwork returns a network by ID or name: the caller's projects' and
// the cluster's. Another project's network is not found.
func (s *Service) GetNetwork(ctx context.Context, p *identity.Principal, ref string) (*Network, error) {
	nw, err := s.get(p, ref)
	if consensus.ErrorCode(err) != consensus.CodeNotFound {
		return nw, err
	}
	// Created a moment ago through another node?
	if err := s.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	return s.get(p, ref)
}

// LocalNetwork returns a network the caller may see by ID from this node's
// state, or nil: for pages that show many, without a round trip each.
func (s *Service) LocalNetwork(p *identity.Principal, id string) *Network {
	if nw := GetNetwork(s.c.Store().ReadTxn(), id); nw != nil && canRead(p, nw) {
		return nw
	}
	return nil
}

func (s *Service) get(p *identity.Principal, ref string) (*Network, error) {
	txn := s.c.Store().ReadTxn()
	if nw := GetNetwork(txn, ref); nw != nil && canRead(p, nw) {
		return nw, nil
	}
	var found []Network
	for _, nw := range ListNetworks(txn) {
		if nw.Name == ref && canRead(p, &nw) {
			found = append(found, nw)
		}
	}
	switch len(found) {
	case 0:
		return nil, notFound("network", ref)
	case 1:
		return &found[0], nil
	}
	return nil, invalid("%d networks are named %q in your projects: use the network's ID", len(found), ref)
}

// ListNetworks returns the networks the caller can see (of one project, if
// asked, and the cluster's), by project and name.
func (s *Service) ListNetworks(p *identity.Principal, project string) ([]Network, error) {
	pid, err := s.projectFilter(p, project)
	if err != nil {
		return nil, err
	}
	out := []Network{}
	for _, nw := range ListNetworks(s.c.Store().ReadTxn()) {
		if canRead(p, &nw) && (pid == "" || nw.Project == pid || nw.Project == "") {
			out = append(out, nw)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Project != out[j].Project {
			return out[i].Project < out[j].Project
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// SubnetCreate adds an IPv6 subnet to a project network.
type SubnetCreate struct {
	CIDR     string `json:"cidr"`                // a /64
	IPv6Mode string `json:"ipv6_mode,omitempty"` // slaac (default) or dhcpv6
}

// AddSubnet gives a project network its IPv6 subnet; a member of the
// project's may. The network's ports get their addresses at once.
func (s *Service) AddSubnet(ctx context.Context, p *identity.Principal, ref string, req SubnetCreate) (*Network, error) {
	const action = "network.subnet"
	nw, err := s.GetNetwork(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !nw.IsOverlay() {
		return nil, s.id.Deny(ctx, p, action, nw.Name, "", invalid("network %s is the cluster's: only project networks have IPv6 subnets", nw.Name))
	}
	if !p.Can(nw.Project, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, nw.Name, nw.Project, consensus.Errorf(consensus.CodeForbidden, "not allowed to change network %s", nw.Name))
	}
	if nw.IsVLAN() && !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, nw.Name, nw.Project, consensus.Errorf(consensus.CodeForbidden, "only a cluster admin changes VLAN networks"))
	}
	var out Network
	if err := s.id.Mutate(ctx, p, action, nw.Name, nw.Project, MsgAddSubnet6, AddSubnet6Cmd{Network: nw.ID, CIDR: req.CIDR, Mode: req.IPv6Mode}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteNetwork deletes a project network that no port uses any more.
// The cluster's networks are not the projects' to delete.
func (s *Service) DeleteNetwork(ctx context.Context, p *identity.Principal, ref string) (*Network, error) {
	const action = "network.delete"
	nw, err := s.GetNetwork(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if nw.External {
		if !p.IsClusterAdmin() {
			return nil, s.id.Deny(ctx, p, action, nw.Name, "", consensus.Errorf(consensus.CodeForbidden, "only a cluster admin deletes external networks"))
		}
	} else if !nw.IsOverlay() {
		return nil, s.id.Deny(ctx, p, action, nw.Name, "", consensus.Errorf(consensus.CodeForbidden, "network %s is the cluster's, not a project's", nw.Name))
	} else if !p.Can(nw.Project, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, nw.Name, nw.Project, consensus.Errorf(consensus.CodeForbidden, "not allowed to delete network %s", nw.Name))
	} else if nw.IsVLAN() && !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, nw.Name, nw.Project, consensus.Errorf(consensus.CodeForbidden, "only a cluster admin deletes VLAN networks"))
	}
	if err := s.id.Mutate(ctx, p, action, nw.Name, nw.Project, MsgDeleteNetwork, DeleteNetworkCmd{ID: nw.ID}, nil); err != nil {
		return nil, err
	}
	return nw, nil
}

// ListPorts returns a network's ports the caller can see: all of a
// project network's; of the cluster's networks, those of the caller's
// projects (every one for a cluster admin).
func (s *Service) ListPorts(ctx context.Context, p *identity.Principal, networkRef string) ([]Port, error) {
	nw, err := s.GetNetwork(ctx, p, networkRef)
	if err != nil {
		return nil, err
	}
	out := []Port{}
	for _, port := range portsOn(s.c.Store().ReadTxn(), nw.ID) {
		if nw.IsOverlay() || p.Can(port.Project, identity.RoleReader) {
			out = append(out, port)
		}
	}
	return out, nil
}

// canRead: a project's readers see its networks; every user sees the
// cluster's.
func canRead(p *identity.Principal, nw *Network) bool {
	return p != nil && (!nw.IsOverlay() || p.Can(nw.Project, identity.RoleReader))
}

// projectFilter resolves a list's optional project reference to its ID
// ("": every project the caller sees).
func (s *Service) projectFilter(p *identity.Principal, ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	pr, err := s.id.GetProject(p, ref)
	if err != nil {
		return "", err
	}
	return pr.ID, nil
}

// project resolves a project reference the caller acts in.
func (s *Service) project(p *identity.Principal, ref string) (*identity.Project, error) {
	if ref == "" {
		ids := p.ProjectIDs()
		if len(ids) != 1 {
			return nil, invalid("you are in %d projects: say which one", len(ids))
		}
		ref = ids[0]
	}
	return s.id.GetProject(p, ref)
}

func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// Usable finds a network a project's VM may join, by ID or name: the
// project's own networks and the cluster's. Another project's network is
// not found.
func Usable(txn *memdb.Txn, projectID, ref string) (*Network, error) {
	nw := GetNetwork(txn, ref)
	if nw == nil || (nw.Project != "" && nw.Project != projectID) {
		var found []Network
		for _, o := range ListNetworks(txn) {
			if o.Name == ref && (o.Project == "" || o.Project == projectID) {
				found = append(found, o)
			}
		}
		switch len(found) {
		case 0:
			return nil, notFound("network", ref)
		case 1:
			nw = &found[0]
		default:
			return nil, invalid("%d networks are named %q: use the network's ID", len(found), ref)
		}
	}
	if nw.External {
		return nil, invalid("network %s is external: VMs reach it through a router, and are reached from it by floating IPs", nw.Name)
	}
	return nw, nil
}
