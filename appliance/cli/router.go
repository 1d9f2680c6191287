package cli

import (
	"flag"
	"net/url"
	"sort"
	"strings"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
)

// routerCommands are the router and floating-ip nouns; merged into commands.
var routerCommands = map[string]command{
	"router list": {usage: "[--project PROJECT]", help: "routers of your projects", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project's routers")
		return func(e *env, args []string) error {
			path := "/api/v1/routers"
			if *project != "" {
				path += "?project=" + url.QueryEscape(*project)
			}
			var rs []netfabric.RouterView
			if err := get(e, path, &rs); err != nil {
				return err
			}
			return e.print(rs, []string{"NAME", "NETWORKS", "GATEWAY", "PROJECT", "ID"}, func(i int) []string {
				r := rs[i]
				return []string{r.Name, strings.Join(r.NetworkNames, ","), r.ExternalName, r.Project, r.ID}
			}, len(rs))
		}
	}},
	"router create": {usage: "NAME [--project P]", help: "create a router (connect networks with add-interface, reach outside with set-gateway)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var req netfabric.RouterCreate
		fs.StringVar(&req.Project, "project", "", "project (default: your only project)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a router name"); err != nil {
				return err
			}
			req.Name = args[0]
			var r netfabric.RouterView
			if err := send(e, "POST", "/api/v1/routers", req, &r); err != nil {
				return err
			}
			return printRouter(e, &r)
		}
	}},
	"router show": {usage: "ROUTER", help: "a router: its networks, gateway and each node's address outside", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one router"); err != nil {
			return err
		}
		var r netfabric.RouterView
		if err := get(e, "/api/v1/routers/"+url.PathEscape(args[0]), &r); err != nil {
			return err
		}
		return printRouter(e, &r)
	})},
	"router delete": {usage: "ROUTER", help: "delete a router that connects no network any more", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one router"); err != nil {
			return err
		}
		var r netfabric.RouterView
		if err := send(e, "DELETE", "/api/v1/routers/"+url.PathEscape(args[0]), nil, &r); err != nil {
			return err
		}
		return printRouter(e, &r)
	})},
	"router add-interface": {usage: "ROUTER NETWORK", help: "connect a project network to the router: its gateway address becomes the router's, on every node", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a router and a network"); err != nil {
			return err
		}
		var r netfabric.RouterView
		if err := send(e, "POST", "/api/v1/routers/"+url.PathEscape(args[0])+"/interfaces", netfabric.RouterInterface{Network: args[1]}, &r); err != nil {
			return err
		}
		return printRouter(e, &r)
	})},
	"router remove-interface": {usage: "ROUTER NETWORK", help: "take a network off the router", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a router and a network"); err != nil {
			return err
		}
		var r netfabric.RouterView
		if err := send(e, "DELETE", "/api/v1/routers/"+url.PathEscape(args[0])+"/interfaces/"+url.PathEscape(args[1]), nil, &r); err != nil {
			return err
		}
		return printRouter(e, &r)
	})},
	"router set-gateway": {usage: "ROUTER EXTERNAL-NETWORK | ROUTER --clear", help: "put the router's gateway on an external network: its networks' VMs reach outside (SNAT)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		clear := fs.Bool("clear", false, "take the gateway off")
		return func(e *env, args []string) error {
			want := 2
			if *clear {
				want = 1
			}
			if err := needArgs(args, want, "a router and an external network (or --clear)"); err != nil {
				return err
			}
			body := netfabric.RouterGateway{}
			if !*clear {
				body.Network = args[1]
			}
			var r netfabric.RouterView
			if err := send(e, "PUT", "/api/v1/routers/"+url.PathEscape(args[0])+"/gateway", body, &r); err != nil {
				return err
			}
			return printRouter(e, &r)
		}
	}},
	"floating-ip list": {usage: "[--project PROJECT]", help: "floating IPs of your projects and where they lead", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project's floating IPs")
		return func(e *env, args []string) error {
			path := "/api/v1/floating-ips"
			if *project != "" {
				path += "?project=" + url.QueryEscape(*project)
			}
			var fs []netfabric.FloatingIPView
			if err := get(e, path, &fs); err != nil {
				return err
			}
			return e.print(fs, []string{"IP", "FIXED IP", "VM", "NODE", "PROJECT", "ID"}, func(i int) []string {
				f := fs[i]
				return []string{f.IP, f.FixedIP, f.Owner, f.Node, f.Project, f.ID}
			}, len(fs))
		}
	}},
	"floating-ip create": {usage: "EXTERNAL-NETWORK [--ip IP] [--port PORT | --vm VM] [--project P]", help: "take a floating IP from an external network, and give it to a VM's port at once if asked", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		var req netfabric.FloatingIPCreate
		fs.StringVar(&req.IP, "ip", "", "a particular address (default: the next free one)")
		fs.StringVar(&req.Project, "project", "", "project (default: your only project)")
		port := fs.String("port", "", "give it to this port")
		vm := fs.String("vm", "", "give it to this VM's port on a routed project network")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "an external network"); err != nil {
				return err
			}
			req.Network = args[0]
			p, err := portOf(e, *port, *vm, false)
			if err != nil {
				return err
			}
			req.Port = p
			var f netfabric.FloatingIPView
			if err := send(e, "POST", "/api/v1/floating-ips", req, &f); err != nil {
				return err
			}
			return printFloating(e, &f)
		}
	}},
	"floating-ip show": {usage: "FLOATING-IP", help: "a floating IP (by address or ID) and where it leads", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one floating IP"); err != nil {
			return err
		}
		var f netfabric.FloatingIPView
		if err := get(e, "/api/v1/floating-ips/"+url.PathEscape(args[0]), &f); err != nil {
			return err
		}
		return printFloating(e, &f)
	})},
	"floating-ip delete": {usage: "FLOATING-IP", help: "give a floating IP back", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one floating IP"); err != nil {
			return err
		}
		var f netfabric.FloatingIPView
		if err := send(e, "DELETE", "/api/v1/floating-ips/"+url.PathEscape(args[0]), nil, &f); err != nil {
			return err
		}
		return printFloating(e, &f)
	})},
	"floating-ip associate": {usage: "FLOATING-IP --port PORT | --vm VM", help: "give a floating IP to a VM's port: the node the VM runs on answers for it", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		port := fs.String("port", "", "the port")
		vm := fs.String("vm", "", "the VM (its port on a project network)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one floating IP"); err != nil {
				return err
			}
			p, err := portOf(e, *port, *vm, true)
			if err != nil {
				return err
			}
			var f netfabric.FloatingIPView
			if err := send(e, "PUT", "/api/v1/floating-ips/"+url.PathEscape(args[0])+"/port", netfabric.FloatingIPAssociate{Port: p}, &f); err != nil {
				return err
			}
			return printFloating(e, &f)
		}
	}},
	"floating-ip disassociate": {usage: "FLOATING-IP", help: "take a floating IP back from its port (it stays yours)", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one floating IP"); err != nil {
			return err
		}
		var f netfabric.FloatingIPView
		if err := send(e, "DELETE", "/api/v1/floating-ips/"+url.PathEscape(args[0])+"/port", nil, &f); err != nil {
			return err
		}
		return printFloating(e, &f)
	})},
}

