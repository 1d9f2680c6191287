package api

import (
	"net/http"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/netfabric"
)

// networkRoutes are networks': a project's readers see its networks and
// every user the cluster's (the default network); a project's members
// create and delete its networks.
func (s *Server) networkRoutes() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "GET", Path: v1 + "/networks", Summary: "Networks you can see: your projects' (optionally of one project) and the cluster's", Tag: "networks",
			Response: []netfabric.Network{}, Query: []string{"project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				ns, err := s.networks.ListNetworks(p, r.URL.Query().Get("project"))
				return ok(w, ns, 0, err)
			}},
		{Method: "POST", Path: v1 + "/networks", Summary: "Create a project network: a private layer 2 across the nodes (VXLAN) with an IPv4 subnet served by DHCP", Tag: "networks",
			Request: netfabric.NetworkCreate{}, Response: netfabric.Network{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body netfabric.NetworkCreate
				if err := decode(r, &body); err != nil {
					return err
				}
				nw, err := s.networks.CreateNetwork(r.Context(), p, body)
				return created(w, nw, 0, err)
			}},
		{Method: "GET", Path: v1 + "/networks/{network}", Summary: "A network, by ID or name", Tag: "networks",
			Response: netfabric.Network{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				nw, err := s.networks.GetNetwork(r.Context(), p, r.PathValue("network"))
				return ok(w, nw, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/networks/{network}", Summary: "Delete a project network no VM uses any more", Tag: "networks",
			Response: netfabric.Network{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				nw, err := s.networks.DeleteNetwork(r.Context(), p, r.PathValue("network"))
				return ok(w, nw, 0, err)
			}},
		{Method: "GET", Path: v1 + "/networks/{network}/ports", Summary: "A network's ports you can see: MAC, address, VM and node", Tag: "networks",
			Response: []netfabric.Port{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				ps, err := s.networks.ListPorts(r.Context(), p, r.PathValue("network"))
				return ok(w, ps, 0, err)
			}},
	}
}
