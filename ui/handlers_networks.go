package ui

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
)

// The network pages: project networks (list, create, a network and its
// VMs, delete) and security groups (list, create, a group's rules in
// words, add and delete rules, delete a group).

func networkURL(id string) templ.SafeURL { return templ.URL("/networks/" + url.PathEscape(id)) }
func groupURL(id string) templ.SafeURL   { return templ.URL("/security-groups/" + url.PathEscape(id)) }

// networkKind says what a network is, in words.
func networkKind(v *view, n *netfabric.Network) string {
	if n.IsVLAN() {
		return v.T("networks.kind_vlan")
	}
	if n.IsOverlay() {
		return v.T("networks.kind_project")
	}
	if n.External {
		return v.T("networks.kind_external")
	}
	return v.T("networks.kind_cluster")
}

// networkTech is the same in the technical terms, for a tooltip.
func networkTech(v *view, n *netfabric.Network) string {
	if n.IsVLAN() && n.SiteGateway {
		return v.Tf("networks.tech_vlan_site", n.VLAN, n.Interface, n.MTU, n.Gateway)
	}
	if n.IsVLAN() {
		return v.Tf("networks.tech_vlan", n.VLAN, n.Interface, n.MTU)
	}
	if n.IsOverlay() {
		return v.Tf("networks.tech_project", n.VNI, n.MTU)
	}
	if n.External {
		return v.Tf("networks.tech_external", n.Interface)
	}
	return v.T("networks.tech_cluster")
}

func groupDescription(v *view, g *netfabric.SecurityGroup) string {
	if g.Name == netfabric.DefaultGroupName && g.ID == netfabric.DefaultGroupID(g.Project) {
		return v.T("groups.default_description")
	}
	return g.Description
}

func protocolName(v *view, p string) string {
	if p == "" {
		return v.T("group.proto_any")
	}
	return strings.ToUpper(p)
}

func deleteHint(v *view, inUse int) string {
	if inUse > 0 {
		return v.Tf("network.in_use", inUse)
	}
	return ""
}

func projectSuffix(name string) string {
	if name == "" {
		return ""
	}
	return " (" + name + ")"
}

// hasNetwork and hasGroup: the VM form's boxes as posted (or, for a new
// form, the default network).
func (f vmForm) hasNetwork(id string) bool {
	if f.Networks == nil {
		return id == netfabric.DefaultNetworkID
	}
	return containsStr(f.Networks, id)
}

func (f vmForm) hasGroup(id string) bool { return containsStr(f.Groups, id) }

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (s *server) networkUnavailable(w http.ResponseWriter, r *http.Request, v *view) {
	s.render(w, r, http.StatusServiceUnavailable, messagePage(v, v.T("error.title"), v.T("networks.unavailable")))
}

func (s *server) networkRows(r *http.Request, v *view) ([]networkRow, error) {
	nws, err := s.networks.ListNetworks(v.p, "")
	if err != nil {
		return nil, err
	}
	names, _ := s.projectNames(v)
	var out []networkRow
	for _, n := range nws {
		row := networkRow{Network: n, ProjectName: names[n.Project]}
		if n.IsOverlay() && row.ProjectName == "" {
			row.ProjectName = n.Project
		}
		if ps, err := s.networks.ListPorts(r.Context(), v.p, n.ID); err == nil {
			row.Ports = len(ps)
		}
		out = append(out, row)
	}
	return out, nil
}

func (s *server) networksData(r *http.Request, v *view, f networkForm) (networksData, error) {
	rows, err := s.networkRows(r, v)
	if err != nil {
		return networksData{}, err
	}
	_, writable := s.projectNames(v)
	d := networksData{Networks: rows, Projects: writable, Form: f}
	if d.Form.Project == "" && len(writable) > 0 {
		d.Form.Project = writable[0].ID
	}
	return d, nil
}

func (s *server) networksPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.networksData(r, v, networkForm{})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if name := r.URL.Query().Get("deleted"); name != "" {
		v.flash = v.Tf("networks.deleted", name)
	}
	s.render(w, r, http.StatusOK, networksPage(v, d))
}

