package api

import (
	"net/http"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// Metrics guards the node's Prometheus handler: it answers a metrics token
// or a cluster admin's token, sent as Prometheus does (Authorization:
// Bearer). Anonymous callers get 401, other users 403.
func (s *Server) Metrics(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error = identity.ErrUnauthenticated
		if tok, ok := bearer(r); ok {
			err = s.id.AuthorizeMetrics(r.Context(), tok)
		}
		if err != nil {
			ae := toAPIError(err)
			if ae.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="cairn metrics"`)
			}
			writeError(w, ae)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// metricsRoutes are the metrics token's routes (listing and revoking go
// through /tokens, like every token).
func (s *Server) metricsRoutes() []route {
	const v1 = "/api/v1"
	return []route{
		{Method: "POST", Path: v1 + "/metrics/tokens", Summary: "Create a token for Prometheus that reads /metrics only (cluster admin); the secret is shown once", Tag: "tokens",
			Request: tokenRequest{}, Response: tokenResponse{}, Status: http.StatusCreated,
			handler: func(w http.ResponseWriter, r *http.Request, p *identity.Principal) error {
				var body tokenRequest
				if err := decode(r, &body); err != nil {
					return err
				}
				if body.TTLSeconds < 0 {
					return errorf(http.StatusBadRequest, consensus.CodeInvalid, "ttl_seconds must not be negative")
				}
				secret, t, err := s.id.CreateMetricsToken(r.Context(), p, body.Name, time.Duration(body.TTLSeconds)*time.Second)
				if err != nil {
					return err
				}
				writeJSON(w, http.StatusCreated, tokenResponse{Token: secret, Detail: *t}, 0)
				return nil
			}},
	}
}
