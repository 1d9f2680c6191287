package cli

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/api"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/netfabric"
)

// cairn node cordon and uncordon, and host list showing it.
func TestCLICordon(t *testing.T) {
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		hypervisor.Register(r)
		netfabric.Register(r)
	})
	nd := c.Nodes[0]
	svc := identity.NewService(nd, identity.DefaultConfig())
	compute := hypervisor.NewService(nd, svc, nil, slog.New(slog.DiscardHandler))
	url, ca := serveAPI(t, api.Deps{Identity: svc, Compute: compute, Cluster: nd}, svc)
	ctx := context.Background()
	if _, err := nd.Apply(ctx, hypervisor.MsgReportHost, &hypervisor.Host{Name: "node1", VCPUs: 4, RAMMiB: 4096, Accel: "tcg", ReportedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if code, out := cairn(t, "correct horse\n", "login", "--endpoint", url, "--ca-cert", ca, "--username", "root", "--password-stdin"); code != 0 {
		t.Fatalf("login: %d %s", code, out)
	}
	if code, out := cairn(t, "", "node", "cordon"); code != 2 {
		t.Fatalf("cordon without a node: %d %s", code, out)
	}
	if code, out := cairn(t, "", "node", "cordon", "node9"); code != 1 || !strings.Contains(out, "node9") {
		t.Fatalf("cordon of no such node: %d %s", code, out)
	}
	if code, out := cairn(t, "", "node", "cordon", "node1", "--reason", "new disks"); code != 0 || !strings.Contains(out, "new disks") || !strings.Contains(out, "root") {
		t.Fatalf("cordon: %d %s", code, out)
	}
	if code, out := cairn(t, "", "host", "list"); code != 0 || !strings.Contains(out, "cordoned") || !strings.Contains(out, "by root: new disks") {
		t.Fatalf("host list after the cordon: %d %s", code, out)
	}
	if code, out := cairn(t, "", "host", "list", "-o", "json"); code != 0 || !strings.Contains(out, `"cordon"`) {
		t.Fatalf("host list -o json: %d %s", code, out)
	}
	if code, out := cairn(t, "", "node", "uncordon", "node1"); code != 0 {
		t.Fatalf("uncordon: %d %s", code, out)
	}
	if code, out := cairn(t, "", "host", "list"); code != 0 || strings.Contains(out, "cordoned") {
		t.Fatalf("host list after the uncordon: %d %s", code, out)
	}
	// The only node cannot be drained: its VMs would have nowhere to go.
	if code, out := cairn(t, "", "node", "drain", "node1", "--restart"); code != 1 || !strings.Contains(out, "no other node") {
		t.Fatalf("drain the only node: %d %s", code, out)
	}
	if _, err := nd.Apply(ctx, hypervisor.MsgReportHost, &hypervisor.Host{Name: "node2", VCPUs: 4, RAMMiB: 4096, Accel: "tcg", ReportedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	// Nothing on node1: nothing to move (the drainer runs on the leader
	// of a real cluster; here the drain stays as it was asked).
	if code, out := cairn(t, "", "node", "drain", "node1"); code != 0 || !strings.Contains(out, "draining") {
		t.Fatalf("drain: %d %s", code, out)
	}
	if code, out := cairn(t, "", "host", "list"); code != 0 || !strings.Contains(out, "drain draining: 0 moved, 0 restarted") {
		t.Fatalf("host list while draining: %d %s", code, out)
	}
	if code, out := cairn(t, "", "vm", "migrate", "--cancel", "--to", "node2", "x"); code != 1 || !strings.Contains(out, "--cancel takes no --to") {
		t.Fatalf("migrate --cancel --to: %d %s", code, out)
	}
}