func (s *server) createNetwork(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	f := networkForm{Name: strings.TrimSpace(r.PostFormValue("name")), CIDR: strings.TrimSpace(r.PostFormValue("cidr")),
		DNS: strings.TrimSpace(r.PostFormValue("dns")), Project: r.PostFormValue("project")}
	again := func(field, msg string) {
		f.ErrField, f.Err = field, msg
		d, err := s.networksData(r, v, f)
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		s.render(w, r, formStatus, networksPage(v, d))
	}
	if !volumeNameRE.MatchString(f.Name) {
		again("name", v.T("volumes.name_bad"))
		return
	}
	if _, err := netfabric.ParseCIDR(f.CIDR); err != nil {
		again("cidr", v.T("networks.cidr_bad"))
		return
	}
	req := netfabric.NetworkCreate{Name: f.Name, CIDR: f.CIDR, Project: f.Project}
	for _, d := range strings.FieldsFunc(f.DNS, func(r rune) bool { return r == ',' || r == ' ' }) {
		req.DNS = append(req.DNS, d)
	}
	nw, err := s.networks.CreateNetwork(r.Context(), v.p, req)
	if err != nil {
		s.logErr(r, err)
		field := ""
		msg := strings.ToLower(err.Error())
		switch {
		case strings.Contains(msg, "cidr") || strings.Contains(msg, "overlaps"):
			field = "cidr"
		case strings.Contains(msg, "dns"):
			field = "dns"
		case strings.Contains(msg, "name"):
			field = "name"
		}
		again(field, errorText(v.tr, err))
		return
	}
	s.redirect(w, r, string(networkURL(nw.ID))+"?done=create")
}

func (s *server) networkData(r *http.Request, v *view, ref string) (networkData, error) {
	nw, err := s.networks.GetNetwork(r.Context(), v.p, ref)
	if err != nil {
		return networkData{}, err
	}
	names, _ := s.projectNames(v)
	d := networkData{Row: networkRow{Network: *nw, ProjectName: or(names[nw.Project], nw.Project)},
		CanChange: nw.IsOverlay() && v.p.Can(nw.Project, identity.RoleMember)}
	ports, err := s.networks.ListPorts(r.Context(), v.p, nw.ID)
	if err != nil {
		return networkData{}, err
	}
	groups := map[string]string{}
	if nw.IsOverlay() {
		if gs, err := s.networks.ListSecurityGroups(v.p, nw.Project); err == nil {
			for _, g := range gs {
				groups[g.ID] = g.Name
			}
		}
	}
	vms := s.vmIndex(v)
	for _, p := range ports {
		row := portRow{Port: p, VMName: p.Owner}
		if vm := vms[p.Owner]; vm != nil {
			row.VMName = vm.Name
		}
		for _, g := range p.EffectiveGroups(nw) {
			row.Groups = append(row.Groups, or(groups[g], g))
		}
		d.Ports = append(d.Ports, row)
	}
	d.Row.Ports = len(d.Ports)
	return d, nil
}

func (s *server) networkPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.networkData(r, v, r.PathValue("network"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	switch r.URL.Query().Get("done") {
	case "create":
		v.flash = v.Tf("networks.created", d.Row.Name)
	case "subnet":
		v.flash = v.Tf("network.ipv6_added", d.Row.CIDR6)
	}
	s.render(w, r, http.StatusOK, networkPage(v, d))
}

// ipv6ModeText says how guests get their IPv6 addresses, in words.
func ipv6ModeText(v *view, mode string) string {
	if mode == netfabric.IPv6DHCPv6 {
		return v.T("network.ipv6_dhcpv6")
	}
	return v.T("network.ipv6_slaac")
}

func (s *server) addSubnet(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	cidr, mode := strings.TrimSpace(r.PostFormValue("cidr")), r.PostFormValue("ipv6_mode")
	again := func(msg string) {
		d, err := s.networkData(r, v, r.PathValue("network"))
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		d.Subnet6, d.Mode6, d.Subnet6E = cidr, mode, msg
		s.render(w, r, formStatus, networkPage(v, d))
	}
	if _, err := netfabric.ParseCIDR6(cidr); err != nil {
		again(v.T("network.ipv6_bad"))
		return
	}
	nw, err := s.networks.AddSubnet(r.Context(), v.p, r.PathValue("network"), netfabric.SubnetCreate{CIDR: cidr, IPv6Mode: mode})
	if err != nil {
		s.logErr(r, err)
		again(errorText(v.tr, err))
		return
	}
	s.redirect(w, r, string(networkURL(nw.ID))+"?done=subnet")
}

func (s *server) deleteNetwork(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	nw, err := s.networks.DeleteNetwork(r.Context(), v.p, r.PathValue("network"))
	if err != nil {
		s.logErr(r, err)
		d, derr := s.networkData(r, v, r.PathValue("network"))
		if derr != nil {
			s.failPage(w, r, v, err)
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, networkPage(v, d))
		return
	}
	s.redirect(w, r, "/networks?deleted="+url.QueryEscape(nw.Name))
}

// Security groups.

func (s *server) groupsData(v *view, f groupForm) (groupsData, error) {
	names, writable := s.projectNames(v)
	d := groupsData{Projects: writable, Form: f}
	for _, pr := range s.projectList(v) {
		gs, err := s.networks.ListSecurityGroups(v.p, pr.ID)
		if err != nil {
			return groupsData{}, err
		}
		for _, g := range gs {
			d.Groups = append(d.Groups, groupRow{SecurityGroup: g, ProjectName: or(names[g.Project], g.Project)})
		}
	}
	sort.SliceStable(d.Groups, func(i, j int) bool { return d.Groups[i].ProjectName < d.Groups[j].ProjectName })
	if d.Form.Project == "" && len(writable) > 0 {
		d.Form.Project = writable[0].ID
	}
	return d, nil
}

func (s *server) groupsPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.groupsData(v, groupForm{})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	if name := r.URL.Query().Get("deleted"); name != "" {
		v.flash = v.Tf("groups.deleted", name)
	}
	s.render(w, r, http.StatusOK, groupsPage(v, d))
}

