package volume

import (
	"sort"

	"github.com/hashicorp/go-memdb"
)

// Exposure is what losing one node would do to the volumes: OnlyOn maps a
// node to the volumes and snapshots whose every in-sync replica is on it,
// and NoCopy lists those that have no in-sync replica anywhere (their
// replicas are catching up). Hidden snapshots count too: volumes made from
// them read through them. Each is named by its name, or its ID when hidden.
type Exposure struct {
	OnlyOn map[string][]string `json:"only_on,omitempty"`
	NoCopy []string            `json:"no_copy,omitempty"`
}

// Exposed works out the Exposure from a read transaction.
func Exposed(txn *memdb.Txn) Exposure {
	e := Exposure{OnlyOn: map[string][]string{}}
	it, err := txn.Get(tVolumes, "id")
	if err != nil {
		return e
	}
	for o := it.Next(); o != nil; o = it.Next() {
		v := o.(*Volume)
		name := v.Name
		if v.Hidden || name == "" {
			name = v.ID
		}
		nodes := map[string]bool{}
		for _, r := range v.Replicas {
			if r.State == ReplicaInSync {
				nodes[r.Node] = true
			}
		}
		switch len(nodes) {
		case 0:
			e.NoCopy = append(e.NoCopy, name)
		case 1:
			for n := range nodes {
				e.OnlyOn[n] = append(e.OnlyOn[n], name)
			}
		}
	}
	for _, names := range e.OnlyOn {
		sort.Strings(names)
	}
	sort.Strings(e.NoCopy)
	return e
}
