package cli

import (
	"flag"
	"fmt"
	"net/url"
	"strings"

	"github.com/cairnhq/cairn/netfabric"
)

// networkCommands are the network and port nouns; merged into commands.
var networkCommands = map[string]command{
	"network list": {usage: "[--project PROJECT]", help: "networks you can see: your projects' and the cluster's", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project's networks (and the cluster's)")
		return func(e *env, args []string) error {
			path := "/api/v1/networks"
			if *project != "" {
				path += "?project=" + url.QueryEscape(*project)
			}
			var ns []netfabric.Network
			if err := get(e, path, &ns); err != nil {
				return err
			}
			return e.print(ns, []string{"NAME", "CIDR", "KIND", "PROJECT", "ID"}, func(i int) []string {
				n := ns[i]
				return []string{n.Name, n.CIDR, networkKind(&n), n.Project, n.ID}
			}, len(ns))
		}
	}},
	"network create": {usage: "NAME --cidr CIDR [--dns IP,...] [--mtu N] [--pool START-END]... [--route DEST,NEXTHOP]... [--domain D] [--project P] [--vlan ID --interface IFACE [--site-gateway [--gateway IP]]] | NAME --external --interface IFACE --cidr CIDR [--gateway IP] [--pool START-END]...", help: "create a project network: a private layer 2 across the nodes with DHCP (with --vlan, cluster admin: on a VLAN of the site's network instead); or (cluster admin) an external network on an interface every node has", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var req netfabric.NetworkCreate
		fs.BoolVar(&req.External, "external", false, "an external network (cluster admin): the uplink routers and floating IPs use")
		fs.StringVar(&req.Interface, "interface", "", "external or VLAN network: the interface it is on, on every node (e.g. eth1)")
		fs.IntVar(&req.VLAN, "vlan", 0, "a VLAN network (cluster admin): the project's VMs join 802.1Q VLAN ID (1-4094) of --interface")
		fs.StringVar(&req.Gateway, "gateway", "", "external network, or VLAN network with --site-gateway: the upstream router's address (default: the first host)")
		fs.BoolVar(&req.SiteGateway, "site-gateway", false, "VLAN network: its gateway is the site's own router on the VLAN (DHCP hands it out; no Cairn router, DNS or IPv6 of Cairn's there)")
		fs.StringVar(&req.CIDR, "cidr", "", "IPv4 subnet, /16 to /29, e.g. 10.50.0.0/24 (other projects may use the same)")
		dns := fs.String("dns", "", "DNS servers DHCP hands out, comma-separated")
		fs.IntVar(&req.MTU, "mtu", 0, "the guests' MTU (default 1450, for a 1500-byte network between the nodes; 1500 on a VLAN)")
		fs.StringVar(&req.Project, "project", "", "project (default: your only project)")
		fs.StringVar(&req.Domain, "domain", "", "the DNS domain the VMs search, e.g. ward.example.org")
		var pools, routes stringList
		fs.Var(&pools, "pool", "an allocation pool START-END for VMs' addresses (repeatable; default: the whole subnet)")
		fs.Var(&routes, "route", "a static route DEST,NEXTHOP handed out by DHCP (repeatable), e.g. 10.60.0.0/16,10.50.0.254")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a network name"); err != nil {
				return err
			}
			for _, p := range pools {
				a, b, ok := strings.Cut(p, "-")
				if !ok {
					return usageError("--pool " + p + ": give START-END")
				}
				req.Pools = append(req.Pools, netfabric.Pool{Start: a, End: b})
			}
			for _, r := range routes {
				d, nh, ok := strings.Cut(r, ",")
				if !ok {
					return usageError("--route " + r + ": give DEST,NEXTHOP")
				}
				req.Routes = append(req.Routes, netfabric.Route{Destination: d, Nexthop: nh})
			}
			if req.CIDR == "" {
				return usageError("--cidr CIDR is required")
			}
			req.Name = args[0]
			if *dns != "" {
				req.DNS = strings.Split(*dns, ",")
			}
			var n netfabric.Network
			if err := send(e, "POST", "/api/v1/networks", req, &n); err != nil {
				return err
			}
			return printNetwork(e, &n)
		}
	}},
	"subnet create": {usage: "NETWORK --cidr PREFIX/64 [--ipv6-mode slaac|dhcpv6]", help: "give a project network its IPv6 subnet: its VMs get addresses from router advertisements (SLAAC) or DHCPv6", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var req netfabric.SubnetCreate
		fs.StringVar(&req.CIDR, "cidr", "", "an IPv6 /64, e.g. fd00:50::/64")
		fs.StringVar(&req.IPv6Mode, "ipv6-mode", "slaac", "how VMs get their addresses: slaac or dhcpv6 (either way the address is the prefix and the VM's MAC)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a network"); err != nil {
				return err
			}
			if req.CIDR == "" {
				return usageError("--cidr PREFIX/64 is required")
			}
			var n netfabric.Network
			if err := send(e, "POST", "/api/v1/networks/"+url.PathEscape(args[0])+"/subnets", req, &n); err != nil {
				return err
			}
			return printNetwork(e, &n)
		}
	}},
	"network show": {usage: "NETWORK", help: "one network", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one network"); err != nil {
			return err
		}
		var n netfabric.Network
		if err := get(e, "/api/v1/networks/"+url.PathEscape(args[0]), &n); err != nil {
			return err
		}
		return printNetwork(e, &n)
	})},
	"network delete": {usage: "NETWORK", help: "delete a project network no VM uses any more", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one network"); err != nil {
			return err
		}
		var n netfabric.Network
		if err := send(e, "DELETE", "/api/v1/networks/"+url.PathEscape(args[0]), nil, &n); err != nil {
			return err
		}
		return printNetwork(e, &n)
	})},
	"port list": {usage: "--network NETWORK", help: "a network's ports: MAC, address, VM and node", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		network := fs.String("network", "", "the network")
		return func(e *env, args []string) error {
			if *network == "" {
				return usageError("--network NETWORK is required")
			}
			var ps []netfabric.Port
			if err := get(e, "/api/v1/networks/"+url.PathEscape(*network)+"/ports", &ps); err != nil {
				return err
			}
			return e.print(ps, []string{"ID", "MAC", "IP", "IPV6", "VM", "NODE", "SECURITY GROUPS"}, func(i int) []string {
				p := ps[i]
				return []string{p.ID, p.MAC, p.IP, p.IP6, p.Owner, p.Node, strings.Join(p.SecurityGroups, ",")}
			}, len(ps))
		}
	}},
	"port show": {usage: "PORT", help: "one port of your projects' VMs", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one port"); err != nil {
			return err
		}
		var p netfabric.Port
		if err := get(e, "/api/v1/ports/"+url.PathEscape(args[0]), &p); err != nil {
			return err
		}
		return printPort(e, &p)
	})},
	"port set": {usage: "PORT [--security-group G]... [--no-security-group-change] [--allowed-address IP[,MAC]]... [--no-allowed-addresses]", help: "change a project network port's security groups or allowed address pairs (a running VM follows at once)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var groups, pairs stringList
		fs.Var(&groups, "security-group", "the port's security groups, replacing its current ones (repeatable)")
		fs.Var(&pairs, "allowed-address", "an address (and MAC) the port may also send as, e.g. for VRRP; replaces the current list (repeatable)")
		noPairs := fs.Bool("no-allowed-addresses", false, "remove every allowed address pair")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one port"); err != nil {
				return err
			}
			var req netfabric.PortUpdate
			if len(groups) > 0 {
				g := []string(groups)
				req.SecurityGroups = &g
			}
			if len(pairs) > 0 || *noPairs {
				aps := []netfabric.AddressPair{}
				for _, s := range pairs {
					ip, mac, _ := strings.Cut(s, ",")
					aps = append(aps, netfabric.AddressPair{IP: ip, MAC: mac})
				}
				req.AddressPairs = &aps
			}
			if req.SecurityGroups == nil && req.AddressPairs == nil {
				return usageError("nothing to change: give --security-group, --allowed-address or --no-allowed-addresses")
			}
			var p netfabric.Port
			if err := send(e, "PATCH", "/api/v1/ports/"+url.PathEscape(args[0]), req, &p); err != nil {
				return err
			}
			return printPort(e, &p)
		}
	}},
	"security-group list": {usage: "[--project PROJECT]", help: "security groups of your projects, each project's default group included", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project's groups")
		return func(e *env, args []string) error {
			path := "/api/v1/security-groups"
			if *project != "" {
				path += "?project=" + url.QueryEscape(*project)
			}
			var gs []netfabric.SecurityGroup
			if err := get(e, path, &gs); err != nil {
				return err
			}
			return e.print(gs, []string{"NAME", "RULES", "PROJECT", "ID"}, func(i int) []string {
				g := gs[i]
				return []string{g.Name, fmt.Sprint(len(g.Rules)), g.Project, g.ID}
			}, len(gs))
		}
	}},
	"security-group create": {usage: "NAME [--description TEXT] [--project P]", help: "create a security group (it allows nothing until rules are added)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var req netfabric.SecurityGroupCreate
		fs.StringVar(&req.Description, "description", "", "what the group is for")
		fs.StringVar(&req.Project, "project", "", "project (default: your only project)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a group name"); err != nil {
				return err
			}
			req.Name = args[0]
			var g netfabric.SecurityGroup
			if err := send(e, "POST", "/api/v1/security-groups", req, &g); err != nil {
				return err
			}
			return printGroup(e, &g)
		}
	}},
	"security-group show": {usage: "GROUP", help: "a security group and its rules", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one group"); err != nil {
			return err
		}
		var g netfabric.SecurityGroup
		if err := get(e, "/api/v1/security-groups/"+url.PathEscape(args[0]), &g); err != nil {
			return err
		}
		return printGroup(e, &g)
	})},
	"security-group delete": {usage: "GROUP", help: "delete a security group no port and no rule uses", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one group"); err != nil {
			return err
		}
		var g netfabric.SecurityGroup
		if err := send(e, "DELETE", "/api/v1/security-groups/"+url.PathEscape(args[0]), nil, &g); err != nil {
			return err
		}
		return printGroup(e, &g)
	})},
	"security-group rule add": {usage: "GROUP --direction ingress|egress [--ethertype IPv4|IPv6] [--protocol P] [--port N[-M]] [--icmp-type T [--icmp-code C]] [--remote-cidr CIDR | --remote-group G]", help: "allow a kind of traffic into or out of the group's ports (running VMs follow at once)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var r netfabric.Rule
		fs.StringVar(&r.Direction, "direction", "", "ingress (to the ports) or egress (from them)")
		fs.StringVar(&r.EtherType, "ethertype", "IPv4", "IPv4 or IPv6")
		fs.StringVar(&r.Protocol, "protocol", "", "tcp, udp, icmp, icmpv6, sctp, ... or a number (default: any)")
		ports := fs.String("port", "", "destination port or range N-M (tcp, udp, sctp)")
		icmpType := fs.Int("icmp-type", -1, "ICMP type (icmp, icmpv6)")
		icmpCode := fs.Int("icmp-code", -1, "ICMP code (with --icmp-type)")
		fs.StringVar(&r.RemoteCIDR, "remote-cidr", "", "the other end's addresses (default: anywhere)")
		fs.StringVar(&r.RemoteGroup, "remote-group", "", "the other end: the ports of this group of the project")
		fs.StringVar(&r.Description, "description", "", "what the rule is for")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one group"); err != nil {
				return err
			}
			if r.Direction == "" {
				return usageError("--direction ingress|egress is required")
			}
			if *ports != "" {
				lo, hi, _ := strings.Cut(*ports, "-")
				if _, err := fmt.Sscan(lo, &r.PortMin); err != nil {
					return usageError("--port " + *ports + ": give N or N-M")
				}
				if hi != "" {
					if _, err := fmt.Sscan(hi, &r.PortMax); err != nil {
						return usageError("--port " + *ports + ": give N or N-M")
					}
				}
			}
			if *icmpType >= 0 {
				r.ICMPType = icmpType
			}
			if *icmpCode >= 0 {
				r.ICMPCode = icmpCode
			}
			var g netfabric.SecurityGroup
			if err := send(e, "POST", "/api/v1/security-groups/"+url.PathEscape(args[0])+"/rules", r, &g); err != nil {
				return err
			}
			return printGroup(e, &g)
		}
	}},
	"security-group rule delete": {usage: "GROUP RULE", help: "delete a rule; the connections it allowed are cut", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a group and a rule ID"); err != nil {
			return err
		}
		var g netfabric.SecurityGroup
		if err := send(e, "DELETE", "/api/v1/security-groups/"+url.PathEscape(args[0])+"/rules/"+url.PathEscape(args[1]), nil, &g); err != nil {
			return err
		}
		return printGroup(e, &g)
	})},
}

