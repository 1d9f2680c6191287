package api

import (
	"net/http"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
)

// networkRoutes are networks': a project's readers see its networks and
// every user the cluster's (the default network); a project's members
// create and delete its networks.
func (s *Server) networkRoutes() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "GET", Path: v1 + "/networks", Summary: "Networks you can see: your projects' (optionally of one project) and the cluster's", Tag: "networks",
			Response: []netfabric.Network{}, Query: []string{"project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				ns, err := s.networks.ListNetworks(p, r.URL.Query().Get("project"))
				return ok(w, ns, 0, err)
			}},
		{Method: "POST", Path: v1 + "/networks", Summary: "Create a project network: a private layer 2 across the nodes (VXLAN, or a VLAN of the site's network for a cluster admin) with an IPv4 subnet served by DHCP", Tag: "networks",
			Request: netfabric.NetworkCreate{}, Response: netfabric.Network{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.NetworkCreate
				if err := decode(r, &body); err != nil {
					return err
				}
				nw, err := s.networks.CreateNetwork(r.Context(), p, body)
				return created(w, nw, 0, err)
			}},
		{Method: "GET", Path: v1 + "/networks/{network}", Summary: "A network, by ID or name", Tag: "networks",
			Response: netfabric.Network{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				nw, err := s.networks.GetNetwork(r.Context(), p, r.PathValue("network"))
				return ok(w, nw, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/networks/{network}", Summary: "Delete a project network no VM uses any more", Tag: "networks",
			Response: netfabric.Network{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				nw, err := s.networks.DeleteNetwork(r.Context(), p, r.PathValue("network"))
				return ok(w, nw, 0, err)
			}},
		{Method: "POST", Path: v1 + "/networks/{network}/subnets", Summary: "Give a project network its IPv6 subnet (a /64; SLAAC or DHCPv6): its VMs get addresses from router advertisements", Tag: "networks",
			Request: netfabric.SubnetCreate{}, Response: netfabric.Network{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.SubnetCreate
				if err := decode(r, &body); err != nil {
					return err
				}
				nw, err := s.networks.AddSubnet(r.Context(), p, r.PathValue("network"), body)
				return ok(w, nw, 0, err)
			}},
		{Method: "GET", Path: v1 + "/networks/{network}/ports", Summary: "A network's ports you can see: MAC, address, VM and node", Tag: "networks",
			Response: []netfabric.Port{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				ps, err := s.networks.ListPorts(r.Context(), p, r.PathValue("network"))
				return ok(w, ps, 0, err)
			}},
		{Method: "GET", Path: v1 + "/ports/{port}", Summary: "A port of your projects' VMs: network, MAC, address, node, security groups", Tag: "networks",
			Response: netfabric.Port{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				port, err := s.networks.GetPort(r.Context(), p, r.PathValue("port"))
				return ok(w, port, 0, err)
			}},
		{Method: "PATCH", Path: v1 + "/ports/{port}", Summary: "Change a project network port's security groups or allowed address pairs (running VMs follow within a second)", Tag: "networks",
			Request: netfabric.PortUpdate{}, Response: netfabric.Port{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.PortUpdate
				if err := decode(r, &body); err != nil {
					return err
				}
				port, err := s.networks.UpdatePort(r.Context(), p, r.PathValue("port"), body)
				return ok(w, port, 0, err)
			}},
		{Method: "GET", Path: v1 + "/security-groups", Summary: "Security groups of your projects (optionally of one), each project's default group included", Tag: "networks",
			Response: []netfabric.SecurityGroup{}, Query: []string{"project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				gs, err := s.networks.ListSecurityGroups(p, r.URL.Query().Get("project"))
				return ok(w, gs, 0, err)
			}},
		{Method: "POST", Path: v1 + "/security-groups", Summary: "Create a security group: stateful rules for the ports in it", Tag: "networks",
			Request: netfabric.SecurityGroupCreate{}, Response: netfabric.SecurityGroup{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.SecurityGroupCreate
				if err := decode(r, &body); err != nil {
					return err
				}
				g, err := s.networks.CreateSecurityGroup(r.Context(), p, body)
				return created(w, g, 0, err)
			}},
		{Method: "GET", Path: v1 + "/security-groups/{group}", Summary: "A security group and its rules, by ID or name", Tag: "networks",
			Response: netfabric.SecurityGroup{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				g, err := s.networks.GetSecurityGroup(r.Context(), p, r.PathValue("group"))
				return ok(w, g, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/security-groups/{group}", Summary: "Delete a security group no port and no rule uses (not a project's default group)", Tag: "networks",
			Response: netfabric.SecurityGroup{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				g, err := s.networks.DeleteSecurityGroup(r.Context(), p, r.PathValue("group"))
				return ok(w, g, 0, err)
			}},
		{Method: "POST", Path: v1 + "/security-groups/{group}/rules", Summary: "Add a rule to a security group (running VMs follow within a second)", Tag: "networks",
			Request: netfabric.Rule{}, Response: netfabric.SecurityGroup{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.Rule
				if err := decode(r, &body); err != nil {
					return err
				}
				g, err := s.networks.AddRule(r.Context(), p, r.PathValue("group"), body)
				return created(w, g, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/security-groups/{group}/rules/{rule}", Summary: "Delete a rule of a security group; connections it allowed are cut", Tag: "networks",
			Response: netfabric.SecurityGroup{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				g, err := s.networks.DeleteRule(r.Context(), p, r.PathValue("group"), r.PathValue("rule"))
				return ok(w, g, 0, err)
			}},
	}
}

// routerRoutes are routers' and floating IPs': a project's readers see
// them, its members change them.
func (s *Server) routerRoutes() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "GET", Path: v1 + "/routers", Summary: "Routers of your projects (optionally of one), with their networks and gateway addresses", Tag: "networks",
			Response: []netfabric.RouterView{}, Query: []string{"project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				rs, err := s.networks.ListRouters(p, r.URL.Query().Get("project"))
				return ok(w, rs, 0, err)
			}},
		{Method: "POST", Path: v1 + "/routers", Summary: "Create a router: it connects a project's networks to each other and, through a gateway, to an external network", Tag: "networks",
			Request: netfabric.RouterCreate{}, Response: netfabric.RouterView{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.RouterCreate
				if err := decode(r, &body); err != nil {
					return err
				}
				rt, err := s.networks.CreateRouter(r.Context(), p, body)
				return created(w, rt, 0, err)
			}},
		{Method: "GET", Path: v1 + "/routers/{router}", Summary: "A router, by ID or name", Tag: "networks",
			Response: netfabric.RouterView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				rt, err := s.networks.GetRouter(r.Context(), p, r.PathValue("router"))
				return ok(w, rt, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/routers/{router}", Summary: "Delete a router that connects no network any more", Tag: "networks",
			Response: netfabric.RouterView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				rt, err := s.networks.DeleteRouter(r.Context(), p, r.PathValue("router"))
				return ok(w, rt, 0, err)
			}},
		{Method: "POST", Path: v1 + "/routers/{router}/interfaces", Summary: "Connect one of the project's networks to the router (its gateway address becomes the router's)", Tag: "networks",
			Request: netfabric.RouterInterface{}, Response: netfabric.RouterView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.RouterInterface
				if err := decode(r, &body); err != nil {
					return err
				}
				rt, err := s.networks.SetRouterInterface(r.Context(), p, r.PathValue("router"), body.Network, false)
				return ok(w, rt, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/routers/{router}/interfaces/{network}", Summary: "Take a network off the router", Tag: "networks",
			Response: netfabric.RouterView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				rt, err := s.networks.SetRouterInterface(r.Context(), p, r.PathValue("router"), r.PathValue("network"), true)
				return ok(w, rt, 0, err)
			}},
		{Method: "PUT", Path: v1 + "/routers/{router}/gateway", Summary: "Put the router's gateway on an external network (empty: take it off); its networks' VMs go out through it (SNAT)", Tag: "networks",
			Request: netfabric.RouterGateway{}, Response: netfabric.RouterView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.RouterGateway
				if err := decode(r, &body); err != nil {
					return err
				}
				rt, err := s.networks.SetRouterGateway(r.Context(), p, r.PathValue("router"), body.Network)
				return ok(w, rt, 0, err)
			}},
		{Method: "GET", Path: v1 + "/floating-ips", Summary: "Floating IPs of your projects (optionally of one), with the port and node each leads to", Tag: "networks",
			Response: []netfabric.FloatingIPView{}, Query: []string{"project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				fs, err := s.networks.ListFloatingIPs(p, r.URL.Query().Get("project"))
				return ok(w, fs, 0, err)
			}},
		{Method: "POST", Path: v1 + "/floating-ips", Summary: "Take a floating IP from an external network (and give it to a port)", Tag: "networks",
			Request: netfabric.FloatingIPCreate{}, Response: netfabric.FloatingIPView{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.FloatingIPCreate
				if err := decode(r, &body); err != nil {
					return err
				}
				f, err := s.networks.CreateFloatingIP(r.Context(), p, body)
				return created(w, f, 0, err)
			}},
		{Method: "GET", Path: v1 + "/floating-ips/{fip}", Summary: "A floating IP, by ID or address", Tag: "networks",
			Response: netfabric.FloatingIPView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				f, err := s.networks.GetFloatingIP(r.Context(), p, r.PathValue("fip"))
				return ok(w, f, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/floating-ips/{fip}", Summary: "Give a floating IP back", Tag: "networks",
			Response: netfabric.FloatingIPView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				f, err := s.networks.DeleteFloatingIP(r.Context(), p, r.PathValue("fip"))
				return ok(w, f, 0, err)
			}},
		{Method: "PUT", Path: v1 + "/floating-ips/{fip}/port", Summary: "Give a floating IP to a port: the box the port's VM runs on answers for it and announces it", Tag: "networks",
			Request: netfabric.FloatingIPAssociate{}, Response: netfabric.FloatingIPView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.FloatingIPAssociate
				if err := decode(r, &body); err != nil {
					return err
				}
				if body.Port == "" {
					return consensus.Errorf(consensus.CodeInvalid, "name the port (port_id); DELETE takes the floating IP back")
				}
				f, err := s.networks.AssociateFloatingIP(r.Context(), p, r.PathValue("fip"), body.Port)
				return ok(w, f, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/floating-ips/{fip}/port", Summary: "Take a floating IP back from its port", Tag: "networks",
			Response: netfabric.FloatingIPView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				f, err := s.networks.AssociateFloatingIP(r.Context(), p, r.PathValue("fip"), "")
				return ok(w, f, 0, err)
			}},
	}
}
