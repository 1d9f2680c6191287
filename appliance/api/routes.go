package api

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
)

// route declares one API operation: it is registered and documented from here.
type route struct {
	Method   string
	Path     string
	Summary  string
	Tag      string
	Public   bool // no token required
	Request  any  // body type, for the OpenAPI document
	Response any  // success body type; nil for 204
	Status   int  // success status
	Query    []string
	Upload   bool // the body is a byte stream (an image), not JSON: no size limit
	handler  handlerFunc
}

// Wire types that are not domain types.
type (
	loginRequest struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	loginResponse struct {
		Token     string        `json:"token"`
		ExpiresAt time.Time     `json:"expires_at"`
		User      identity.User `json:"user"`
	}
	setupStatus struct {
		Needed bool `json:"needed"`
	}
	setupRequest struct {
		SetupCode string `json:"setup_code"`
		Username  string `json:"username"`
		Password  string `json:"password"`
	}
	whoami struct {
		User  identity.User            `json:"user"`
		Roles map[string]identity.Role `json:"roles"`
	}
	clusterStatus struct {
		consensus.Status
		JoinToken string `json:"join_token,omitempty"`
	}
	projectPatch struct {
		Description *string `json:"description,omitempty"`
	}
	memberRequest struct {
		Role identity.Role `json:"role"`
	}
	tokenRequest struct {
		Name       string `json:"name"`
		TTLSeconds int64  `json:"ttl_seconds,omitempty"`
	}
	tokenResponse struct {
		Token  string         `json:"token"`
		Detail identity.Token `json:"detail"`
	}
	flavorPatch struct {
		Name string `json:"name"`
	}
)

