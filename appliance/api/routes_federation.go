package api

import (
	"net/http"
	"time"

	"github.com/cairnhq/cairn/appliance/federation"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// joinHubRequest joins this site to a hub.
type joinHubRequest struct {
	HubURL string `json:"hub_url"`
	Token  string `json:"token"`
}

// memberRoutes are a site's side of federation: join a hub, see the
// session, leave.
func (s *Server) memberRoutes() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "GET", Path: v1 + "/federation", Summary: "This site's membership of a federation hub, and whether its session is up", Tag: "federation",
			Response: federation.Status{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return ok(w, s.member.Status(), 0, nil)
			}},
		{Method: "POST", Path: v1 + "/federation/join", Summary: "Enrol this site with a federation hub, with a one-time token made on the hub (cluster admin); the site then keeps a session with the hub, dialling out", Tag: "federation",
			Request: joinHubRequest{}, Response: federation.Status{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body joinHubRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				st, err := s.member.Join(r.Context(), p, body.HubURL, body.Token)
				return ok(w, st, 0, err)
			}},
		{Method: "POST", Path: v1 + "/federation/leave", Summary: "Leave the federation hub (cluster admin); the hub is told if it can be reached", Tag: "federation",
			Status: http.StatusNoContent, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return noContent(w, s.member.Leave(r.Context(), p))
			}},
	}
}

// siteTokenRequest asks a hub for a site's enrolment token; TTL is a Go
// duration ("24h").
type siteTokenRequest struct {
	Site string `json:"site"`
	TTL  string `json:"ttl,omitempty"`
}

// siteTokenResponse is a new enrolment token, shown once.
type siteTokenResponse struct {
	federation.Token
	Text string `json:"token"`
}

// SiteView is a site as the hub shows it.
type SiteView struct {
	federation.Site
	Connected bool   `json:"connected"`
	From      string `json:"from,omitempty"` // where its session comes from
}

// hubRoutes are a hub's: enrolment tokens, the sites, revocation.
func (s *Server) hubRoutes() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "POST", Path: v1 + "/federation/tokens", Summary: "Create a one-time enrolment token for a site (hub admin); default lifetime 24h", Tag: "federation",
			Request: siteTokenRequest{}, Response: siteTokenResponse{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body siteTokenRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				var ttl time.Duration
				if body.TTL != "" {
					d, err := time.ParseDuration(body.TTL)
					if err != nil || d <= 0 || d > 7*24*time.Hour {
						return errorf(http.StatusBadRequest, consensus.CodeInvalid, "ttl must be a duration up to 168h, like 24h or 30m")
					}
					ttl = d
				}
				text, tok, err := s.hub.CreateToken(r.Context(), p, body.Site, ttl)
				if err != nil {
					return err
				}
				writeJSON(w, http.StatusCreated, siteTokenResponse{Token: *tok, Text: text}, 0)
				return nil
			}},
		{Method: "GET", Path: v1 + "/federation/sites", Summary: "The enrolled sites, and whether each has a session with this hub node, and from where (hub admin)", Tag: "federation",
			Response: []SiteView{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if !p.IsClusterAdmin() {
					return errorf(http.StatusForbidden, consensus.CodeForbidden, "only hub admins list sites")
				}
				out := []SiteView{}
				for _, st := range s.hub.Sites() {
					st.Serials = nil
					out = append(out, SiteView{Site: st, Connected: s.hub.Connected(st.ID), From: s.hub.Remote(st.ID)})
				}
				return ok(w, out, 0, nil)
			}},
		{Method: "GET", Path: v1 + "/federation/sites/{site}/status", Summary: "A connected site's cluster status, asked of the site through its session (hub admin)", Tag: "federation",
			Response: consensus.Status{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if !p.IsClusterAdmin() {
					return errorf(http.StatusForbidden, consensus.CodeForbidden, "only hub admins ask sites")
				}
				var st consensus.Status
				err := s.hub.Ask(r.Context(), r.PathValue("site"), "/fed/v1/status", &st)
				return ok(w, st, 0, err)
			}},
		{Method: "POST", Path: v1 + "/federation/sites/{site}/revoke", Summary: "Revoke a site (hub admin): its certificate stops working and its session ends; it may enrol again with a new token", Tag: "federation",
			Response: federation.Site{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				st, err := s.hub.Revoke(r.Context(), p, r.PathValue("site"))
				if st != nil {
					st.Serials = nil
				}
				return ok(w, st, 0, err)
			}},
	}
}
