package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/netfabric"
)

// The network and port nouns against a real node's API: create (and a
// clear refusal of an overlapping subnet), list, show -o json, a
// network's ports, and delete.
func TestCLINetworks(t *testing.T) {
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		netfabric.Register(r)
	})
	nd := c.Nodes[0]
	svc := identity.NewService(nd, identity.DefaultConfig())
	url, ca := serveAPI(t, api.Deps{Identity: svc, Networks: netfabric.NewService(nd, svc), Cluster: nd}, svc)
	ctx := context.Background()
	adm := mustPrincipal(t, svc, "root", "correct horse")
	pr, err := svc.CreateProject(ctx, adm, identity.ProjectSpec{Name: "ward"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nd.Apply(ctx, netfabric.MsgCreateNetwork, netfabric.Network{ID: "default", Name: "default", CIDR: "10.77.0.0/24", CreatedAt: time.Now().UTC()}, nil); err != nil {
		t.Fatal(err)
	}
	if code, out := cairn(t, "correct horse\n", "login", "--endpoint", url, "--ca-cert", ca, "--username", "root", "--password-stdin"); code != 0 {
		t.Fatalf("login: %d %s", code, out)
	}
	if code, out := cairn(t, "", "network", "create", "imaging", "--project", "ward"); code != 2 || !strings.Contains(out, "--cidr") {
		t.Fatalf("create without a subnet: %d %s", code, out)
	}
	code, out := cairn(t, "", "network", "create", "imaging", "--project", "ward", "--cidr", "10.50.0.0/24", "--dns", "10.50.0.53", "-o", "json")
	var nw netfabric.Network
	if code != 0 || json.Unmarshal([]byte(out), &nw) != nil || nw.Project != pr.ID || nw.MTU != 1450 || nw.VNI == 0 || nw.DNS[0] != "10.50.0.53" {
		t.Fatalf("network create -o json: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "network", "create", "lab", "--project", "ward", "--cidr", "10.60.0.0/24", "--pool", "10.60.0.100-10.60.0.199",
		"--route", "10.90.0.0/16,10.60.0.254"); code != 0 || !strings.Contains(out, "10.60.0.100-10.60.0.199") || !strings.Contains(out, "10.90.0.0/16 via 10.60.0.254") {
		t.Fatalf("network create with a pool and a route: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "network", "create", "bad", "--project", "ward", "--cidr", "10.61.0.0/24", "--pool", "10.61.0.100"); code != 2 || !strings.Contains(out, "START-END") {
		t.Fatalf("a pool that is not a range: %d %s", code, out)
	}
	if code, out := cairn(t, "", "network", "create", "more", "--project", "ward", "--cidr", "10.50.0.128/25"); code != 1 || !strings.Contains(out, "overlaps network") {
		t.Fatalf("an overlapping subnet: %d %s", code, out)
	}
	if code, out := cairn(t, "", "network", "list"); code != 0 || !strings.Contains(out, "imaging") || !strings.Contains(out, "cluster (NAT)") {
		t.Fatalf("network list: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "network", "show", "imaging"); code != 0 || !strings.Contains(out, "VXLAN") || !strings.Contains(out, "10.50.0.1") {
		t.Fatalf("network show: %d\n%s", code, out)
	}
	if _, err := nd.Apply(ctx, netfabric.MsgCreatePort, netfabric.PortRequest{ID: "vm-1-0", NetworkID: nw.ID, Owner: "vm-1", Project: pr.ID, Node: "node1",
		SecurityGroups: []string{netfabric.DefaultGroupID(pr.ID)}}, nil); err != nil {
		t.Fatal(err)
	}
	if code, out := cairn(t, "", "port", "list", "--network", "imaging"); code != 0 || !strings.Contains(out, "vm-1-0") || !strings.Contains(out, "10.50.0.2") || !strings.Contains(out, "node1") {
		t.Fatalf("port list: %d\n%s", code, out)
	}
	// A VLAN network on the site's network.
	if code, out := cairn(t, "", "network", "create", "pacs", "--project", "ward", "--cidr", "10.80.0.0/24", "--vlan", "120", "--interface", "eth1"); code != 0 ||
		!strings.Contains(out, "VLAN 120 on eth1") || !strings.Contains(out, "1500") {
		t.Fatalf("network create --vlan: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "network", "create", "pacs2", "--project", "ward", "--cidr", "10.81.0.0/24", "--vlan", "120", "--interface", "eth1"); code != 1 ||
		!strings.Contains(out, "VLAN 120 on eth1") {
		t.Fatalf("a VLAN taken: %d\n%s", code, out)
	}
	// A VLAN network whose gateway is the site's router; bad ones change
	// nothing.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cidr", "10.82.0.0/24", "--gateway", "10.82.0.254"}, "only an external network, or a VLAN network with a site gateway"},
		{[]string{"--cidr", "10.82.0.0/24", "--site-gateway"}, "only a VLAN network"},
		{[]string{"--cidr", "10.82.0.0/24", "--vlan", "130", "--interface", "eth1", "--site-gateway", "--gateway", "10.83.0.1", "--pool", "10.82.0.100-10.82.0.199", "--dns", "10.82.0.53"}, "not a host address"},
		{[]string{"--cidr", "10.82.0.0/24", "--vlan", "130", "--interface", "eth1", "--site-gateway", "--gateway", "10.82.0.254", "--pool", "10.82.0.200-10.82.0.254", "--dns", "10.82.0.53"}, "holds the gateway"},
		{[]string{"--cidr", "10.82.0.0/24", "--vlan", "130", "--interface", "eth1", "--site-gateway", "--gateway", "10.82.0.254", "--dns", "10.82.0.53"}, "name the pools"},
		{[]string{"--cidr", "10.82.0.0/24", "--vlan", "130", "--interface", "eth1", "--site-gateway", "--gateway", "10.82.0.254", "--pool", "10.82.0.100-10.82.0.199"}, "DNS servers"},
	} {
		if code, out := cairn(t, "", append([]string{"network", "create", "lab-vlan", "--project", "ward"}, c.args...)...); code != 1 || !strings.Contains(out, c.want) {
			t.Fatalf("network create %v: %d\n%s", c.args, code, out)
		}
	}
	if code, out := cairn(t, "", "network", "create", "lab-vlan", "--project", "ward", "--cidr", "10.82.0.0/24", "--vlan", "130", "--interface", "eth1",
		"--site-gateway", "--gateway", "10.82.0.254", "--pool", "10.82.0.100-10.82.0.199", "--dns", "10.82.0.53"); code != 0 || !strings.Contains(out, "VLAN 130 on eth1, the site's router at 10.82.0.254") {
		t.Fatalf("network create --site-gateway: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "subnet", "create", "lab-vlan", "--cidr", "fd00:82::/64"); code != 1 || !strings.Contains(out, "site's") {
		t.Fatalf("an IPv6 subnet on a site-gateway network: %d\n%s", code, out)
	}
	// An IPv6 subnet: the port there gets its address at once.
	if code, out := cairn(t, "", "subnet", "create", "imaging"); code != 2 || !strings.Contains(out, "--cidr") {
		t.Fatalf("subnet create without a prefix: %d %s", code, out)
	}
	if code, out := cairn(t, "", "subnet", "create", "imaging", "--cidr", "fd00:50::/56"); code != 1 || !strings.Contains(out, "must be 64") {
		t.Fatalf("a /56: %d %s", code, out)
	}
	if code, out := cairn(t, "", "subnet", "create", "imaging", "--cidr", "fd00:50::/64", "--ipv6-mode", "dhcpv6"); code != 0 || !strings.Contains(out, "fd00:50::/64 dhcpv6") {
		t.Fatalf("subnet create: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "port", "list", "--network", "imaging"); code != 0 || !strings.Contains(out, "fd00:50::") {
		t.Fatalf("port list after the subnet: %d\n%s", code, out)
	}
	// Security groups: a group, rules (and a bad one refused), a port put
	// in it, a group in use kept, a rule deleted.
	if code, out := cairn(t, "", "security-group", "create", "web", "--project", "ward", "--description", "the web tier"); code != 0 || !strings.Contains(out, "the web tier") {
		t.Fatalf("security-group create: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "security-group", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "443", "--remote-cidr", "10.0.0.0/8"); code != 0 ||
		!strings.Contains(out, "ingress IPv4 tcp port 443 from 10.0.0.0/8") {
		t.Fatalf("rule add: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "security-group", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "500-400"); code != 1 || !strings.Contains(out, "port range 500-400 is invalid") {
		t.Fatalf("a backwards port range: %d %s", code, out)
	}
	if code, out := cairn(t, "", "security-group", "rule", "add", "web", "--direction", "ingress", "--protocol", "icmp", "--icmp-type", "8", "--remote-group", "web"); code != 0 ||
		!strings.Contains(out, "ingress IPv4 icmp type 8 from group sg-") {
		t.Fatalf("rule add with a remote group: %d\n%s", code, out)
	}
	code, out = cairn(t, "", "security-group", "show", "web", "-o", "json")
	var web netfabric.SecurityGroup
	if code != 0 || json.Unmarshal([]byte(out), &web) != nil || len(web.Rules) != 2 || web.Rules[1].RemoteGroup != web.ID {
		t.Fatalf("security-group show -o json: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "security-group", "list", "--project", "ward"); code != 0 || !strings.Contains(out, "default") || !strings.Contains(out, "web") {
		t.Fatalf("security-group list: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "port", "set", "vm-1-0", "--security-group", "web", "--allowed-address", "10.50.0.200"); code != 0 || !strings.Contains(out, web.ID) || !strings.Contains(out, "10.50.0.200") {
		t.Fatalf("port set: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "port", "set", "vm-1-0", "--allowed-address", "10.99.0.1"); code != 1 || !strings.Contains(out, "is not one address in 10.50.0.0/24 or fd00:50::/64") {
		t.Fatalf("an address pair outside the network: %d %s", code, out)
	}
	if code, out := cairn(t, "", "port", "set", "vm-1-0", "--allowed-address", "10.50.0.200", "--allowed-address", "fd00:50::200,02:00:5e:00:01:07"); code != 0 || !strings.Contains(out, "fd00:50::200 02:00:5e:00:01:07") {
		t.Fatalf("an IPv6 address pair: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "port", "show", "vm-1-0", "-o", "json"); code != 0 || !strings.Contains(out, `"allowed_address_pairs"`) {
		t.Fatalf("port show: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "security-group", "delete", "web"); code != 1 || !strings.Contains(out, "in use by port vm-1-0") {
		t.Fatalf("delete a group in use: %d %s", code, out)
	}
	if code, out := cairn(t, "", "security-group", "rule", "delete", "web", web.Rules[0].ID); code != 0 || strings.Contains(out, "port 443") {
		t.Fatalf("rule delete: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "security-group", "delete", netfabric.DefaultGroupID(pr.ID)); code != 1 || !strings.Contains(out, "default security group cannot be deleted") {
		t.Fatalf("delete the default group: %d %s", code, out)
	}

	// Routers and floating IPs, onto an external network the admin made.
	if code, out := cairn(t, "", "network", "create", "public", "--external", "--interface", "eth1", "--cidr", "198.51.100.0/24",
		"--gateway", "198.51.100.254", "--pool", "198.51.100.10-198.51.100.20"); code != 0 || !strings.Contains(out, "external (on eth1)") || !strings.Contains(out, "198.51.100.254") {
		t.Fatalf("external network create: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "network", "create", "worse", "--external", "--interface", "eth1", "--cidr", "198.51.101.0/24",
		"--gateway", "198.51.101.5", "--pool", "198.51.101.2-198.51.101.9"); code != 1 || !strings.Contains(out, "holds the gateway") {
		t.Fatalf("an external pool holding the gateway: %d %s", code, out)
	}
	if code, out := cairn(t, "", "router", "create", "edge", "--project", "ward"); code != 0 || !strings.Contains(out, "edge") {
		t.Fatalf("router create: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "router", "add-interface", "edge", "imaging"); code != 0 || !strings.Contains(out, "imaging") {
		t.Fatalf("router add-interface: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "router", "add-interface", "edge", "lab-vlan"); code != 1 || !strings.Contains(out, "routed by the site's router 10.82.0.254") {
		t.Fatalf("router add-interface on a site-gateway network: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "router", "set-gateway", "edge", "lab"); code != 1 || !strings.Contains(out, "not an external network") {
		t.Fatalf("a gateway on a project network: %d %s", code, out)
	}
	if code, out := cairn(t, "", "floating-ip", "create", "lab", "--project", "ward"); code != 1 || !strings.Contains(out, "not an external network") {
		t.Fatalf("a floating IP from a project network: %d %s", code, out)
	}
	// Before the router has a gateway there, a floating IP cannot reach
	// the port: refused, and the address is not kept.
	if code, out := cairn(t, "", "floating-ip", "create", "public", "--project", "ward", "--port", "vm-1-0"); code != 1 || !strings.Contains(out, "no router with a gateway") {
		t.Fatalf("a floating IP for a port with no way out: %d %s", code, out)
	}
	if code, out := cairn(t, "", "floating-ip", "list"); code != 0 || strings.Contains(out, "198.51.100.") {
		t.Fatalf("a refused floating IP was kept: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "router", "set-gateway", "edge", "public"); code != 0 || !strings.Contains(out, "public") {
		t.Fatalf("router set-gateway: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "floating-ip", "create", "public", "--project", "ward", "--ip", "198.51.100.15", "--port", "vm-1-0"); code != 0 ||
		!strings.Contains(out, "198.51.100.15") || !strings.Contains(out, "10.50.0.2") {
		t.Fatalf("floating-ip create --port: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "floating-ip", "list", "-o", "json"); code != 0 || !strings.Contains(out, `"fixed_ip": "10.50.0.2"`) {
		t.Fatalf("floating-ip list: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "router", "remove-interface", "edge", "imaging"); code != 1 || !strings.Contains(out, "take it back first") {
		t.Fatalf("remove the interface a floating IP needs: %d %s", code, out)
	}
	if code, out := cairn(t, "", "floating-ip", "disassociate", "198.51.100.15"); code != 0 || strings.Contains(out, "10.50.0.2") {
		t.Fatalf("floating-ip disassociate: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "floating-ip", "associate", "198.51.100.15", "--port", "vm-1-0"); code != 0 || !strings.Contains(out, "10.50.0.2") {
		t.Fatalf("floating-ip associate: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "network", "delete", "imaging"); code != 1 {
		t.Fatalf("delete a network with a port on a router: %d %s", code, out)
	}

	if code, out := cairn(t, "", "network", "delete", "imaging"); code != 1 || !strings.Contains(out, "still has 1 ports") {
		t.Fatalf("delete with a port: %d %s", code, out)
	}
	if _, err := nd.Apply(ctx, netfabric.MsgReleasePorts, netfabric.ReleasePortsCmd{Owner: "vm-1"}, nil); err != nil {
		t.Fatal(err)
	}
	// The port went with its VM and took its floating IP back; the
	// address stays the project's until given back.
	if code, out := cairn(t, "", "floating-ip", "show", "198.51.100.15", "-o", "json"); code != 0 || strings.Contains(out, "port_id") {
		t.Fatalf("a floating IP of a released port: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "network", "delete", "imaging"); code != 1 || !strings.Contains(out, "connected to router edge") {
		t.Fatalf("delete a network on a router: %d %s", code, out)
	}
	if code, out := cairn(t, "", "router", "delete", "edge"); code != 1 || !strings.Contains(out, "still connects 1 networks") {
		t.Fatalf("delete a router with a network: %d %s", code, out)
	}
	for _, args := range [][]string{{"router", "remove-interface", "edge", "imaging"}, {"router", "delete", "edge"}, {"floating-ip", "delete", "198.51.100.15"}} {
		if code, out := cairn(t, "", args...); code != 0 {
			t.Fatalf("%v: %d %s", args, code, out)
		}
	}
	if code, out := cairn(t, "", "network", "delete", "imaging"); code != 0 {
		t.Fatalf("delete: %d %s", code, out)
	}
	if code, out := cairn(t, "", "network", "delete", "public"); code != 0 {
		t.Fatalf("delete the external network: %d %s", code, out)
	}
	if code, out := cairn(t, "", "network", "show", "imaging"); code != 1 || !strings.Contains(out, "not found") {
		t.Fatalf("show after delete: %d %s", code, out)
	}
}
