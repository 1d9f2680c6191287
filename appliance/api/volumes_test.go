package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/storage/volume"
)

// A volume's life through the API of a real node: attached to a VM of
// its project it is in use and cannot be deleted; a node's host is the
// cluster admins'; deleting refunds the project's quota.
func TestVolumeLifecycleThroughTheAPI(t *testing.T) {
	f := newMatrixFixture(t)
	call := func(r role, route, body string, want int) string {
		t.Helper()
		status, out := f.send(grant{route: route, body: body}, r)
		if status != want {
			t.Fatalf("%s %s: %d, want %d: %s", roleNames[r], route, status, want, out)
		}
		return out
	}
	vol := func(s string) volume.Volume {
		t.Helper()
		var v volume.Volume
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	quota := func() identity.Resources {
		t.Helper()
		var q identity.Quota
		if err := json.Unmarshal([]byte(call(reader, "GET /api/v1/projects/proj-a/quota", "", 200)), &q); err != nil {
			t.Fatal(err)
		}
		return q.Usage
	}
	if u := quota(); u.Volumes != 1 || u.VolumeGiB != 1 {
		t.Fatalf("usage with one volume: %+v", u)
	}
	if out := call(member, "POST /api/v1/volumes", `{"name":"new","size_gib":1,"project":"proj-a"}`, 503); !strings.Contains(out, "not available on this node") {
		t.Fatalf("create without replicas' provisioner: %s", out)
	}
	call(member, "POST /api/v1/volumes", `{"name":"new","size_gib":1,"project":"proj-a","extra":1}`, 400)

	// The fixture's VM is stopped and not placed: the volume waits for it
	// to be placed, and a stopped (or unplaced) VM lets it go again.
	v := vol(call(member, "POST /api/v1/volumes/vol-a/attach", `{"vm":"vm-a"}`, 200))
	if v.State != volume.StateInUse || v.Attachment == nil || v.Attachment.VM == "" || v.Attachment.Node != "" {
		t.Fatalf("attached to an unplaced VM: %+v", v)
	}
	call(outsider, "POST /api/v1/volumes/vol-a/attach", `{"vm":"vm-a"}`, 404)
	call(member, "DELETE /api/v1/volumes/vol-a", "", 409)
	if v = vol(call(member, "POST /api/v1/volumes/vol-a/detach", "", 200)); v.State != volume.StateAvailable || v.Attachment != nil {
		t.Fatalf("detached from the VM: %+v", v)
	}
	call(member, "POST /api/v1/volumes/vol-a/attach", `{"node":"node1"}`, 403)
	v = vol(call(clusterAdmin, "POST /api/v1/volumes/vol-a/attach", `{"node":"node1"}`, 200))
	if v.State != volume.StateInUse || v.Attachment == nil || v.Attachment.Node != "node1" {
		t.Fatalf("attached: %+v", v)
	}
	call(member, "DELETE /api/v1/volumes/vol-a", "", 409)
	// Online extend: the record grows (and is charged); the writer grows
	// the replicas.
	if v = vol(call(member, "POST /api/v1/volumes/vol-a/extend", `{"size_gib":2}`, 200)); v.SizeBytes != 2<<30 || quota().VolumeGiB != 2 {
		t.Fatalf("extended while attached: %+v, usage %+v", v, quota())
	}
	call(outsider, "POST /api/v1/volumes/vol-a/detach", "", 404)
	call(member, "POST /api/v1/volumes/vol-a/detach", "", 403)
	if v = vol(call(clusterAdmin, "POST /api/v1/volumes/vol-a/detach", "", 200)); v.State != volume.StateAvailable || v.Attachment != nil || v.Writer != "" {
		t.Fatalf("detached: %+v", v)
	}
	call(member, "POST /api/v1/volumes/vol-a/extend", `{"size_gib":2}`, 400)

	var vs []volume.Volume
	if err := json.Unmarshal([]byte(call(reader, "GET /api/v1/volumes", "", 200)), &vs); err != nil || len(vs) != 1 || vs[0].Name != "vol-a" {
		t.Fatalf("list: %+v %v", vs, err)
	}
	if err := json.Unmarshal([]byte(call(outsider, "GET /api/v1/volumes", "", 200)), &vs); err != nil || len(vs) != 0 {
		t.Fatalf("another project's list: %+v %v", vs, err)
	}
	call(member, "DELETE /api/v1/volumes/vol-a", "", 200)
	call(member, "GET /api/v1/volumes/vol-a", "", 404)
	if u := quota(); u.Volumes != 0 || u.VolumeGiB != 0 {
		t.Fatalf("usage after delete: %+v", u)
	}
}
