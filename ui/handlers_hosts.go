package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
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
			_, err = s.compute.DrainNode(r.Context(), v.p, node, hypervisor.DrainOptions{Restart: r.PostFormValue("restart") == "true", Convert: r.PostFormValue("convert") == "true"})
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

// stayText says why a drain left a VM on its node, in the reader's
// language; its reason's own words where the catalogue knows them.
func stayText(v *view, st hypervisor.DrainStay) string {
	tmpl, ok := v.tr.msgs["drain.stay."+st.Key]
	if !ok || strings.Count(tmpl, "%s") != len(st.Args)+1 {
		// A newer node's reason: as the drain's English says it.
		en, _ := hypervisor.StayText(st.Key)
		if strings.Count(en, "%s") == len(st.Args) {
			return st.VM + " stays: " + fmt.Sprintf(en, anys(st.Args)...)
		}
		return st.VM + ": " + strings.Join(st.Args, "; ")
	}
	args := append([]any{st.VM}, anys(st.Args)...)
	if len(st.Args) == 0 {
		return fmt.Sprintf(tmpl, args...)
	}
	switch why := st.Args[0]; st.Key {
	case "cannot_move":
		switch {
		case strings.HasPrefix(why, "it has local disks"):
			args[1] = v.T("drain.why.local")
		case strings.HasPrefix(why, "it has local data disks"):
			args[1] = v.T("drain.why.data_disks")
		case strings.HasPrefix(why, "it boots with UEFI"):
			args[1] = v.T("drain.why.uefi")
		}
	case "no_live", "no_target":
		args[1] = vmErrorText(v, why)
	case "no_convert":
		for _, k := range []struct{ has, key string }{
			{"quota exceeded", "drain.why.quota"}, {"no node has a disk", "drain.why.no_disk"},
			{"makes no volumes", "drain.why.no_disk"}, {"no other node can take it", "drain.why.no_target"},
		} {
			if strings.Contains(why, k.has) {
				args[1] = v.T(k.key)
				break
			}
		}
	case "not_live":
		switch why {
		case "it cannot move live":
			args[1] = v.T("drain.why.cannot_live")
		case "its live migration did not complete":
			args[1] = v.T("drain.why.live_failed")
		default:
			args[1] = haWhy(v, why)
		}
	case "state":
		args[1] = v.Tor("vmstate."+why, why)
	}
	return fmt.Sprintf(tmpl, args...)
}

func anys(s []string) []any {
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}