func printPort(e *env, p *netfabric.Port) error {
	var pairs []string
	for _, ap := range p.AddressPairs {
		pairs = append(pairs, strings.TrimSuffix(ap.IP+" "+ap.MAC, " "))
	}
	return e.printKV(p, [][2]string{{"id", p.ID}, {"network", p.NetworkID}, {"vm", p.Owner}, {"project", p.Project}, {"mac", p.MAC}, {"ip", p.IP},
		{"ipv6", p.IP6}, {"node", p.Node}, {"security groups", strings.Join(p.SecurityGroups, ", ")}, {"allowed addresses", strings.Join(pairs, ", ")}})
}

// ruleText is a rule in one line, as people read a firewall.
func ruleText(r netfabric.Rule) string {
	proto := r.Protocol
	if proto == "" {
		proto = "any"
	}
	s := fmt.Sprintf("%s %s %s", r.Direction, r.EtherType, proto)
	switch {
	case r.PortMin > 0 && r.PortMax > r.PortMin:
		s += fmt.Sprintf(" ports %d-%d", r.PortMin, r.PortMax)
	case r.PortMin > 0:
		s += fmt.Sprintf(" port %d", r.PortMin)
	}
	if r.ICMPType != nil {
		s += fmt.Sprintf(" type %d", *r.ICMPType)
		if r.ICMPCode != nil {
			s += fmt.Sprintf(" code %d", *r.ICMPCode)
		}
	}
	peer := "from"
	if r.Direction == "egress" {
		peer = "to"
	}
	switch {
	case r.RemoteCIDR != "":
		s += " " + peer + " " + r.RemoteCIDR
	case r.RemoteGroup != "":
		s += " " + peer + " group " + r.RemoteGroup
	default:
		s += " " + peer + " anywhere"
	}
	return s
}

