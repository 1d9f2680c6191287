package ui

import (
	"net/http"
	"net/url"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
)

// hostState is a host's one-word state for the page and its tests.
func hostState(h hypervisor.HostView, now time.Time) string {
	switch {
	case !hypervisor.HostAlive(h.Host, now):
		return "silent"
	case h.Cordon != nil && h.Cordon.Drain != nil && h.Cordon.Drain.State == hypervisor.DrainDraining:
		return "draining"
	case h.Cordon != nil && h.Cordon.Drain != nil:
		return "drained"
	case h.Cordon != nil:
		return "cordoned"
	}
	return "in_use"
}

func (s *server) hostsData(v *view) (hostsData, error) {
	hs, err := s.compute.Hosts(v.p)
	return hostsData{Hosts: hs, Now: time.Now()}, err
}

// hosts lists the nodes that run VMs, for cluster admins: their load and
// whether they take new VMs, with cordon, uncordon and drain.
func (s *server) hosts(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "hosts"
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	d, err := s.hostsData(v)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if node := r.URL.Query().Get("node"); node != "" {
		switch r.URL.Query().Get("done") {
		case "cordon":
			v.flash = v.Tf("hosts.done_cordon", node)
		case "uncordon":
			v.flash = v.Tf("hosts.done_uncordon", node)
		case "drain":
			v.flash = v.Tf("hosts.done_drain", node)
		}
	}
	s.render(w, r, http.StatusOK, hostsPage(v, d))
}

// hostsFragment is the htmx auto-refresh of the hosts table.
func (s *server) hostsFragment(w http.ResponseWriter, r *http.Request, v *view) {
	if s.compute == nil {
		s.computeUnavailable(w, r, v)
		return
	}
	d, err := s.hostsData(v)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, hostsPanel(v, d))
}

// hostAction cordons, uncordons or drains a node, then shows the page
// again: with the outcome, or with why it was refused (nothing changed).
func (s *server) hostAction(action string) func(http.ResponseWriter, *http.Request, *view) {
	return func(w http.ResponseWriter, r *http.Request, v *view) {
		v.nav = "hosts"
		if s.compute == nil {
			s.computeUnavailable(w, r, v)
			return
		}
		node := r.PathValue("node")
		var err error
		switch action {
		case "cordon":
			_, err = s.compute.CordonNode(r.Context(), v.p, node, r.PostFormValue("reason"))
		case "uncordon":
			err = s.compute.UncordonNode(r.Context(), v.p, node)
		case "drain":
			_, err = s.compute.DrainNode(r.Context(), v.p, node, r.PostFormValue("restart") == "true")
		}
		if err != nil {
			s.logErr(r, err)
			v.err = errorText(v.tr, err)
			d, lerr := s.hostsData(v)
			if lerr != nil {
				s.failPage(w, r, v, lerr)
				return
			}
			s.render(w, r, formStatus, hostsPage(v, d))
			return
		}
		s.redirect(w, r, "/hosts?done="+action+"&node="+url.QueryEscape(node))
	}
}
