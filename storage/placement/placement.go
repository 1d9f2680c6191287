// Package placement decides how objects are coded and where their shards go:
// a default k+m layout from the cluster's shape, and for each object a set of
// distinct disks with at most m shards on any one node, so that losing any one
// node loses nothing. It is pure: state comes in, decisions go out.
package placement

import (
	"errors"
	"fmt"
	"sort"

	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/cespare/xxhash/v2"
)

// Disk is a disk that can take new shards.
type Disk struct {
	ID   string `json:"id"`
	Node string `json:"node"`
	Free uint64 `json:"free"` // bytes
	// Device is the filesystem the disk is on, as its node sees it
	// ("major:minor"); "" when not known. Two directories of one
	// filesystem fail together.
	Device string `json:"device,omitempty"`
}

// Domains returns the failure domain of a disk among disks: its node when
// the disks span several nodes (losing a node must lose nothing); on one
// node, the filesystem it is on, since two directories of one filesystem
// fail together. A disk whose filesystem is not known is its own domain.
func Domains(disks []Disk) func(Disk) string {
	nodes := map[string]bool{}
	for _, d := range disks {
		nodes[d.Node] = true
	}
	if len(nodes) > 1 {
		return func(d Disk) string { return "node:" + d.Node }
	}
	return func(d Disk) string {
		if d.Device == "" {
			return "disk:" + d.ID
		}
		return "dev:" + d.Device
	}
}

// MaxShards caps k+m: wider stripes cost more requests per read for little gain.
const MaxShards = 16

// ErrNotEnoughDisks means the layout cannot be placed on the disks available.
var ErrNotEnoughDisks = errors.New("not enough disks for the layout")

// DefaultLayout follows the cluster's shape. One node: parity across its
// filesystems (Domains: directories sharing one count as one), 1+1 for two,
// f-1+1 up to four, f-2+2 beyond, with at most m shards on any of them; a
// node whose disks all share one filesystem spreads parity over its
// directories instead, which guards against a damaged shard file but not
// against losing that filesystem (nothing there can). Several nodes: as
// many shards as disks (up to MaxShards) with parity m equal to the most
// shards any node must hold, so losing a whole node loses at most m shards.
// Three nodes with two disks each give 4+2, at most 2 shards per node.
func DefaultLayout(disks []Disk) (erasure.Layout, error) {
	domain := Domains(disks)
	perNode := map[string]int{}
	domains := map[string]bool{}
	for _, d := range disks {
		perNode[d.Node]++
		domains[domain(d)] = true
	}
	n := min(len(disks), MaxShards)
	l := erasure.Layout{StripeSize: erasure.DefaultStripeSize}
	switch {
	case n == 0:
		return l, ErrNotEnoughDisks
	case len(perNode) == 1:
		if len(domains) > 1 {
			n = min(len(domains), MaxShards)
		}
		l.Parity = 1
		if n == 1 {
			l.Parity = 0 // one disk: nothing to spread parity over
		} else if n >= 5 {
			l.Parity = 2
		}
	default:
		for m := (n + len(perNode) - 1) / len(perNode); ; m++ {
			capacity := 0
			for _, c := range perNode {
				capacity += min(c, m)
			}
			if capacity >= n && n-m >= 1 {
				l.Parity = m
				break
			}
			if n-m < 1 {
				// Too few disks to survive a node loss with any data shard:
				// mirror as widely as possible.
				l.Parity = n - 1
				break
			}
		}
	}
	l.Data = n - l.Parity
	return l, l.Validate()
}

// Place picks l.Shards() distinct disks for an object, at most l.Parity in
// any one failure domain (when there is more than one: Domains), spreading
// objects over disks by rendezvous hashing of the key so the choice is
// deterministic and moves little when disks come and go. Disks with no free
// space are skipped. A layout that cannot keep to the filesystems of a
// single node (an admin's bucket layout wider than they are) is placed as
// before filesystems were known: at most m per node (NodeCap).
//
// Whole copies (1+m) go one to a failure domain where there are enough of
// them, so that every node of a three-node pool holds one and reads it
// locally.
func Place(l erasure.Layout, disks []Disk, key string) ([]Disk, error) {
	if l.Data == 1 && l.Parity > 0 {
		if out, err := placeCapped(l, disks, key, OneEach); err == nil {
			return out, nil
		}
	}
	out, err := placeCapped(l, disks, key, DomainCap)
	if err != nil {
		out, err = placeCapped(l, disks, key, NodeCap)
	}
	return out, err
}

func placeCapped(l erasure.Layout, disks []Disk, key string, capOf func(erasure.Layout, []Disk) (func(Disk) string, int)) ([]Disk, error) {
	type scored struct {
		Disk
		score uint64
	}
	nodes := map[string]bool{}
	var cand []scored
	for _, d := range disks {
		nodes[d.Node] = true
		if d.Free == 0 {
			continue
		}
		cand = append(cand, scored{d, xxhash.Sum64String(key + "\x00" + d.ID)})
	}
	sort.Slice(cand, func(i, j int) bool { return cand[i].score > cand[j].score })
	domain, most := capOf(l, disks)
	used := map[string]int{}
	var out []Disk
	for _, c := range cand {
		if len(out) == l.Shards() {
			break
		}
		if used[domain(c.Disk)] >= most {
			continue
		}
		used[domain(c.Disk)]++
		out = append(out, c.Disk)
	}
	if len(out) < l.Shards() {
		return nil, fmt.Errorf("place %s on %d disks over %d nodes: %w", l, len(cand), len(nodes), ErrNotEnoughDisks)
	}
	return out, nil
}

// DomainCap returns the failure domain of a disk among disks and the most
// shards of one object a domain may hold: l's parity when there are several
// domains, so losing any one loses nothing; all of them when there is one.
func DomainCap(l erasure.Layout, disks []Disk) (func(Disk) string, int) {
	domain := Domains(disks)
	domains := map[string]bool{}
	for _, d := range disks {
		domains[domain(d)] = true
	}
	if len(domains) > 1 {
		return domain, max(l.Parity, 1)
	}
	return domain, l.Shards()
}

// OneEach allows one shard per failure domain: where whole copies (1+m)
// go first, at placement and when the healer rebuilds one.
func OneEach(_ erasure.Layout, disks []Disk) (func(Disk) string, int) {
	return Domains(disks), 1
}

// NodeCap is the rule before filesystems were known, and what the healer
// and placement fall back to when a single node's filesystems cannot hold
// a layout: at most m shards per node when there are several nodes, any
// number on one.
func NodeCap(l erasure.Layout, disks []Disk) (func(Disk) string, int) {
	nodes := map[string]bool{}
	for _, d := range disks {
		nodes[d.Node] = true
	}
	domain := func(d Disk) string { return d.Node }
	if len(nodes) > 1 {
		return domain, max(l.Parity, 1)
	}
	return domain, l.Shards()
}

// SurvivesNodeLoss reports whether the shards written, by node ("" for a
// shard not written), can still be read after losing any one node: at least
// k must remain after removing the node that holds the most.
func SurvivesNodeLoss(l erasure.Layout, written []string) bool {
	per := map[string]int{}
	total, most := 0, 0
	for _, node := range written {
		if node == "" {
			continue
		}
		total++
		per[node]++
		most = max(most, per[node])
	}
	if len(per) <= 1 {
		// A single node cannot survive its own loss; parity across its disks
		// protects against a disk, which is the best one node can do.
		return total >= l.Data+min(l.Parity, 1)
	}
	return total-most >= l.Data
}
