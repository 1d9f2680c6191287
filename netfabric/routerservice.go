package netfabric

import (
	"context"
	"net/netip"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// RouterCreate asks for a router.
type RouterCreate struct {
	Name    string `json:"name"`
	Project string `json:"project,omitempty"` // name or ID; default: the caller's only project
}

// RouterView is a router as the API shows it: its networks and external
// network by ID and name, and its address on the external network on each
// node that runs it.
type RouterView struct {
	Router
	NetworkNames   []string          `json:"network_names,omitempty"`
	ExternalName   string            `json:"external_network_name,omitempty"`
	GatewayAddress map[string]string `json:"gateway_addresses,omitempty"` // node -> address
}

// RouterInterface names a network to connect to a router.
type RouterInterface struct {
	Network string `json:"network"` // ID or name
}

// RouterGateway names the external network of a router's gateway ("": none).
type RouterGateway struct {
	Network string `json:"network"`
}

// FloatingIPCreate asks for a floating IP.
type FloatingIPCreate struct {
	Project string `json:"project,omitempty"`
	Network string `json:"network"`           // the external network, ID or name
	IP      string `json:"ip,omitempty"`      // a particular address of it; default: the next free
	Port    string `json:"port_id,omitempty"` // give it to this port at once
}

// FloatingIPAssociate names the port to give a floating IP to.
type FloatingIPAssociate struct {
	Port string `json:"port_id"`
}

// FloatingIPView is a floating IP with where it leads.
type FloatingIPView struct {
	FloatingIP
	FixedIP string `json:"fixed_ip,omitempty"` // the port's address
	Owner   string `json:"owner,omitempty"`    // the port's VM
	Node    string `json:"node,omitempty"`     // where it is answered now
}

func (s *Service) routerView(r Router) RouterView {
	txn := s.c.Store().ReadTxn()
	v := RouterView{Router: r, GatewayAddress: RouterAddresses(txn, r.ID)}
	for _, id := range r.Networks {
		if nw := GetNetwork(txn, id); nw != nil {
			v.NetworkNames = append(v.NetworkNames, nw.Name)
		}
	}
	if ext := GetNetwork(txn, r.External); ext != nil {
		v.ExternalName = ext.Name
	}
	return v
}

// ListRouters returns the routers of the caller's projects (of one, if
// asked), by project and name.
func (s *Service) ListRouters(p *identity.Principal, project string) ([]RouterView, error) {
	pid, err := s.projectFilter(p, project)
	if err != nil {
		return nil, err
	}
	out := []RouterView{}
	for _, r := range ListRouters(s.c.Store().ReadTxn()) {
		if p.Can(r.Project, identity.RoleReader) && (pid == "" || r.Project == pid) {
			out = append(out, s.routerView(r))
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

// GetRouter returns a router of the caller's projects, by ID or name.
func (s *Service) GetRouter(ctx context.Context, p *identity.Principal, ref string) (*RouterView, error) {
	r, err := s.router(p, ref)
	if consensus.ErrorCode(err) == consensus.CodeNotFound {
		if err := s.c.ConsistentRead(ctx); err != nil {
			return nil, err
		}
		r, err = s.router(p, ref)
	}
	if err != nil {
		return nil, err
	}
	v := s.routerView(*r)
	return &v, nil
}

func (s *Service) router(p *identity.Principal, ref string) (*Router, error) {
	txn := s.c.Store().ReadTxn()
	if r := GetRouter(txn, ref); r != nil && p.Can(r.Project, identity.RoleReader) {
		return r, nil
	}
	var found []Router
	for _, r := range ListRouters(txn) {
		if r.Name == ref && p.Can(r.Project, identity.RoleReader) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 0:
		return nil, notFound("router", ref)
	case 1:
		return &found[0], nil
	}
	return nil, invalid("%d routers are named %q in your projects: use the router's ID", len(found), ref)
}

// CreateRouter creates a router in a project, counted in its routers quota.
func (s *Service) CreateRouter(ctx context.Context, p *identity.Principal, req RouterCreate) (*RouterView, error) {
	const action = "router.create"
	pr, err := s.project(p, req.Project)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, req.Name, "", err)
	}
	if !p.Can(pr.ID, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, req.Name, pr.ID, consensus.Errorf(consensus.CodeForbidden, "not allowed to create routers in project %s", pr.Name))
	}
	if !nameRE.MatchString(req.Name) {
		return nil, s.id.Deny(ctx, p, action, req.Name, pr.ID, consensus.Errorm(consensus.CodeInvalid, "name_rule", "router name %q must be 1-63 letters, digits, dots, dashes or underscores", req.Name))
	}
	var out Router
	cmd := Router{ID: "rtr-" + randomHex(8), Name: req.Name, Project: pr.ID, Charged: true, CreatedAt: time.Now().UTC()}
	if err := s.id.Mutate(ctx, p, action, req.Name, pr.ID, MsgCreateRouter, cmd, &out); err != nil {
		return nil, err
	}
	v := s.routerView(out)
	return &v, nil
}

// writableRouter finds a router the caller may change.
func (s *Service) writableRouter(ctx context.Context, p *identity.Principal, action, ref string) (*Router, error) {
	v, err := s.GetRouter(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !p.Can(v.Project, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, v.Name, v.Project, consensus.Errorf(consensus.CodeForbidden, "not allowed to change router %s", v.Name))
	}
	return &v.Router, nil
}

// DeleteRouter deletes a router that connects no network any more.
func (s *Service) DeleteRouter(ctx context.Context, p *identity.Principal, ref string) (*RouterView, error) {
	const action = "router.delete"
	r, err := s.writableRouter(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	v := s.routerView(*r)
	if err := s.id.Mutate(ctx, p, action, r.Name, r.Project, MsgDeleteRouter, RouterIDCmd{ID: r.ID}, nil); err != nil {
		return nil, err
	}
	return &v, nil
}

// SetRouterInterface connects a project network to a router, or takes it
// off (remove).
func (s *Service) SetRouterInterface(ctx context.Context, p *identity.Principal, ref, network string, remove bool) (*RouterView, error) {
	action := "router.add_interface"
	if remove {
		action = "router.remove_interface"
	}
	r, err := s.writableRouter(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	nw, err := s.GetNetwork(ctx, p, network)
	if err != nil || nw.Project != r.Project {
		if err == nil {
			err = notFound("network", network)
		}
		return nil, s.id.Deny(ctx, p, action, r.Name, r.Project, err)
	}
	// A router on a VLAN network routes the site's network into the
	// project's others (and out through floating IPs): the cluster admin's
	// call, as the network itself is.
	if nw.IsVLAN() && !p.IsClusterAdmin() {
		return nil, s.id.Deny(ctx, p, action, r.Name, r.Project, consensus.Errorf(consensus.CodeForbidden,
			"only a cluster admin connects a router to a VLAN network"))
	}
	var out Router
	if err := s.id.Mutate(ctx, p, action, r.Name, r.Project, MsgRouterInterface, RouterInterfaceCmd{Router: r.ID, Network: nw.ID, Remove: remove}, &out); err != nil {
		return nil, err
	}
	v := s.routerView(out)
	return &v, nil
}

// SetRouterGateway puts a router's gateway on an external network, or
// takes it off ("").
func (s *Service) SetRouterGateway(ctx context.Context, p *identity.Principal, ref, network string) (*RouterView, error) {
	const action = "router.set_gateway"
	r, err := s.writableRouter(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	extID := ""
	if network != "" {
		ext, err := s.GetNetwork(ctx, p, network)
		if err == nil && !ext.External {
			err = invalid("network %s is not an external network", ext.Name)
		}
		if err != nil {
			return nil, s.id.Deny(ctx, p, action, r.Name, r.Project, err)
		}
		extID = ext.ID
	}
	var out Router
	if err := s.id.Mutate(ctx, p, action, r.Name, r.Project, MsgSetRouterGateway, RouterGatewayCmd{Router: r.ID, Network: extID}, &out); err != nil {
		return nil, err
	}
	v := s.routerView(out)
	return &v, nil
}

func (s *Service) floatingView(f FloatingIP) FloatingIPView {
	v := FloatingIPView{FloatingIP: f}
	if port := GetPort(s.c.Store().ReadTxn(), f.PortID); port != nil {
		v.FixedIP, v.Owner, v.Node = port.IP, port.Owner, port.Node
	}
	return v
}

// ListFloatingIPs returns the floating IPs of the caller's projects (of
// one, if asked), by address.
func (s *Service) ListFloatingIPs(p *identity.Principal, project string) ([]FloatingIPView, error) {
	pid, err := s.projectFilter(p, project)
	if err != nil {
		return nil, err
	}
	out := []FloatingIPView{}
	for _, f := range ListFloatingIPs(s.c.Store().ReadTxn()) {
		if p.Can(f.Project, identity.RoleReader) && (pid == "" || f.Project == pid) {
			out = append(out, s.floatingView(f))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParseAddr(out[i].IP)
		b, _ := netip.ParseAddr(out[j].IP)
		return a.Less(b)
	})
	return out, nil
}

// GetFloatingIP returns a floating IP of the caller's projects, by ID or
// address.
func (s *Service) GetFloatingIP(ctx context.Context, p *identity.Principal, ref string) (*FloatingIPView, error) {
	get := func() *FloatingIP {
		for _, f := range ListFloatingIPs(s.c.Store().ReadTxn()) {
			if (f.ID == ref || f.IP == ref) && p.Can(f.Project, identity.RoleReader) {
				return &f
			}
		}
		return nil
	}
	f := get()
	if f == nil {
		if err := s.c.ConsistentRead(ctx); err != nil {
			return nil, err
		}
		if f = get(); f == nil {
			return nil, notFound("floating IP", ref)
		}
	}
	v := s.floatingView(*f)
	return &v, nil
}

// CreateFloatingIP takes an address of an external network for a
// project, counted in its floating IPs quota, and gives it to a port if
// asked (both or neither).
func (s *Service) CreateFloatingIP(ctx context.Context, p *identity.Principal, req FloatingIPCreate) (*FloatingIPView, error) {
	const action = "floating_ip.create"
	pr, err := s.project(p, req.Project)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, req.Network, "", err)
	}
	if !p.Can(pr.ID, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, req.Network, pr.ID, consensus.Errorf(consensus.CodeForbidden, "not allowed to take floating IPs for project %s", pr.Name))
	}
	ext, err := s.GetNetwork(ctx, p, req.Network)
	if err == nil && !ext.External {
		err = invalid("network %s is not an external network: floating IPs come from one", ext.Name)
	}
	if err == nil && req.IP != "" && !p.IsClusterAdmin() {
		// As in Neutron: which address is the admin's call.
		err = consensus.Errorf(consensus.CodeForbidden, "only a cluster admin chooses a floating IP's address")
	}
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, req.Network, pr.ID, err)
	}
	var out FloatingIP
	cmd := FloatingIP{ID: "fip-" + randomHex(8), Project: pr.ID, NetworkID: ext.ID, IP: req.IP, Charged: true, CreatedAt: time.Now().UTC()}
	if err := s.id.Mutate(ctx, p, action, ext.Name, pr.ID, MsgCreateFloatingIP, cmd, &out); err != nil {
		return nil, err
	}
	if req.Port != "" {
		v, err := s.AssociateFloatingIP(ctx, p, out.ID, req.Port)
		if err == nil {
			return v, nil
		}
		if code := consensus.ErrorCode(err); code == "" || code == consensus.CodeUnavailable {
			// Outcome unknown: look before undoing anything. Given after
			// all, it stands; else the address stays the project's,
			// unassociated, for the caller to see and give or delete.
			if rerr := s.c.ConsistentRead(ctx); rerr == nil {
				if f := GetFloatingIP(s.c.Store().ReadTxn(), out.ID); f != nil && f.PortID == req.Port {
					v := s.floatingView(*f)
					return &v, nil
				}
			}
			return nil, err
		}
		// Refused: not half done, the address goes back.
		if _, derr := s.DeleteFloatingIP(ctx, p, out.ID); derr != nil {
			return nil, derr
		}
		return nil, err
	}
	v := s.floatingView(out)
	return &v, nil
}

