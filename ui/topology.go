package ui

import (
	"net/http"
	"sort"
	"strings"

	"github.com/cairnhq/cairn/netfabric"
)

// The topology picture: one project's networks as bars, its routers above
// them (joined to the external network they go out through), and its
// machines below the first network they are on, joined to each.

const (
	topoCol    = 250 // a network's column
	topoMargin = 20
	topoExtY   = 20
	topoRtrY   = 100
	topoNetY   = 190
	topoVMY    = 270
	topoVMStep = 54
	topoRtrW   = 180
)

func (s *server) topologyData(r *http.Request, v *view, project string) (topologyData, error) {
	d := topologyData{Projects: s.projectList(v), Project: project}
	if d.Project == "" && len(d.Projects) > 0 {
		d.Project = d.Projects[0].ID
	}
	if d.Project == "" {
		return d, nil
	}
	nws, err := s.networks.ListNetworks(v.p, d.Project)
	if err != nil {
		return d, err
	}
	byID := map[string]netfabric.Network{}
	for _, n := range nws {
		byID[n.ID] = n
	}
	routers, err := s.networks.ListRouters(v.p, d.Project)
	if err != nil {
		return d, err
	}
	floating := map[string][]string{} // VM -> its floating IPs
	if fs, err := s.networks.ListFloatingIPs(v.p, d.Project); err == nil {
		for _, f := range fs {
			if f.Owner != "" {
				floating[f.Owner] = append(floating[f.Owner], f.IP)
			}
		}
	}
	// Columns: the project's networks, then the cluster's network if a
	// machine of the project is on it.
	var cols []netfabric.Network
	for _, n := range nws {
		if n.IsOverlay() && n.Project == d.Project {
			cols = append(cols, n)
		}
	}
	type vmRow struct {
		id, name, ip string
		nets         []string
	}
	var vms []vmRow
	if s.compute != nil {
		list, err := s.compute.ListVMs(v.p, d.Project)
		if err != nil {
			return d, err
		}
		for _, vm := range list {
			row := vmRow{id: vm.ID, name: vm.Name}
			for _, nic := range vm.NICs {
				row.nets = append(row.nets, nic.Network)
				if row.ip == "" {
					row.ip = nic.IP
				}
			}
			vms = append(vms, row)
		}
	}
	sort.Slice(vms, func(i, j int) bool { return vms[i].name < vms[j].name })
	colOf := map[string]int{}
	for i, c := range cols {
		colOf[c.ID] = i
	}
	for _, vm := range vms {
		for _, id := range vm.nets {
			if _, ok := colOf[id]; !ok {
				if n, known := byID[id]; known {
					colOf[id] = len(cols)
					cols = append(cols, n)
				}
			}
		}
	}
	if len(cols) == 0 && len(routers) == 0 {
		return d, nil
	}
	center := func(col int) int { return topoMargin + col*topoCol + (topoCol-40)/2 }
	d.Width = max(640, 2*topoMargin+max(len(cols), 1)*topoCol)

	// External networks the project's routers go out through: one bar
	// each, side by side across the top.
	var exts []string
	for _, rt := range routers {
		if rt.External != "" && !containsStr(exts, rt.External) {
			exts = append(exts, rt.External)
		}
	}
	sort.Strings(exts)
	extX := map[string][2]int{}
	if len(exts) > 0 {
		w := (d.Width - 2*topoMargin - 20*(len(exts)-1)) / len(exts)
		for i, id := range exts {
			x := topoMargin + i*(w+20)
			extX[id] = [2]int{x, w}
			name := id
			for _, rt := range routers {
				if rt.External == id && rt.ExternalName != "" {
					name = rt.ExternalName
				}
			}
			d.Shapes = append(d.Shapes, topoShape{Kind: "external", Name: name, Label: name, Sub: v.T("networks.kind_external"),
				X: x, Y: topoExtY, W: w, H: 40, Href: string(networkURL(id))})
		}
	}
	for i, c := range cols {
		sub := c.CIDR
		if !c.IsOverlay() {
			sub = c.CIDR + " · " + v.T("networks.kind_cluster")
		}
		d.Shapes = append(d.Shapes, topoShape{Kind: "network", Name: c.Name, Label: c.Name, Sub: sub,
			X: topoMargin + i*topoCol, Y: topoNetY, W: topoCol - 40, H: 40, Href: string(networkURL(c.ID))})
	}
	used := map[int]bool{}
	for _, rt := range routers {
		x, n := 0, 0
		for _, id := range rt.Networks {
			if c, ok := colOf[id]; ok {
				x += center(c)
				n++
			}
		}
		if n > 0 {
			x /= n
		} else {
			x = center(0)
		}
		x -= topoRtrW / 2
		for used[x] {
			x += topoRtrW + 10
		}
		used[x] = true
		sub := ""
		if rt.ExternalName != "" {
			sub = "↑ " + rt.ExternalName
		}
		d.Shapes = append(d.Shapes, topoShape{Kind: "router", Name: rt.Name, Label: rt.Name, Sub: sub,
			X: x, Y: topoRtrY, W: topoRtrW, H: 40, Href: string(routerURL(rt.ID))})
		if e, ok := extX[rt.External]; ok {
			d.Lines = append(d.Lines, topoLine{X1: x + topoRtrW/2, Y1: topoRtrY, X2: min(max(x+topoRtrW/2, e[0]+10), e[0]+e[1]-10), Y2: topoExtY + 40})
		}
		for _, id := range rt.Networks {
			if c, ok := colOf[id]; ok {
				d.Lines = append(d.Lines, topoLine{X1: x + topoRtrW/2, Y1: topoRtrY + 40, X2: center(c), Y2: topoNetY})
			}
		}
	}
	stack := map[int]int{}
	bottom := topoNetY + 60
	for _, vm := range vms {
		home, ok := -1, false
		for _, id := range vm.nets {
			if c, found := colOf[id]; found && (!ok || c < home) {
				home, ok = c, true
			}
		}
		if !ok {
			continue
		}
		y := topoVMY + stack[home]*topoVMStep
		stack[home]++
		x := topoMargin + home*topoCol + 10
		sub := vm.ip
		if f := floating[vm.id]; len(f) > 0 {
			sub += " · " + strings.Join(f, ", ")
		}
		d.Shapes = append(d.Shapes, topoShape{Kind: "vm", Name: vm.name, Label: vm.name, Sub: sub,
			X: x, Y: y, W: topoCol - 60, H: 40, Href: string(vmURL(vm.id, ""))})
		for _, id := range vm.nets {
			if c, found := colOf[id]; found {
				d.Lines = append(d.Lines, topoLine{X1: x + (topoCol-60)/2, Y1: y, X2: center(c), Y2: topoNetY + 40})
			}
		}
		bottom = max(bottom, y+60)
	}
	d.Height = max(bottom, topoNetY+80)
	return d, nil
}

func (s *server) topologyPage(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "networks"
	if s.networks == nil {
		s.networkUnavailable(w, r, v)
		return
	}
	d, err := s.topologyData(r, v, r.URL.Query().Get("project"))
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	s.render(w, r, http.StatusOK, topologyPage(v, d))
}
