package api

import (
	"io"
	"net/http"
	"strconv"
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

// hubRoutes are a hub's: enrolment tokens, the sites, revocation.
func (s *Server) hubRoutes() []route {
	const v1 = "/api/v1"
	routes := []route{
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
		{Method: "GET", Path: v1 + "/federation/sites", Summary: "The sites you have a role on (a hub admin: all), with whether each is connected, its cached inventory's summary and age; the query narrows them: group, health (ok, degraded), degraded_volumes=true, free_storage_below=PERCENT, unreachable=true", Tag: "federation",
			Response: []federation.SiteStatus{}, Query: []string{"group", "health", "degraded_volumes", "free_storage_below", "unreachable"},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				q := r.URL.Query()
				f := federation.SiteFilter{Group: q.Get("group"), Health: q.Get("health"), DegradedVolumes: q.Get("degraded_volumes") == "true", Unreachable: q.Get("unreachable") == "true"}
				if v := q.Get("free_storage_below"); v != "" {
					pct, err := strconv.ParseFloat(v, 64)
					if err != nil || pct <= 0 || pct > 100 {
						return errorf(http.StatusBadRequest, consensus.CodeInvalid, "free_storage_below is a percentage, above 0 and at most 100")
					}
					f.FreeStorageBelow = pct
				}
				if f.Health != "" && f.Health != "ok" && f.Health != "degraded" {
					return errorf(http.StatusBadRequest, consensus.CodeInvalid, "health is ok or degraded")
				}
				return ok(w, s.hub.ListSites(p, f), 0, nil)
			}},
		{Method: "GET", Path: v1 + "/federation/sites/{site}", Summary: "A site you have a role on, with its whole cached inventory (nodes, capacity, projects, VMs, volumes, images, buckets, alerts) and its age", Tag: "federation",
			Response: federation.SiteDetail{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				d, err := s.hub.SiteDetail(p, r.PathValue("site"))
				return ok(w, d, 0, err)
			}},
		{Method: "GET", Path: v1 + "/federation/vms", Summary: "VMs across the sites you have a role on, from their cached inventories; name and project narrow them", Tag: "federation",
			Response: []federation.SiteVM{}, Query: []string{"name", "project"}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return ok(w, s.hub.FindVMs(p, r.URL.Query().Get("name"), r.URL.Query().Get("project")), 0, nil)
			}},
		{Method: "GET", Path: v1 + "/federation/sites/{site}/status", Summary: "A connected site's cluster status, asked of the site through its session now", Tag: "federation",
			Response: consensus.Status{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if _, err := s.hub.SiteDetail(p, r.PathValue("site")); err != nil {
					return err
				}
				var st consensus.Status
				err := s.hub.Ask(r.Context(), r.PathValue("site"), "/fed/v1/status", &st)
				return ok(w, st, 0, err)
			}},
		{Method: "PUT", Path: v1 + "/federation/sites/{site}/group", Summary: "Put a site in a group, or in none with an empty group (hub admin); roles given on the group reach it", Tag: "federation",
			Request: siteGroupRequest{}, Response: federation.SiteStatus{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body siteGroupRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				st, err := s.hub.SetGroup(r.Context(), p, r.PathValue("site"), body.Group)
				return ok(w, st, 0, err)
			}},
		{Method: "GET", Path: v1 + "/federation/grants", Summary: "Hub users' roles on sites and site groups (a hub admin: all; others: their own)", Tag: "federation",
			Response: []federation.Grant{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return ok(w, s.hub.Grants(p), 0, nil)
			}},
		{Method: "PUT", Path: v1 + "/federation/grants", Summary: "Give a hub user a role (admin, operator, read-only) on one site or one group of sites, or take it away with an empty role (hub admin)", Tag: "federation",
			Request: federation.GrantSpec{}, Response: federation.Grant{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body federation.GrantSpec
				if err := decode(r, &body); err != nil {
					return err
				}
				g, err := s.hub.SetGrant(r.Context(), p, body)
				if err == nil && g == nil {
					w.WriteHeader(http.StatusNoContent)
					return nil
				}
				return ok(w, g, 0, err)
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
	routes = append(routes,
		route{Method: "POST", Path: v1 + "/federation/intents", Summary: "Queue a bulk operation: the same calls of the sites' APIs (steps, in order) on the sites and groups named, as you, with the role you have on each site when it runs; a site that is away gets them when it is back, until the intent expires (expires_in, default 24h, at most 168h); each step runs once on a site; the same key gives the same intent", Tag: "federation",
			Request: federation.IntentSpec{}, Response: federation.Intent{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body federation.IntentSpec
				if err := decode(r, &body); err != nil {
					return err
				}
				in, err := s.hub.CreateIntent(r.Context(), p, body)
				if err != nil {
					return err
				}
				writeJSON(w, http.StatusCreated, in, 0)
				return nil
			}},
		route{Method: "GET", Path: v1 + "/federation/intents", Summary: "Bulk operations, newest first, with how many sites each is pending, done or failed on (yours; a hub admin: all): a page of limit (100, at most 1000) made before the intent whose seq is before; next, when there are more, is the next page's before", Tag: "federation",
			Query: []string{"before", "limit"}, Response: federation.IntentPage{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				q := r.URL.Query()
				var before uint64
				if v := q.Get("before"); v != "" {
					n, err := strconv.ParseUint(v, 10, 64)
					if err != nil {
						return consensus.Errorf(consensus.CodeInvalid, "before is an intent's seq, a number")
					}
					before = n
				}
				limit := 0
				if v := q.Get("limit"); v != "" {
					n, err := strconv.Atoi(v)
					if err != nil || n < 1 {
						return consensus.Errorf(consensus.CodeInvalid, "limit is a number of intents, 1 to %d", federation.MaxIntentPage)
					}
					limit = n
				}
				return ok(w, s.hub.Intents(p, before, limit), 0, nil)
			}},
		route{Method: "GET", Path: v1 + "/federation/intents/{intent}", Summary: "One bulk operation, with every site's progress and answers", Tag: "federation",
			Response: federation.Intent{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				in, err := s.hub.GetIntent(p, r.PathValue("intent"))
				return ok(w, in, 0, err)
			}},
	)
	routes = append(routes,
		route{Method: "POST", Path: v1 + "/federation/images", Summary: "Upload an image (the request body) for sites to this hub node (hub admin); it is kept by its SHA-256", Tag: "federation",
			Upload: true, Query: []string{"name"}, Response: federation.HubImage{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := s.hub.UploadImage(r.Context(), p, r.URL.Query().Get("name"), r.Body)
				if err != nil {
					return err
				}
				writeJSON(w, http.StatusCreated, im, 0)
				return nil
			}},
		route{Method: "GET", Path: v1 + "/federation/images", Summary: "The images the hub holds for sites", Tag: "federation",
			Response: []federation.HubImage{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return ok(w, s.hub.Images(), 0, nil)
			}},
		route{Method: "POST", Path: v1 + "/federation/images/{image}/push", Summary: "Push a hub image to sites and groups, into a project of each, at most rate_kib KiB/s per site: sent once per site, in chunks, going on from what a site holds after a broken link, checked by its hash, and imported as you", Tag: "federation",
			Request: federation.PushSpec{}, Response: []federation.Distribution{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body federation.PushSpec
				if err := decode(r, &body); err != nil {
					return err
				}
				ds, err := s.hub.PushImage(r.Context(), p, r.PathValue("image"), body)
				if err != nil {
					return err
				}
				writeJSON(w, http.StatusCreated, ds, 0)
				return nil
			}},
		route{Method: "GET", Path: v1 + "/federation/pushes", Summary: "Image pushes with each site's progress (yours; a hub admin: all); image narrows them", Tag: "federation",
			Query: []string{"image"}, Response: []federation.Distribution{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return ok(w, s.hub.Distributions(p, r.URL.Query().Get("image")), 0, nil)
			}},
	)
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		routes = append(routes, route{Method: m, Path: v1 + "/federation/sites/{site}/api/{path...}", Upload: true,
			Summary: "Call a site's own API (the path after /api/ is the site's, /v1/...) as you, through the site's session: the site acts with the role you have on it (admin: its cluster admin; operator: member of every project; read-only: reader, GET only) and names you as you@hub in its audit log", Tag: "federation",
			handler: s.callSite})
	}
	return routes
}

// siteGroupRequest puts a site in a group.
type siteGroupRequest struct {
	Group string `json:"group"`
}

// callSite runs a call of a site's API through its session, as the hub
// user, and streams the site's answer back as it came. A call's body is
// the site's to limit (an image upload streams through).
func (s *Server) callSite(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
	res, err := s.hub.Call(r.Context(), p, r.PathValue("site"), r.Method, "/api/"+r.PathValue("path"), r.URL.RawQuery, r.Body, r.Header)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	for _, k := range []string{"Content-Type", "Content-Length", "ETag", "Location", "Retry-After"} {
		if v := res.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(res.StatusCode)
	_, _ = io.Copy(w, res.Body)
	return nil
}