// DeleteFloatingIP gives a floating IP back to its external network.
func (s *Service) DeleteFloatingIP(ctx context.Context, p *identity.Principal, ref string) (*FloatingIPView, error) {
	const action = "floating_ip.delete"
	f, err := s.writableFloating(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	if err := s.id.Mutate(ctx, p, action, f.IP, f.Project, MsgDeleteFloatingIP, RouterIDCmd{ID: f.ID}, nil); err != nil {
		return nil, err
	}
	return f, nil
}

func (s *Service) writableFloating(ctx context.Context, p *identity.Principal, action, ref string) (*FloatingIPView, error) {
	f, err := s.GetFloatingIP(ctx, p, ref)
	if err != nil {
		return nil, s.id.Deny(ctx, p, action, ref, "", err)
	}
	if !p.Can(f.Project, identity.RoleMember) {
		return nil, s.id.Deny(ctx, p, action, f.IP, f.Project, consensus.Errorf(consensus.CodeForbidden, "not allowed to change floating IP %s", f.IP))
	}
	return f, nil
}

// AssociateFloatingIP gives a floating IP to a port of the project ("":
// takes it back). The port's network must be on a router whose gateway
// is on the floating IP's network.
func (s *Service) AssociateFloatingIP(ctx context.Context, p *identity.Principal, ref, port string) (*FloatingIPView, error) {
	action := "floating_ip.associate"
	if port == "" {
		action = "floating_ip.disassociate"
	}
	f, err := s.writableFloating(ctx, p, action, ref)
	if err != nil {
		return nil, err
	}
	var out FloatingIP
	if err := s.id.Mutate(ctx, p, action, f.IP, f.Project, MsgAssociateFloatingIP, AssociateCmd{ID: f.ID, PortID: port}, &out); err != nil {
		return nil, err
	}
	v := s.floatingView(out)
	return &v, nil
}
