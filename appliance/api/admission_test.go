package api_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
)

// Only cluster admins create enrolment tokens and see or approve pending
// nodes; a token comes back once, with the cluster key, and is audited.
func TestEnrolmentTokenAndApprovalRoutes(t *testing.T) {
	f := newFixture(t)
	f.call("POST", "/api/v1/users", f.admin, map[string]any{"name": "bob", "password": "correct-horse-battery"}, 201, nil)
	bob := f.login("bob", "correct-horse-battery")
	f.call("POST", "/api/v1/cluster/enrol-tokens", bob, map[string]any{}, 403, nil)
	f.call("GET", "/api/v1/cluster/pending", bob, nil, 403, nil)
	f.call("POST", "/api/v1/cluster/pending/node9/approve", bob, map[string]any{}, 403, nil)
	f.call("DELETE", "/api/v1/cluster/pending/node9", bob, nil, 403, nil)
	f.call("POST", "/api/v1/cluster/enrol-tokens", "", map[string]any{}, 401, nil)

	var tok struct {
		ID, Token string
		JoinToken string `json:"join_token"`
		Expires   time.Time
	}
	f.call("POST", "/api/v1/cluster/enrol-tokens", f.admin, map[string]any{"ttl": "30m"}, 201, &tok)
	if tok.ID == "" || !strings.HasPrefix(tok.Token, tok.ID+".") || tok.JoinToken == "" {
		t.Fatalf("enrolment token answer %+v lacks the token or the cluster key", tok)
	}
	if d := time.Until(tok.Expires); d < 29*time.Minute || d > 31*time.Minute {
		t.Fatalf("token expires in %v, want 30m", d)
	}
	f.call("POST", "/api/v1/cluster/enrol-tokens", f.admin, map[string]any{"ttl": "48h"}, 400, nil)
	var pending []any
	f.call("GET", "/api/v1/cluster/pending", f.admin, nil, 200, &pending)
	if len(pending) != 0 {
		t.Fatalf("pending %v, want none", pending)
	}
	f.call("POST", "/api/v1/cluster/pending/node9/approve", f.admin, map[string]any{}, 400, nil)
	f.call("POST", "/api/v1/cluster/pending/node9/approve", f.admin, map[string]any{"fingerprint": "0011223344556677"}, 404, nil)
	f.call("DELETE", "/api/v1/cluster/pending/node9?fingerprint=0011223344556677", f.admin, nil, 404, nil)
	var audit []identity.AuditEntry
	f.call("GET", "/api/v1/audit", f.admin, nil, 200, &audit)
	var seen []string
	for _, e := range audit {
		seen = append(seen, e.Action+":"+e.Result)
	}
	got := strings.Join(seen, " ")
	if !strings.Contains(got, "cluster.enrol-token.create:success") || !strings.Contains(got, "cluster.node.approve:not_found") ||
		!strings.Contains(got, "cluster.node.reject:not_found") {
		t.Fatalf("audit log %q lacks the admission calls", got)
	}
}