func (s *server) createGroup(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	f := groupForm{Name: strings.TrimSpace(r.PostFormValue("name")), Description: strings.TrimSpace(r.PostFormValue("description")), Project: r.PostFormValue("project")}
	again := func(field, msg string) {
		f.ErrField, f.Err = field, msg
		d, err := s.groupsData(v, f)
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		s.render(w, r, formStatus, groupsPage(v, d))
	}
	if !volumeNameRE.MatchString(f.Name) {
		again("name", v.T("volumes.name_bad"))
		return
	}
	g, err := s.networks.CreateSecurityGroup(r.Context(), v.p, netfabric.SecurityGroupCreate{Name: f.Name, Description: f.Description, Project: f.Project})
	if err != nil {
		s.logErr(r, err)
		field := ""
		if strings.Contains(strings.ToLower(err.Error()), "name") {
			field = "name"
		}
		again(field, errorText(v.tr, err))
		return
	}
	s.redirect(w, r, string(groupURL(g.ID))+"?done=create")
}

// ruleWords puts a rule in words.
func ruleWords(v *view, r netfabric.Rule, groups map[string]string) ruleRow {
	row := ruleRow{Rule: r, Traffic: protocolName(v, r.Protocol)}
	switch {
	case r.PortMin > 0 && r.PortMax > r.PortMin:
		row.Traffic = v.Tf("group.traffic_ports", row.Traffic, r.PortMin, r.PortMax)
	case r.PortMin > 0:
		row.Traffic = v.Tf("group.traffic_port", row.Traffic, r.PortMin)
	case r.ICMPType != nil:
		row.Traffic = v.Tf("group.traffic_icmp", row.Traffic, *r.ICMPType)
	}
	key := "group.from"
	if r.Direction == "egress" {
		key = "group.to"
	}
	switch {
	case r.RemoteCIDR != "":
		row.Peer = v.Tf(key, r.RemoteCIDR)
	case r.RemoteGroup != "":
		row.Peer = v.Tf(key+"_group", or(groups[r.RemoteGroup], r.RemoteGroup))
	default:
		row.Peer = v.T(key + "_any")
	}
	return row
}

func (s *server) groupData(r *http.Request, v *view, ref string, f ruleForm) (groupData, error) {
	g, err := s.networks.GetSecurityGroup(r.Context(), v.p, ref)
	if err != nil {
		return groupData{}, err
	}
	names, _ := s.projectNames(v)
	d := groupData{Row: groupRow{SecurityGroup: *g, ProjectName: or(names[g.Project], g.Project)},
		CanChange: v.p.Can(g.Project, identity.RoleMember), Form: f}
	others, err := s.networks.ListSecurityGroups(v.p, g.Project)
	if err != nil {
		return groupData{}, err
	}
	d.Others = others
	groups := map[string]string{}
	for _, o := range others {
		groups[o.ID] = o.Name
	}
	for _, rule := range g.Rules {
		d.Rules = append(d.Rules, ruleWords(v, rule, groups))
	}
	nws, err := s.networks.ListNetworks(v.p, g.Project)
	if err != nil {
		return groupData{}, err
	}
	for _, nw := range nws {
		if !nw.IsOverlay() {
			continue
		}
		ps, err := s.networks.ListPorts(r.Context(), v.p, nw.ID)
		if err != nil {
			continue
		}
		for _, p := range ps {
			if containsStr(p.EffectiveGroups(&nw), g.ID) {
				d.Ports++
			}
		}
	}
	return d, nil
}

func (s *server) groupPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.groupData(r, v, r.PathValue("group"), ruleForm{})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	switch r.URL.Query().Get("done") {
	case "create":
		v.flash = v.Tf("groups.created", d.Row.Name)
	case "rule":
		v.flash = v.T("group.rule_added")
	case "rule_deleted":
		v.flash = v.T("group.rule_deleted")
	}
	s.render(w, r, http.StatusOK, groupPage(v, d))
}

