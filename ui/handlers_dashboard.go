package ui

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
)

// dashboardData loads the dashboard; the capacity only with capacity (the
// cluster panel's refresh does without).
func (s *server) dashboardData(r *http.Request, v *view, capacity bool) dashboardData {
	var d dashboardData
	if s.status != nil {
		d.Status, d.HasStatus = s.status(), true
	}
	if s.joinToken != nil && v.admin() {
		d.JoinToken = s.joinToken()
	}
	if s.admission != nil && v.admin() {
		d.Admission, d.Pending = true, s.admission.PendingNodes()
	}
	if s.compute != nil && v.p != nil {
		d.Failovers = s.compute.RecentFailovers(v.p, time.Now().Add(-24*time.Hour))
	}
	if capacity && s.compute != nil && v.admin() {
		c, err := s.compute.Capacity(r.Context(), v.p, hypervisor.CapacitySources{Storage: s.disks, Objects: s.objects, Volumes: s.volumes})
		if err != nil {
			s.logErr(r, err)
			d.CapacityErr = errorText(v.tr, err)
		}
		d.Capacity = c
	}
	return d
}

// headroomWhy says, in the viewer's language, what keeps the cluster from
// losing a node safely (hypervisor.Capacity's reasons).
func headroomWhy(v *view, c *hypervisor.Capacity) []string {
	var out []string
	for _, r := range c.Reasons {
		out = append(out, reasonText(v, r))
	}
	return out
}

// reasonText says one thing that keeps a cluster from losing a node
// safely, in the viewer's language.
func reasonText(v *view, r hypervisor.Reason) string {
	switch r.Kind {
	case hypervisor.ReasonFewNodes:
		if r.Count == 0 {
			return v.T("capacity.why_no_nodes")
		}
		return v.T("capacity.why_one_node")
	case hypervisor.ReasonNodeDown:
		return v.Tf("capacity.why_node_down", r.Node)
	case hypervisor.ReasonQuorum:
		return v.Tf("capacity.why_quorum", r.Node)
	case hypervisor.ReasonNoRoom:
		return v.Tf("capacity.why_no_room", r.Node, names(v, r.Names))
	case hypervisor.ReasonStayDown:
		return v.Tf("capacity.why_stay", r.Node, names(v, r.Names))
	case hypervisor.ReasonVolumes:
		return v.Tf("capacity.why_volumes", r.Node, names(v, r.Names))
	case hypervisor.ReasonDisksOneNode:
		return v.T("capacity.why_disks_one_node")
	case hypervisor.ReasonDegraded:
		return v.Tf("capacity.why_degraded", r.Count)
	case hypervisor.ReasonOneNodeData:
		return v.Tf("capacity.why_one_node_data", r.Count)
	case hypervisor.ReasonUnknown:
		return v.T("capacity.why_unknown")
	case hypervisor.ReasonNoCopy:
		return v.Tf("capacity.why_no_copy", names(v, r.Names))
	}
	return r.Text // a newer node's reason: its English words beat none
}

// names lists a few names and says how many more there are.
func names(v *view, ns []string) string {
	const most = 5
	if len(ns) <= most {
		return strings.Join(ns, v.T("common.list_sep"))
	}
	return v.Tf("common.and_more", strings.Join(ns[:most], v.T("common.list_sep")), len(ns)-most)
}

// ratioText shows an overcommit ratio: 4, 1.5.
func ratioText(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }

func utoa(n uint64) string { return strconv.FormatUint(n, 10) }

func (s *server) dashboard(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "dashboard"
	if name := r.URL.Query().Get("approved"); name != "" {
		v.flash = v.Tf("dashboard.approved", name)
	}
	s.render(w, r, http.StatusOK, dashboardPage(v, s.dashboardData(r, v, true)))
}

// clusterFragment is the htmx auto-refresh of the cluster panel.
func (s *server) clusterFragment(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusOK, clusterPanel(v, s.dashboardData(r, v, false)))
}

// clusterHealthy is the one-word summary for staff who do not read Raft
// tables: a leader, every node healthy, and gossip not struggling.
func clusterHealthy(st consensus.Status) bool {
	if st.Leader == "" || st.GossipHealth > 0 || len(st.Nodes) == 0 {
		return false
	}
	for _, n := range st.Nodes {
		if !n.Healthy {
			return false
		}
	}
	return true
}

func boolString(b bool) string { return strconv.FormatBool(b) }
