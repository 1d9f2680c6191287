package federation

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnhq/cairn/consensus"
)

// Collector gives the hub's /metrics every site's key figures with a
// site label, from the cached inventories: central IT's Prometheus
// scrapes one place.
func (h *Hub) Collector() prometheus.Collector { return (*hubCollector)(h) }

type hubCollector Hub

var (
	mSiteUp       = prometheus.NewDesc("cairn_site_up", "1 while the site is connected to the hub and heard from lately.", []string{"site", "group"}, nil)
	mSiteAge      = prometheus.NewDesc("cairn_site_inventory_age_seconds", "Seconds since the hub last heard the site (its inventory's age).", []string{"site"}, nil)
	mSiteHealthy  = prometheus.NewDesc("cairn_site_healthy", "1 while the site's last inventory said it is healthy (no critical alert).", []string{"site"}, nil)
	mSiteAlerts   = prometheus.NewDesc("cairn_site_alerts", "The site's alerts, by severity.", []string{"site", "severity"}, nil)
	mSiteNodes    = prometheus.NewDesc("cairn_site_nodes", "The site's nodes.", []string{"site"}, nil)
	mSiteVMs      = prometheus.NewDesc("cairn_site_vms", "The site's VMs, by state.", []string{"site", "state"}, nil)
	mSiteVCPUs    = prometheus.NewDesc("cairn_site_vcpus", "The site's vCPUs for VMs, and those in use.", []string{"site", "kind"}, nil)
	mSiteRAM      = prometheus.NewDesc("cairn_site_ram_bytes", "The site's memory for VMs, and that in use.", []string{"site", "kind"}, nil)
	mSiteStorage  = prometheus.NewDesc("cairn_site_storage_bytes", "The site's raw storage, and what is free.", []string{"site", "kind"}, nil)
	mSiteDegraded = prometheus.NewDesc("cairn_site_degraded_volumes", "The site's volumes below full redundancy.", []string{"site"}, nil)
)

func (c *hubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mSiteUp, mSiteAge, mSiteHealthy, mSiteAlerts, mSiteNodes, mSiteVMs, mSiteVCPUs, mSiteRAM, mSiteStorage, mSiteDegraded} {
		ch <- d
	}
}

func (c *hubCollector) Collect(ch chan<- prometheus.Metric) {
	txn := c.c.Store().ReadTxn()
	it, err := txn.Get(tSites, "id")
	if err != nil {
		return
	}
	now := time.Now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for o := it.Next(); o != nil; o = it.Next() {
		s := o.(*Site)
		if !s.Active() {
			continue
		}
		si := consensus.First[SiteInventory](txn, tInventory, "id", s.ID)
		up := 0.0
		if si.Reachable(now) {
			up = 1
		}
		gauge(mSiteUp, up, s.Name, s.Group)
		if si == nil || si.Inventory == nil {
			continue
		}
		gauge(mSiteAge, now.Sub(si.ContactAt).Seconds(), s.Name)
		inv := si.Inventory
		healthy := 0.0
		if inv.Health == "ok" {
			healthy = 1
		}
		gauge(mSiteHealthy, healthy, s.Name)
		alerts := map[string]float64{"critical": 0, "warning": 0}
		for _, a := range inv.Alerts {
			alerts[a.Severity]++
		}
		for sev, n := range alerts {
			gauge(mSiteAlerts, n, s.Name, sev)
		}
		gauge(mSiteNodes, float64(len(inv.Nodes)), s.Name)
		states := map[string]float64{}
		for _, vm := range inv.VMs {
			states[vm.State]++
		}
		for st, n := range states {
			gauge(mSiteVMs, n, s.Name, st)
		}
		gauge(mSiteVCPUs, float64(inv.Capacity.VCPUs), s.Name, "total")
		gauge(mSiteVCPUs, float64(inv.Capacity.UsedVCPUs), s.Name, "used")
		gauge(mSiteRAM, float64(inv.Capacity.RAMMiB)*(1<<20), s.Name, "total")
		gauge(mSiteRAM, float64(inv.Capacity.UsedRAMMiB)*(1<<20), s.Name, "used")
		gauge(mSiteStorage, float64(inv.Capacity.StorageBytes), s.Name, "total")
		gauge(mSiteStorage, float64(inv.Capacity.StorageFree), s.Name, "free")
		gauge(mSiteDegraded, float64(inv.DegradedVolumes()), s.Name)
	}
}
