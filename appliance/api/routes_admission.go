package api

import (
	"net/http"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// enrolTokenRequest asks for an enrolment token; TTL is a Go duration ("1h").
type enrolTokenRequest struct {
	TTL string `json:"ttl,omitempty"`
}

// enrolTokenResponse is a new enrolment token, shown once, with the cluster
// key a new node also needs to find the cluster.
type enrolTokenResponse struct {
	consensus.EnrolToken
	JoinToken string `json:"join_token"`
}

type approveRequest struct {
	Fingerprint string `json:"fingerprint,omitempty"`
}

// admissionRoutes let cluster admins admit new nodes: one-time enrolment
// tokens, and approval of nodes waiting as pending.
func (s *Server) admissionRoutes() []route {
	const v1 = "/api/v1"
	admin := func(p *identity.Principal, what string) error {
		if !p.IsClusterAdmin() {
			return errorf(http.StatusForbidden, consensus.CodeForbidden, "not allowed to "+what)
		}
		if p.Delegated() {
			// Nodes let in stay in: no call from a hub admits them.
			return errorf(http.StatusForbidden, consensus.CodeForbidden, "a hub user cannot admit nodes to a site: ask the site's admin")
		}
		return nil
	}
	return []route{
		{Method: "POST", Path: v1 + "/cluster/enrol-tokens", Summary: "Create a one-time enrolment token that admits one new node (cluster admin); default lifetime 1h", Tag: "cluster",
			Request: enrolTokenRequest{}, Response: enrolTokenResponse{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if err := admin(p, "create enrolment tokens"); err != nil {
					return err
				}
				var body enrolTokenRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				var ttl time.Duration
				if body.TTL != "" {
					d, err := time.ParseDuration(body.TTL)
					if err != nil || d <= 0 || d > 24*time.Hour {
						return errorf(http.StatusBadRequest, consensus.CodeInvalid, "ttl must be a duration up to 24h, like 1h or 30m")
					}
					ttl = d
				}
				tok, err := s.cluster.CreateEnrolToken(r.Context(), ttl, p.User.Name)
				s.id.AuditAction(r.Context(), p, "cluster.enrol-token.create", tok.ID, err)
				if err != nil {
					return err
				}
				return created(w, enrolTokenResponse{EnrolToken: tok, JoinToken: s.cluster.JoinToken()}, 0, nil)
			}},
		{Method: "GET", Path: v1 + "/cluster/pending", Summary: "Nodes waiting for approval to join (cluster admin)", Tag: "cluster",
			Response: []consensus.PendingNode{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if err := admin(p, "see pending nodes"); err != nil {
					return err
				}
				nodes := s.cluster.PendingNodes()
				if nodes == nil {
					nodes = []consensus.PendingNode{}
				}
				return ok(w, nodes, 0, nil)
			}},
		{Method: "POST", Path: v1 + "/cluster/pending/{node}/approve", Summary: "Admit a pending node on its next request (cluster admin); the fingerprint must match the key it asks with (its console shows it)", Tag: "cluster",
			Request: approveRequest{}, Response: consensus.PendingNode{},
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if err := admin(p, "approve nodes"); err != nil {
					return err
				}
				var body approveRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				if body.Fingerprint == "" {
					// The name alone is not enough: anyone on the LAN may
					// ask under a name; the key is what the admin checks.
					return errorf(http.StatusBadRequest, consensus.CodeInvalid, "fingerprint is required: compare it with the one the node's console shows")
				}
				pn, err := s.cluster.ApproveNode(r.Context(), r.PathValue("node"), body.Fingerprint, p.User.Name)
				s.id.AuditAction(r.Context(), p, "cluster.node.approve", r.PathValue("node"), err)
				return ok(w, pn, 0, err)
			}},
		{Method: "DELETE", Path: v1 + "/cluster/pending/{node}", Summary: "Forget a pending node, or only its key with ?fingerprint= (cluster admin); also withdraws an approval", Tag: "cluster",
			Status: http.StatusNoContent,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				if err := admin(p, "reject nodes"); err != nil {
					return err
				}
				err := s.cluster.RejectNode(r.Context(), r.PathValue("node"), r.URL.Query().Get("fingerprint"))
				s.id.AuditAction(r.Context(), p, "cluster.node.reject", r.PathValue("node"), err)
				return noContent(w, err)
			}},
	}
}
