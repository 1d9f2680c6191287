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
	"network create": {usage: "NAME --cidr CIDR [--dns IP,...] [--mtu N] [--pool START-END]... [--route DEST,NEXTHOP]... [--project P]", help: "create a project network: a private layer 2 across the nodes with DHCP", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var req netfabric.NetworkCreate
		fs.StringVar(&req.CIDR, "cidr", "", "IPv4 subnet, /16 to /29, e.g. 10.50.0.0/24 (other projects may use the same)")
		dns := fs.String("dns", "", "DNS servers DHCP hands out, comma-separated")
		fs.IntVar(&req.MTU, "mtu", 0, "the guests' MTU (default 1450, for a 1500-byte network between the nodes)")
		fs.StringVar(&req.Project, "project", "", "project (default: your only project)")
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
			return e.print(ps, []string{"ID", "MAC", "IP", "VM", "NODE"}, func(i int) []string {
				p := ps[i]
				return []string{p.ID, p.MAC, p.IP, p.Owner, p.Node}
			}, len(ps))
		}
	}},
}

func init() {
	for k, v := range networkCommands {
		commands[k] = v
	}
}

// networkKind says what a network is, in words.
func networkKind(n *netfabric.Network) string {
	if n.IsOverlay() {
		return "project"
	}
	return "cluster (NAT)"
}

func printNetwork(e *env, n *netfabric.Network) error {
	kv := [][2]string{{"id", n.ID}, {"name", n.Name}, {"kind", networkKind(n)}, {"project", n.Project}, {"cidr", n.CIDR},
		{"gateway", n.Gateway}, {"dns", strings.Join(n.DNS, ", ")}}
	if n.IsOverlay() {
		kv = append(kv, [2]string{"mtu", fmt.Sprint(n.MTU)}, [2]string{"segment", fmt.Sprintf("VXLAN %d", n.VNI)})
		var ps, rs []string
		for _, p := range n.Pools {
			ps = append(ps, p.Start+"-"+p.End)
		}
		for _, r := range n.Routes {
			rs = append(rs, r.Destination+" via "+r.Nexthop)
		}
		kv = append(kv, [2]string{"pools", strings.Join(ps, ", ")}, [2]string{"routes", strings.Join(rs, ", ")})
	}
	return e.printKV(n, kv)
}