func printGroup(e *env, g *netfabric.SecurityGroup) error {
	kv := [][2]string{{"id", g.ID}, {"name", g.Name}, {"project", g.Project}, {"description", g.Description}}
	for _, r := range g.Rules {
		kv = append(kv, [2]string{"rule " + r.ID, ruleText(r)})
	}
	return e.printKV(g, kv)
}

func init() {
	for k, v := range networkCommands {
		commands[k] = v
	}
}

// networkKind says what a network is, in words.
func networkKind(n *netfabric.Network) string {
	if n.IsVLAN() {
		if n.SiteGateway {
			return fmt.Sprintf("project (VLAN %d on %s, the site's router at %s)", n.VLAN, n.Interface, n.Gateway)
		}
		return fmt.Sprintf("project (VLAN %d on %s)", n.VLAN, n.Interface)
	}
	if n.IsOverlay() {
		return "project"
	}
	if n.External {
		return "external (on " + n.Interface + ")"
	}
	return "cluster (NAT)"
}

func printNetwork(e *env, n *netfabric.Network) error {
	kv := [][2]string{{"id", n.ID}, {"name", n.Name}, {"kind", networkKind(n)}, {"project", n.Project}, {"cidr", n.CIDR},
		{"gateway", n.Gateway}, {"dns", strings.Join(append(append([]string(nil), n.DNS...), n.DNS6...), ", ")}}
	if n.External {
		var ps []string
		for _, p := range n.Pools {
			ps = append(ps, p.Start+"-"+p.End)
		}
		kv = append(kv, [2]string{"interface", n.Interface}, [2]string{"pools", strings.Join(ps, ", ")})
	}
	if n.IsOverlay() {
		seg := fmt.Sprintf("VXLAN %d", n.VNI)
		if n.IsVLAN() {
			seg = fmt.Sprintf("VLAN %d on %s", n.VLAN, n.Interface)
		}
		kv = append(kv, [2]string{"mtu", fmt.Sprint(n.MTU)}, [2]string{"segment", seg})
		var ps, rs []string
		for _, p := range n.Pools {
			ps = append(ps, p.Start+"-"+p.End)
		}
		for _, r := range n.Routes {
			rs = append(rs, r.Destination+" via "+r.Nexthop)
		}
		kv = append(kv, [2]string{"pools", strings.Join(ps, ", ")}, [2]string{"routes", strings.Join(rs, ", ")},
			[2]string{"ipv6 subnet", strings.TrimSpace(n.CIDR6 + " " + n.IPv6Mode)}, [2]string{"dns domain", n.Domain})
	}
	return e.printKV(n, kv)
}