func (s *Server) routeTable() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "GET", Path: v1 + "/setup", Summary: "Whether first-run setup is still needed", Tag: "auth", Public: true, Response: setupStatus{},
			handler: func(w http.ResponseWriter, r *http.Request, _ *identity.Principal) error {
				writeJSON(w, http.StatusOK, setupStatus{Needed: s.id.SetupNeeded()}, 0)
				return nil
			}},
		{Method: "POST", Path: v1 + "/setup", Summary: "Create the first cluster admin with the one-time setup code", Tag: "auth", Public: true,
			Request: setupRequest{}, Response: identity.User{}, Status: http.StatusCreated, handler: s.setup},
		{Method: "POST", Path: v1 + "/auth/login", Summary: "Log in; returns a session token", Tag: "auth", Public: true,
			Request: loginRequest{}, Response: loginResponse{}, handler: s.login},
		{Method: "POST", Path: v1 + "/auth/logout", Summary: "Revoke the token used for this request", Tag: "auth", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return noContent(w, s.id.Logout(r.Context(), p))
			}},
		{Method: "GET", Path: v1 + "/auth/whoami", Summary: "The caller and their roles", Tag: "auth", Response: whoami{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				roles := map[string]identity.Role{}
				for _, id := range p.ProjectIDs() {
					roles[id] = p.RoleIn(id)
				}
				u := p.User
				u.PasswordHash = ""
				writeJSON(w, http.StatusOK, whoami{User: u, Roles: roles}, 0)
				return nil
			}},

		{Method: "GET", Path: v1 + "/cluster", Summary: "Cluster status: leader, nodes, roles, health", Tag: "cluster", Response: clusterStatus{}, handler: s.clusterStatus},
		{Method: "GET", Path: v1 + "/nodes", Summary: "Nodes of the cluster", Tag: "cluster", Response: []consensus.NodeStatus{},
			handler: func(w http.ResponseWriter, r *http.Request, _ *identity.Principal) error {
				writeJSON(w, http.StatusOK, s.cluster.Status().Nodes, 0)
				return nil
			}},

		{Method: "GET", Path: v1 + "/projects", Summary: "Projects the caller can see", Tag: "projects", Response: []identity.Project{}, Query: []string{"consistent"},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if err := s.consistent(r); err != nil {
					return err
				}
				writeJSON(w, http.StatusOK, s.id.ListProjects(p), 0)
				return nil
			}},
		{Method: "POST", Path: v1 + "/projects", Summary: "Create a project (cluster admin)", Tag: "projects",
			Request: identity.ProjectSpec{}, Response: identity.Project{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var spec identity.ProjectSpec
				if err := decode(r, &spec); err != nil {
					return err
				}
				pr, err := s.id.CreateProject(r.Context(), p, spec)
				return created(w, pr, versionOf(pr, err), err)
			}},
		{Method: "GET", Path: v1 + "/projects/{project}", Summary: "A project, by ID or name", Tag: "projects", Response: identity.Project{}, Query: []string{"consistent"},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if err := s.consistent(r); err != nil {
					return err
				}
				pr, err := s.id.GetProject(p, r.PathValue("project"))
				return ok(w, pr, versionOf(pr, err), err)
			}},
		{Method: "PATCH", Path: v1 + "/projects/{project}", Summary: "Change a project (project admin); honours If-Match", Tag: "projects",
			Request: projectPatch{}, Response: identity.Project{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body projectPatch
				if err := decode(r, &body); err != nil {
					return err
				}
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				pr, err := s.id.UpdateProject(r.Context(), p, r.PathValue("project"), body.Description, im)
				return ok(w, pr, versionOf(pr, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/projects/{project}", Summary: "Delete an empty project (cluster admin); honours If-Match", Tag: "projects", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				return noContent(w, s.id.DeleteProject(r.Context(), p, r.PathValue("project"), im))
			}},
		{Method: "GET", Path: v1 + "/projects/{project}/members", Summary: "Members of a project", Tag: "projects", Response: []identity.MemberView{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				ms, err := s.id.ListMembers(p, r.PathValue("project"))
				return ok(w, ms, 0, err)
			}},
		{Method: "PUT", Path: v1 + "/projects/{project}/members/{user}", Summary: "Give a user a role in a project (project admin)", Tag: "projects",
			Request: memberRequest{}, Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body memberRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				return noContent(w, s.id.SetMember(r.Context(), p, r.PathValue("project"), r.PathValue("user"), body.Role))
			}},
		{Method: "DELETE", Path: v1 + "/projects/{project}/members/{user}", Summary: "Remove a user from a project (project admin)", Tag: "projects", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return noContent(w, s.id.RemoveMember(r.Context(), p, r.PathValue("project"), r.PathValue("user")))
			}},
		{Method: "GET", Path: v1 + "/projects/{project}/quota", Summary: "A project's quota limits and usage", Tag: "quotas", Response: identity.Quota{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				q, err := s.id.GetQuota(p, r.PathValue("project"))
				return ok(w, q, versionOf(q, err), err)
			}},
		{Method: "PUT", Path: v1 + "/projects/{project}/quota", Summary: "Set a project's quota limits (cluster admin); -1 is unlimited", Tag: "quotas",
			Request: identity.Resources{}, Response: identity.Quota{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var lim identity.Resources
				if err := decode(r, &lim); err != nil {
					return err
				}
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				q, err := s.id.SetQuota(r.Context(), p, r.PathValue("project"), lim, im)
				return ok(w, q, versionOf(q, err), err)
			}},

		{Method: "GET", Path: v1 + "/users", Summary: "Users (all for cluster admins, else yourself)", Tag: "users", Response: []identity.User{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				writeJSON(w, http.StatusOK, s.id.ListUsers(p), 0)
				return nil
			}},
		{Method: "POST", Path: v1 + "/users", Summary: "Create a user (cluster admin)", Tag: "users",
			Request: identity.UserSpec{}, Response: identity.User{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var spec identity.UserSpec
				if err := decode(r, &spec); err != nil {
					return err
				}
				u, err := s.id.CreateUser(r.Context(), p, spec)
				return created(w, u, versionOf(u, err), err)
			}},
		{Method: "GET", Path: v1 + "/users/{user}", Summary: "A user, by ID or name", Tag: "users", Response: identity.User{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				u, err := s.id.GetUser(p, r.PathValue("user"))
				return ok(w, u, versionOf(u, err), err)
			}},
		{Method: "PATCH", Path: v1 + "/users/{user}", Summary: "Change a user (yourself, or anyone as cluster admin); honours If-Match", Tag: "users",
			Request: identity.UserUpdate{}, Response: identity.User{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var up identity.UserUpdate
				if err := decode(r, &up); err != nil {
					return err
				}
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				u, err := s.id.UpdateUser(r.Context(), p, r.PathValue("user"), up, im)
				return ok(w, u, versionOf(u, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/users/{user}", Summary: "Delete a user (cluster admin); honours If-Match", Tag: "users", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				return noContent(w, s.id.DeleteUser(r.Context(), p, r.PathValue("user"), im))
			}},

		{Method: "GET", Path: v1 + "/tokens", Summary: "Your tokens (all for cluster admins), without secrets", Tag: "tokens", Response: []identity.Token{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				writeJSON(w, http.StatusOK, s.id.ListTokens(p), 0)
				return nil
			}},
		{Method: "POST", Path: v1 + "/tokens", Summary: "Create a long-lived API token; the secret is shown once", Tag: "tokens",
			Request: tokenRequest{}, Response: tokenResponse{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body tokenRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				if body.TTLSeconds < 0 || body.TTLSeconds > int64(math.MaxInt64/time.Second) {
					return errorf(http.StatusBadRequest, consensus.CodeInvalid, "ttl_seconds must not be negative or absurdly large")
				}
				secret, t, err := s.id.CreateAPIToken(r.Context(), p, body.Name, time.Duration(body.TTLSeconds)*time.Second)
				if err != nil {
					return err
				}
				writeJSON(w, http.StatusCreated, tokenResponse{Token: secret, Detail: *t}, 0)
				return nil
			}},
		{Method: "GET", Path: v1 + "/identity/settings", Summary: "Identity settings: the maximum lifetime of API tokens", Tag: "tokens",
			Response: identity.Settings{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				st := s.id.Settings()
				return ok(w, st, st.Version, nil)
			}},
		{Method: "PUT", Path: v1 + "/identity/settings", Summary: "Change identity settings (cluster admin); honours If-Match", Tag: "tokens",
			Request: identity.Settings{}, Response: identity.Settings{}, handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				var body identity.Settings
				if err := decode(r, &body); err != nil {
					return err
				}
				st, err := s.id.SetSettings(r.Context(), p, body, im)
				return ok(w, st, versionOf(st, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/tokens/{token}", Summary: "Revoke a token", Tag: "tokens", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				return noContent(w, s.id.RevokeToken(r.Context(), p, r.PathValue("token")))
			}},

		{Method: "GET", Path: v1 + "/flavors", Summary: "VM flavors", Tag: "flavors", Response: []identity.Flavor{},
			handler: func(w http.ResponseWriter, r *http.Request, _ *identity.Principal) error {
				writeJSON(w, http.StatusOK, s.id.ListFlavors(), 0)
				return nil
			}},
		{Method: "POST", Path: v1 + "/flavors", Summary: "Create a flavor (cluster admin)", Tag: "flavors",
			Request: identity.FlavorSpec{}, Response: identity.Flavor{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var spec identity.FlavorSpec
				if err := decode(r, &spec); err != nil {
					return err
				}
				f, err := s.id.CreateFlavor(r.Context(), p, spec)
				return created(w, f, versionOf(f, err), err)
			}},
		{Method: "GET", Path: v1 + "/flavors/{flavor}", Summary: "A flavor, by ID or name", Tag: "flavors", Response: identity.Flavor{},
			handler: func(w http.ResponseWriter, r *http.Request, _ *identity.Principal) error {
				f, err := s.id.GetFlavor(r.PathValue("flavor"))
				return ok(w, f, versionOf(f, err), err)
			}},
		{Method: "PATCH", Path: v1 + "/flavors/{flavor}", Summary: "Rename a flavor (cluster admin); sizes are immutable", Tag: "flavors",
			Request: flavorPatch{}, Response: identity.Flavor{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body flavorPatch
				if err := decode(r, &body); err != nil {
					return err
				}
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				f, err := s.id.RenameFlavor(r.Context(), p, r.PathValue("flavor"), body.Name, im)
				return ok(w, f, versionOf(f, err), err)
			}},
		{Method: "DELETE", Path: v1 + "/flavors/{flavor}", Summary: "Delete a flavor (cluster admin)", Tag: "flavors", Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				im, err := ifMatch(r)
				if err != nil {
					return err
				}
				return noContent(w, s.id.DeleteFlavor(r.Context(), p, r.PathValue("flavor"), im))
			}},

		{Method: "GET", Path: v1 + "/audit", Summary: "Audit log, newest first", Tag: "audit", Response: []identity.AuditEntry{},
			Query: []string{"project", "user", "action", "before", "limit"},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				q := r.URL.Query()
				limit, _ := strconv.Atoi(q.Get("limit"))
				es, err := s.id.ListAudit(p, identity.AuditFilter{ProjectID: q.Get("project"), User: q.Get("user"),
					Action: q.Get("action"), Before: q.Get("before"), Limit: limit})
				return ok(w, es, 0, err)
			}},
	}
}

