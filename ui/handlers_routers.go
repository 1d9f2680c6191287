package ui

import (
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
)

// The router and floating IP pages: routers (list, create, a router's
// networks, its way out and its addresses per box, delete) and floating
// IPs (list, take one, give it to a machine, take it back, release it).

func routerURL(id string) templ.SafeURL   { return templ.URL("/routers/" + url.PathEscape(id)) }
func floatingURL(id string) templ.SafeURL { return templ.URL("/floating-ips/" + url.PathEscape(id)) }

func routerDeleteHint(v *view, networks int) string {
	if networks > 0 {
		return v.Tf("router.in_use", networks)
	}
	return ""
}

// portsOf are the choices for a floating IP of a project.
func portsOf(all []portChoice, project string) []portChoice {
	var out []portChoice
	for _, p := range all {
		if p.Project == project {
			out = append(out, p)
		}
	}
	return out
}

// externalNetworks are the cluster's external networks.
func (s *server) externalNetworks(v *view) []netfabric.Network {
	nws, err := s.networks.ListNetworks(v.p, "")
	if err != nil {
		return nil
	}
	var out []netfabric.Network
	for _, n := range nws {
		if n.External {
			out = append(out, n)
		}
	}
	return out
}

func (s *server) routersData(v *view, f routerForm) (routersData, error) {
	names, writable := s.projectNames(v)
	rs, err := s.networks.ListRouters(v.p, "")
	if err != nil {
		return routersData{}, err
	}
	d := routersData{Projects: writable, Form: f}
	for _, r := range rs {
		d.Routers = append(d.Routers, routerRow{RouterView: r, ProjectName: or(names[r.Project], r.Project)})
	}
	if d.Form.Project == "" && len(writable) > 0 {
		d.Form.Project = writable[0].ID
	}
	return d, nil
}

func (s *server) routersPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.routersData(v, routerForm{})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if name := r.URL.Query().Get("deleted"); name != "" {
		v.flash = v.Tf("routers.deleted", name)
	}
	s.render(w, r, http.StatusOK, routersPage(v, d))
}

func (s *server) createRouter(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	f := routerForm{Name: strings.TrimSpace(r.PostFormValue("name")), Project: r.PostFormValue("project")}
	again := func(field, msg string) {
		f.ErrField, f.Err = field, msg
		d, err := s.routersData(v, f)
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		s.render(w, r, formStatus, routersPage(v, d))
	}
	if !volumeNameRE.MatchString(f.Name) {
		again("name", v.T("volumes.name_bad"))
		return
	}
	rt, err := s.networks.CreateRouter(r.Context(), v.p, netfabric.RouterCreate{Name: f.Name, Project: f.Project})
	if err != nil {
		s.logErr(r, err)
		field := ""
		if strings.Contains(strings.ToLower(err.Error()), "name") {
			field = "name"
		}
		again(field, errorText(v.tr, err))
		return
	}
	s.redirect(w, r, string(routerURL(rt.ID))+"?done=create")
}

func (s *server) routerData(r *http.Request, v *view, ref string) (routerData, error) {
	rt, err := s.networks.GetRouter(r.Context(), v.p, ref)
	if err != nil {
		return routerData{}, err
	}
	names, _ := s.projectNames(v)
	d := routerData{Row: routerRow{RouterView: *rt, ProjectName: or(names[rt.Project], rt.Project)},
		CanChange: v.p.Can(rt.Project, identity.RoleMember), External: s.externalNetworks(v)}
	nws, err := s.networks.ListNetworks(v.p, rt.Project)
	if err != nil {
		return routerData{}, err
	}
	onRouter := map[string]bool{}
	if all, err := s.networks.ListRouters(v.p, rt.Project); err == nil {
		for _, o := range all {
			for _, id := range o.Networks {
				onRouter[id] = true
			}
		}
	}
	for _, n := range nws {
		switch {
		case containsStr(rt.Networks, n.ID):
			d.Networks = append(d.Networks, routerNet{ID: n.ID, Name: n.Name, CIDR: n.CIDR, Gateway: n.Gateway})
		case n.IsOverlay() && n.Project == rt.Project && !onRouter[n.ID] && !n.SiteGateway: // the site's router routes that one
			d.Free = append(d.Free, n)
		}
	}
	for box, addr := range rt.GatewayAddress {
		d.Addresses = append(d.Addresses, boxAddress{Box: box, Address: addr})
	}
	sort.Slice(d.Addresses, func(i, j int) bool { return d.Addresses[i].Box < d.Addresses[j].Box })
	return d, nil
}

