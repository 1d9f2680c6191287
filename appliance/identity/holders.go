package identity

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// ProjectHolder is what another domain keeps of a project that the quota's
// usage does not count (an empty bucket, an image, a security group): a
// project is deleted only when no holder holds anything of it, and the
// refusal names what is left. Sweep, if set, removes rows that go with
// the project (a default security group) in the same command.
type ProjectHolder struct {
	Kind  string // plural noun: "buckets", "images"
	Held  func(txn *memdb.Txn, project string) []string
	Sweep func(tx *consensus.Tx, project string) error
}

var holders sync.Map // Kind -> ProjectHolder

// HoldProjects registers a holder; domains call it from their Register.
// Every node of one version runs the same code, so every node's apply
// consults the same holders. The holders are part of what
// MsgDeleteEmptyProject means: a release that adds one must add a new
// command too (and raise the protocol), or a rolling upgrade's old and new
// nodes would apply the same entry differently. (Several nodes in one test
// process register the same holders: the map is shared, the same.)
func HoldProjects(h ProjectHolder) { holders.Store(h.Kind, h) }

func projectHolders() []ProjectHolder {
	var hs []ProjectHolder
	holders.Range(func(_, v any) bool { hs = append(hs, v.(ProjectHolder)); return true })
	sort.Slice(hs, func(i, j int) bool { return hs[i].Kind < hs[j].Kind })
	return hs
}

// projectLeft says what a project still holds: its quota usage, then what
// the holders name. Empty when it may go.
func projectLeft(txn *memdb.Txn, project string) string {
	var left []string
	if q := consensus.First[Quota](txn, tQuotas, "id", project); q != nil {
		u := q.Usage
		for _, c := range []struct {
			n    int64
			what string
		}{
			// Networks, routers and floating IPs are named by netfabric's
			// holders (charged or not); ports go with VMs.
			{u.Instances, "VMs"}, {u.Volumes, "volumes"}, {u.Snapshots, "snapshots"}, {u.Objects, "objects"},
		} {
			if c.n > 0 {
				left = append(left, fmt.Sprintf("%d %s", c.n, c.what))
			}
		}
		// What the lines above and the holders do not stand for.
		rest := u
		rest.Instances, rest.VCPUs, rest.RAMMiB, rest.DiskGiB, rest.Ports = 0, 0, 0, 0, 0 // with its VMs
		rest.Volumes, rest.VolumeGiB, rest.Snapshots = 0, 0, 0
		rest.Objects, rest.ObjectGiB = 0, 0
		rest.Networks, rest.Routers, rest.FloatingIPs = 0, 0, 0 // named by netfabric's holders
		if len(left) == 0 && rest != (Resources{}) {
			left = append(left, fmt.Sprintf("resources in use (%+v)", u))
		}
	}
	for _, h := range projectHolders() {
		names := h.Held(txn, project)
		if len(names) == 0 {
			continue
		}
		sort.Strings(names)
		shown := names
		if len(shown) > 5 {
			shown = append(shown[:5:5], "…")
		}
		left = append(left, fmt.Sprintf("%d %s (%s)", len(names), h.Kind, strings.Join(shown, ", ")))
	}
	return strings.Join(left, ", ")
}
