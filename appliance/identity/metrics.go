package identity

import (
	"context"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// TokenMetrics is a token that reads /metrics and nothing else: what an
// admin gives Prometheus. It is stored hashed like every token, belongs to
// the admin who made it, and stops working if they stop being an admin.
const TokenMetrics = "metrics"

// CreateMetricsToken issues a metrics token (cluster admins); ttl 0 means
// no expiry. The secret is returned once and never stored.
func (s *Service) CreateMetricsToken(ctx context.Context, p *Principal, name string, ttl time.Duration) (string, *Token, error) {
	const action = "token.create"
	if p.Delegated() {
		return "", nil, s.deny(ctx, p, action, name, "", errDelegatedCredential)
	}
	if !p.IsClusterAdmin() {
		return "", nil, s.deny(ctx, p, action, name, "", forbidden("create metrics tokens"))
	}
	if err := validateName("token name", name); err != nil {
		return "", nil, s.deny(ctx, p, action, name, "", err)
	}
	var exp time.Time
	if ttl > 0 {
		exp = s.cfg.Now().UTC().Add(ttl)
	}
	return s.issueToken(ctx, p, p.User.ID, TokenMetrics, name, exp)
}

// AuthorizeMetrics lets a metrics token or a cluster admin's own token
// read the node's metrics (they name nodes, disks and load: not for
// project members, nor for anything a VM can reach without a secret).
func (s *Service) AuthorizeMetrics(ctx context.Context, bearer string) error {
	p, err := s.authenticateAny(ctx, bearer)
	if err != nil {
		return err
	}
	if !p.IsClusterAdmin() {
		return consensus.Errorf(consensus.CodeForbidden, "metrics are for a metrics token or a cluster admin")
	}
	return nil
}
