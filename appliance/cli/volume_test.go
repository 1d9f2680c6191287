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
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
)

// The volume noun against a real node's API: list, show -o json, attach
// to a node's host, detach, extend's refusal, delete; create says plainly
// that this node cannot make volumes (no replica provisioner here).
func TestCLIVolumes(t *testing.T) {
	c := consensustest.Start(t, 1, func(r *consensus.Registry) {
		identity.Register(r)
		storage.Register(r)
		volume.Register(r)
	})
	nd := c.Nodes[0]
	svc := identity.NewService(nd, identity.DefaultConfig())
	vols := volume.NewService(volume.Deps{Cluster: nd, Identity: svc})
	url, ca := serveAPI(t, api.Deps{Identity: svc, Volumes: vols, Cluster: nd}, svc)
	ctx := context.Background()
	adm := mustPrincipal(t, svc, "root", "correct horse")
	pr, err := svc.CreateProject(ctx, adm, identity.ProjectSpec{Name: "ward"})
	if err != nil {
		t.Fatal(err)
	}
	v := volume.Volume{ID: "vol-1", Name: "scans", ProjectID: pr.ID, SizeBytes: 2 << 30, CreatedAt: time.Now().UTC(),
		Replicas: []volume.Replica{{ID: "vol-1-r0", Node: "node1", Disk: "d1"}}}
	if _, err := nd.Apply(ctx, volume.MsgCreateVolume, map[string]any{"volume": v}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := nd.Apply(ctx, volume.MsgSetVolumeState, map[string]any{"id": v.ID, "state": volume.StateAvailable}, nil); err != nil {
		t.Fatal(err)
	}

	if code, out := cairn(t, "correct horse\n", "login", "--endpoint", url, "--ca-cert", ca, "--username", "root", "--password-stdin"); code != 0 {
		t.Fatalf("login: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "list"); code != 0 || !strings.Contains(out, "scans") || !strings.Contains(out, "node1:in_sync") {
		t.Fatalf("volume list: %d\n%s", code, out)
	}
	code, out := cairn(t, "", "volume", "show", "scans", "-o", "json")
	var got volume.Volume
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.ID != "vol-1" || got.SizeBytes != 2<<30 || got.State != volume.StateAvailable {
		t.Fatalf("volume show -o json: %d\n%s", code, out)
	}
	if code, out := cairn(t, "", "volume", "attach", "scans"); code != 2 || !strings.Contains(out, "--vm VM or --node NODE") {
		t.Fatalf("attach to nothing: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "attach", "scans", "--node", "node1"); code != 0 || !strings.Contains(out, "node node1") {
		t.Fatalf("attach: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "delete", "scans"); code != 1 || !strings.Contains(out, "detach it first") {
		t.Fatalf("delete while attached: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "detach", "scans"); code != 0 || !strings.Contains(out, "available") {
		t.Fatalf("detach: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "extend", "scans", "--size", "2"); code != 1 || !strings.Contains(out, "only grow") {
		t.Fatalf("extend to the same size: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "create", "more", "--size", "1", "--project", "ward"); code != 1 || !strings.Contains(out, "not available on this node") {
		t.Fatalf("create: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "delete", "scans"); code != 0 {
		t.Fatalf("delete: %d %s", code, out)
	}
	if code, out := cairn(t, "", "volume", "show", "scans"); code != 1 || !strings.Contains(out, "not found") {
		t.Fatalf("show after delete: %d %s", code, out)
	}
}