func (s *Server) setup(w http.ResponseWriter, r *http.Request, _ *identity.Principal) error {
	var body setupRequest
	if err := decode(r, &body); err != nil {
		return err
	}
	u, err := s.id.Setup(r.Context(), body.SetupCode, body.Username, body.Password)
	return created(w, u, versionOf(u, err), err)
}

func (s *Server) login(w http.ResponseWriter, r *http.Request, _ *identity.Principal) error {
	var body loginRequest
	if err := decode(r, &body); err != nil {
		return err
	}
	tok, t, err := s.id.Login(r.Context(), body.Username, body.Password)
	if err != nil {
		return err
	}
	p, err := s.id.Authenticate(r.Context(), tok)
	if err != nil {
		return err
	}
	u := p.User
	u.PasswordHash = ""
	writeJSON(w, http.StatusOK, loginResponse{Token: tok, ExpiresAt: t.ExpiresAt, User: u}, 0)
	return nil
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
	st := clusterStatus{Status: s.cluster.Status()}
	if p.IsClusterAdmin() && !p.Delegated() {
		st.JoinToken = s.cluster.JoinToken()
	}
	writeJSON(w, http.StatusOK, st, 0)
	return nil
}

// versioned is any domain row with a version.
func versionOf[T any](v *T, err error) uint64 {
	if err != nil || v == nil {
		return 0
	}
	switch x := any(v).(type) {
	case *identity.Project:
		return x.Version
	case *identity.User:
		return x.Version
	case *identity.Flavor:
		return x.Version
	case *identity.Quota:
		return x.Version
	case *hypervisor.VM:
		return x.Version
	case *hypervisor.Image:
		return x.Version
	case *hypervisor.Settings:
		return x.Version
	case *identity.Settings:
		return x.Version
	}
	return 0
}

func ok(w http.ResponseWriter, v any, version uint64, err error) error {
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v, version)
	return nil
}

func created(w http.ResponseWriter, v any, version uint64, err error) error {
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v, version)
	return nil
}

func noContent(w http.ResponseWriter, err error) error {
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