// portOf picks the port a floating IP goes to: --port as given, or the
// VM's one NIC on a project network.
func portOf(e *env, port, vm string, required bool) (string, error) {
	switch {
	case port != "" && vm != "":
		return "", usageError("give --port or --vm, not both")
	case port != "":
		return port, nil
	case vm == "":
		if required {
			return "", usageError("--port PORT or --vm VM is required")
		}
		return "", nil
	}
	var v hypervisor.VM
	if err := get(e, "/api/v1/vms/"+url.PathEscape(vm), &v); err != nil {
		return "", err
	}
	var ids []string
	for _, n := range v.NICs {
		if n.MTU != 0 { // a project network's NIC
			ids = append(ids, n.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", usageError("VM " + vm + " has no NIC on a project network")
	case 1:
		return ids[0], nil
	}
	sort.Strings(ids)
	return "", usageError("VM " + vm + " has several NICs on project networks (" + strings.Join(ids, ", ") + "): give --port")
}

func printRouter(e *env, r *netfabric.RouterView) error {
	kv := [][2]string{{"id", r.ID}, {"name", r.Name}, {"project", r.Project}, {"networks", strings.Join(r.NetworkNames, ", ")},
		{"gateway", r.ExternalName}}
	nodes := make([]string, 0, len(r.GatewayAddress))
	for n := range r.GatewayAddress {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		kv = append(kv, [2]string{"address on " + n, r.GatewayAddress[n]})
	}
	return e.printKV(r, kv)
}

func printFloating(e *env, f *netfabric.FloatingIPView) error {
	return e.printKV(f, [][2]string{{"id", f.ID}, {"ip", f.IP}, {"network", f.NetworkID}, {"project", f.Project}, {"port", f.PortID},
		{"fixed ip", f.FixedIP}, {"vm", f.Owner}, {"node", f.Node}})
}

func init() {
	for k, v := range routerCommands {
		commands[k] = v
	}
}
