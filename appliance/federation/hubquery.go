package federation

import (
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// SiteStatus is a site as the hub shows it to one user: its enrolment,
// whether it is reachable, and the summary of its cached inventory with
// that inventory's age.
type SiteStatus struct {
	Site
	Role HubRole `json:"role"` // the caller's
	// Connected: a session is recorded on some hub node and the site was
	// heard from within StaleAfter.
	Connected   bool      `json:"connected"`
	HubNode     string    `json:"hub_node,omitempty"`
	From        string    `json:"from,omitempty"` // where its session comes from
	LastContact time.Time `json:"last_contact,omitzero"`
	// UpdatedAt is when the inventory last changed, AgeSeconds how long
	// ago the hub last heard the site say it was current.
	UpdatedAt  time.Time `json:"inventory_updated_at,omitzero"`
	AgeSeconds int64     `json:"inventory_age_seconds"`
	// From the inventory: zero until the site sent one.
	Health             string  `json:"health,omitempty"`
	Alerts             int     `json:"alerts"`
	Version            string  `json:"version,omitempty"`
	Nodes              int     `json:"nodes"`
	VMs                int     `json:"vms"`
	Volumes            int     `json:"volumes"`
	DegradedVolumes    int     `json:"degraded_volumes"`
	FreeStoragePercent float64 `json:"free_storage_percent"`
}

// SiteFilter narrows a listing of sites; zero values keep everything.
type SiteFilter struct {
	Group            string
	Health           string  // ok, degraded
	DegradedVolumes  bool    // only sites with a volume below full redundancy
	FreeStorageBelow float64 // only sites with less free raw storage, in percent
	Unreachable      bool    // only sites not connected now
}

func (f SiteFilter) keep(s *SiteStatus) bool {
	switch {
	case f.Group != "" && s.Group != f.Group,
		f.Health != "" && s.Health != f.Health,
		f.DegradedVolumes && s.DegradedVolumes == 0,
		f.FreeStorageBelow > 0 && (s.Health == "" || s.FreeStoragePercent >= f.FreeStorageBelow),
		f.Unreachable && s.Connected:
		return false
	}
	return true
}

func status(txn *memdb.Txn, p *identity.Principal, s *Site, now time.Time) (*SiteStatus, *Inventory) {
	st := &SiteStatus{Site: *s, Role: roleOn(txn, p, s)}
	st.Serials = nil
	inv := consensus.First[SiteInventory](txn, tInventory, "id", s.ID)
	if inv == nil {
		return st, nil
	}
	st.Connected = s.Active() && inv.Reachable(now)
	st.HubNode, st.From, st.LastContact, st.UpdatedAt = inv.HubNode, inv.From, inv.ContactAt, inv.UpdatedAt
	if !inv.ContactAt.IsZero() {
		st.AgeSeconds = int64(now.Sub(inv.ContactAt) / time.Second)
	}
	if !st.Connected {
		st.HubNode, st.From = "", ""
	}
	if i := inv.Inventory; i != nil {
		st.Health, st.Alerts, st.Version = i.Health, len(i.Alerts), i.Version
		st.Nodes, st.VMs, st.Volumes, st.DegradedVolumes = len(i.Nodes), len(i.VMs), len(i.Volumes), i.DegradedVolumes()
		st.FreeStoragePercent = i.Capacity.FreeStoragePercent()
	}
	return st, inv.Inventory
}

// ListSites lists the sites p has a role on (a hub admin: all), as f
// keeps them.
func (h *Hub) ListSites(p *identity.Principal, f SiteFilter) []SiteStatus {
	txn := h.c.Store().ReadTxn()
	it, err := txn.Get(tSites, "id")
	out := []SiteStatus{}
	if err != nil {
		return out
	}
	now := time.Now()
	for o := it.Next(); o != nil; o = it.Next() {
		st, _ := status(txn, p, o.(*Site), now)
		if st.Role != "" && f.keep(st) {
			out = append(out, *st)
		}
	}
	return out
}

// SiteDetail is a site with its whole cached inventory.
type SiteDetail struct {
	SiteStatus
	Inventory *Inventory `json:"inventory"` // nil until the site sent one
}

// SiteDetail is one site (by ID or name) p has a role on, with its cached
// inventory.
func (h *Hub) SiteDetail(p *identity.Principal, ref string) (*SiteDetail, error) {
	txn := h.c.Store().ReadTxn()
	s, _, err := h.visibleSite(txn, p, ref)
	if err != nil {
		return nil, err
	}
	st, inv := status(txn, p, s, time.Now())
	return &SiteDetail{SiteStatus: *st, Inventory: inv}, nil
}

// SiteVM is a VM found across sites.
type SiteVM struct {
	Site string `json:"site"`
	InvVM
}

// FindVMs lists the VMs named name (every VM, for "") on the sites p has
// a role on, as each site's cached inventory has them.
func (h *Hub) FindVMs(p *identity.Principal, name, project string) []SiteVM {
	txn := h.c.Store().ReadTxn()
	out := []SiteVM{}
	it, err := txn.Get(tSites, "id")
	if err != nil {
		return out
	}
	for o := it.Next(); o != nil; o = it.Next() {
		s := o.(*Site)
		if roleOn(txn, p, s) == "" {
			continue
		}
		inv := consensus.First[SiteInventory](txn, tInventory, "id", s.ID)
		if inv == nil || inv.Inventory == nil {
			continue
		}
		for _, vm := range inv.Inventory.VMs {
			if (name == "" || vm.Name == name) && (project == "" || vm.Project == project) {
				out = append(out, SiteVM{Site: s.Name, InvVM: vm})
			}
		}
	}
	return out
}