func (s *server) routerPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.routerData(r, v, r.PathValue("router"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	switch r.URL.Query().Get("done") {
	case "create":
		v.flash = v.Tf("routers.created", d.Row.Name)
	case "connect":
		v.flash = v.T("router.connected")
	case "disconnect":
		v.flash = v.T("router.disconnected")
	case "gateway":
		v.flash = v.T("router.way_out_set")
	}
	s.render(w, r, http.StatusOK, routerPage(v, d))
}

func (s *server) routerAction(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	ref, network := r.PathValue("router"), r.PostFormValue("network")
	var err error
	done := r.PathValue("action")
	switch done {
	case "connect":
		_, err = s.networks.SetRouterInterface(r.Context(), v.p, ref, network, false)
	case "disconnect":
		_, err = s.networks.SetRouterInterface(r.Context(), v.p, ref, network, true)
	case "gateway":
		_, err = s.networks.SetRouterGateway(r.Context(), v.p, ref, network)
	case "delete":
		var rt *netfabric.RouterView
		if rt, err = s.networks.DeleteRouter(r.Context(), v.p, ref); err == nil {
			s.redirect(w, r, "/routers?deleted="+url.QueryEscape(rt.Name))
			return
		}
	default:
		s.failPage(w, r, v, consensus.Errorf(consensus.CodeNotFound, "no such action"))
		return
	}
	if err != nil {
		s.logErr(r, err)
		d, derr := s.routerData(r, v, ref)
		if derr != nil {
			s.failPage(w, r, v, derr)
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, routerPage(v, d))
		return
	}
	s.redirect(w, r, string(routerURL(ref))+"?done="+done)
}

func (s *server) floatingData(r *http.Request, v *view, f floatingForm) (floatingData, error) {
	names, writable := s.projectNames(v)
	fs, err := s.networks.ListFloatingIPs(v.p, "")
	if err != nil {
		return floatingData{}, err
	}
	d := floatingData{External: s.externalNetworks(v), Projects: writable, Form: f}
	extName := map[string]string{}
	for _, n := range d.External {
		extName[n.ID] = n.Name
	}
	vmName := s.vmNames(v)
	for _, fl := range fs {
		d.Floating = append(d.Floating, floatingRow{FloatingIPView: fl, ProjectName: or(names[fl.Project], fl.Project),
			VMName: or(vmName[fl.Owner], fl.Owner), Network: extName[fl.NetworkID], CanChange: v.p.Can(fl.Project, identity.RoleMember)})
	}
	// The ports a floating IP may go to: those on a project network whose
	// router has a way out, of a machine the viewer may change.
	can := map[string]bool{}
	for _, p := range writable {
		can[p.ID] = true
	}
	rs, _ := s.networks.ListRouters(v.p, "")
	for _, rt := range rs {
		if rt.External == "" || !can[rt.Project] {
			continue
		}
		for _, nid := range rt.Networks {
			ps, err := s.networks.ListPorts(r.Context(), v.p, nid)
			if err != nil {
				continue
			}
			for _, p := range ps {
				if p.Project != rt.Project {
					continue
				}
				d.Ports = append(d.Ports, portChoice{ID: p.ID, Project: p.Project, Label: or(vmName[p.Owner], p.Owner) + " (" + p.IP + ")"})
			}
		}
	}
	sort.Slice(d.Ports, func(i, j int) bool { return d.Ports[i].Label < d.Ports[j].Label })
	if d.Form.Project == "" && len(writable) > 0 {
		d.Form.Project = writable[0].ID
	}
	return d, nil
}

// vmNames maps the VMs the viewer sees by ID to their names.
func (s *server) vmNames(v *view) map[string]string {
	out := map[string]string{}
	if s.compute == nil {
		return out
	}
	if vms, err := s.compute.ListVMs(v.p, ""); err == nil {
		for _, vm := range vms {
			out[vm.ID] = vm.Name
		}
	}
	return out
}

func (s *server) floatingPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.floatingData(r, v, floatingForm{})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if ip := r.URL.Query().Get("ip"); ip != "" {
		switch r.URL.Query().Get("done") {
		case "create":
			v.flash = v.Tf("floating.created", ip)
		case "associate":
			v.flash = v.Tf("floating.given", ip)
		case "disassociate":
			v.flash = v.Tf("floating.taken_back", ip)
		case "delete":
			v.flash = v.Tf("floating.released", ip)
		}
	}
	s.render(w, r, http.StatusOK, floatingPage(v, d))
}

func (s *server) createFloating(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	f := floatingForm{Network: r.PostFormValue("network"), Project: r.PostFormValue("project")}
	fl, err := s.networks.CreateFloatingIP(r.Context(), v.p, netfabric.FloatingIPCreate{Network: f.Network, Project: f.Project})
	if err != nil {
		s.logErr(r, err)
		f.Err = errorText(v.tr, err)
		d, derr := s.floatingData(r, v, f)
		if derr != nil {
			s.failPage(w, r, v, derr)
			return
		}
		s.render(w, r, formStatus, floatingPage(v, d))
		return
	}
	s.redirect(w, r, "/floating-ips?done=create&ip="+url.QueryEscape(fl.IP))
}

func (s *server) floatingAction(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	ref, done := r.PathValue("fip"), r.PathValue("action")
	var fl *netfabric.FloatingIPView
	var err error
	switch done {
	case "associate":
		if port := r.PostFormValue("port"); port == "" {
			err = consensus.Errorf(consensus.CodeInvalid, "%s", v.T("floating.choose_machine"))
		} else {
			fl, err = s.networks.AssociateFloatingIP(r.Context(), v.p, ref, port)
		}
	case "disassociate":
		fl, err = s.networks.AssociateFloatingIP(r.Context(), v.p, ref, "")
	case "delete":
		fl, err = s.networks.DeleteFloatingIP(r.Context(), v.p, ref)
	default:
		s.failPage(w, r, v, consensus.Errorf(consensus.CodeNotFound, "no such action"))
		return
	}
	if err != nil {
		s.logErr(r, err)
		d, derr := s.floatingData(r, v, floatingForm{})
		if derr != nil {
			s.failPage(w, r, v, derr)
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, floatingPage(v, d))
		return
	}
	s.redirect(w, r, "/floating-ips?done="+done+"&ip="+url.QueryEscape(fl.IP))
}
