package ui

import (
	"net/http"
	"strconv"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

func (s *server) dashboardData(v *view) dashboardData {
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
	return d
}

func (s *server) dashboard(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "dashboard"
	if name := r.URL.Query().Get("approved"); name != "" {
		v.flash = v.Tf("dashboard.approved", name)
	}
	s.render(w, r, http.StatusOK, dashboardPage(v, s.dashboardData(v)))
}

// clusterFragment is the htmx auto-refresh of the cluster panel.
func (s *server) clusterFragment(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusOK, clusterPanel(v, s.dashboardData(v)))
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