// parsePorts reads "443" or "8000-8080".
func parsePorts(s string) (lo, hi int, ok bool) {
	a, b, ranged := strings.Cut(strings.TrimSpace(s), "-")
	lo, err := strconv.Atoi(strings.TrimSpace(a))
	if err != nil || lo < 1 || lo > 65535 {
		return 0, 0, false
	}
	hi = lo
	if ranged {
		if hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil || hi < lo || hi > 65535 {
			return 0, 0, false
		}
	}
	return lo, hi, true
}

func (s *server) groupAction(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	ref := r.PathValue("group")
	f := ruleForm{Direction: r.PostFormValue("direction"), EtherType: r.PostFormValue("ethertype"), Protocol: r.PostFormValue("protocol"),
		Ports: strings.TrimSpace(r.PostFormValue("ports")), Remote: r.PostFormValue("remote"),
		RemoteCIDR: strings.TrimSpace(r.PostFormValue("remote_cidr")), RemoteGroup: r.PostFormValue("remote_group")}
	again := func(field, msg string) {
		f.ErrField, f.Err = field, msg
		d, err := s.groupData(r, v, ref, f)
		if err != nil {
			s.failPage(w, r, v, err)
			return
		}
		s.render(w, r, formStatus, groupPage(v, d))
	}
	switch r.PathValue("action") {
	case "rules":
		rule := netfabric.Rule{Direction: f.Direction, EtherType: f.EtherType, Protocol: f.Protocol}
		if f.Ports != "" {
			if f.Protocol != "tcp" && f.Protocol != "udp" {
				again("ports", v.T("group.ports_need_protocol"))
				return
			}
			lo, hi, ok := parsePorts(f.Ports)
			if !ok {
				again("ports", v.T("group.ports_bad"))
				return
			}
			rule.PortMin, rule.PortMax = lo, hi
		}
		switch f.Remote {
		case "cidr":
			if f.RemoteCIDR == "" {
				again("cidr", v.T("group.cidr_bad"))
				return
			}
			rule.RemoteCIDR = f.RemoteCIDR
		case "group":
			rule.RemoteGroup = f.RemoteGroup
		}
		if _, err := s.networks.AddRule(r.Context(), v.p, ref, rule); err != nil {
			s.logErr(r, err)
			field := ""
			msg := strings.ToLower(err.Error())
			switch {
			case strings.Contains(msg, "cidr"):
				field = "cidr"
			case strings.Contains(msg, "port"):
				field = "ports"
			case strings.Contains(msg, "protocol"):
				field = "protocol"
			}
			again(field, errorText(v.tr, err))
			return
		}
		s.redirect(w, r, string(groupURL(ref))+"?done=rule")
	case "delete":
		g, err := s.networks.DeleteSecurityGroup(r.Context(), v.p, ref)
		if err != nil {
			s.logErr(r, err)
			again("", errorText(v.tr, err))
			return
		}
		s.redirect(w, r, "/security-groups?deleted="+url.QueryEscape(g.Name))
	default:
		s.failPage(w, r, v, consensus.Errorf(consensus.CodeNotFound, "no such action"))
	}
}

func (s *server) deleteRule(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	ref := r.PathValue("group")
	if _, err := s.networks.DeleteRule(r.Context(), v.p, ref, r.PathValue("rule")); err != nil {
		s.logErr(r, err)
		d, derr := s.groupData(r, v, ref, ruleForm{})
		if derr != nil {
			s.failPage(w, r, v, err)
			return
		}
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, groupPage(v, d))
		return
	}
	s.redirect(w, r, string(groupURL(ref))+"?done=rule_deleted")
}

// vmNetworks fills the create-VM form's network and group choices: the
// networks and groups of the projects the viewer may create VMs in, and
// the cluster's networks.
func (s *server) vmNetworks(v *view, d *newVMData) {
	if s.networks == nil {
		return
	}
	names, writable := s.projectNames(v)
	can := map[string]bool{}
	for _, p := range writable {
		can[p.ID] = true
	}
	nws, err := s.networks.ListNetworks(v.p, "")
	if err != nil {
		return
	}
	for _, n := range nws {
		if n.External {
			continue // reached through a router, not joined
		}
		if !n.IsOverlay() || can[n.Project] {
			row := networkRow{Network: n}
			if n.IsOverlay() {
				row.ProjectName = or(names[n.Project], n.Project)
			}
			d.Networks = append(d.Networks, row)
		}
	}
	for _, p := range writable {
		gs, err := s.networks.ListSecurityGroups(v.p, p.ID)
		if err != nil {
			continue
		}
		for _, g := range gs {
			d.Groups = append(d.Groups, groupRow{SecurityGroup: g, ProjectName: p.Name})
		}
	}
	if len(writable) < 2 {
		for i := range d.Networks {
			d.Networks[i].ProjectName = ""
		}
		for i := range d.Groups {
			d.Groups[i].ProjectName = ""
		}
	}
}
