package ui

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
)

// Admission admits new nodes to the cluster: the consensus node does.
type Admission interface {
	CreateEnrolToken(ctx context.Context, ttl time.Duration, creator string) (consensus.EnrolToken, error)
	PendingNodes() []consensus.PendingNode
	ApproveNode(ctx context.Context, name, fingerprint, by string) (consensus.PendingNode, error)
}

// createEnrolToken shows a new one-time enrolment token once, on the
// dashboard itself (never in a URL).
func (s *server) createEnrolToken(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "dashboard"
	if s.admission == nil || !v.admin() {
		s.failPage(w, r, v, consensus.Errorf(consensus.CodeForbidden, "not allowed to create enrolment tokens"))
		return
	}
	tok, err := s.admission.CreateEnrolToken(r.Context(), 0, v.p.User.Name)
	s.id.AuditAction(r.Context(), v.p, "cluster.enrol-token.create", tok.ID, err)
	d := s.dashboardData(r, v, true)
	if err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, dashboardPage(v, d))
		return
	}
	d.EnrolToken = &tok
	s.render(w, r, http.StatusOK, dashboardPage(v, d))
}

// approveNode admits a pending node if the fingerprint typed in (read off
// the box's console) is that of the key it asks with.
func (s *server) approveNode(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "dashboard"
	if s.admission == nil || !v.admin() {
		s.failPage(w, r, v, consensus.Errorf(consensus.CodeForbidden, "not allowed to approve nodes"))
		return
	}
	name := r.PathValue("name")
	fp := strings.ToLower(strings.TrimSpace(r.PostFormValue("fingerprint")))
	var err error
	if fp == "" {
		err = consensus.Errorf(consensus.CodeInvalid, "fingerprint is required")
	} else {
		_, err = s.admission.ApproveNode(r.Context(), name, fp, v.p.User.Name)
		s.id.AuditAction(r.Context(), v.p, "cluster.node.approve", name, err)
	}
	if err != nil {
		s.logErr(r, err)
		v.err = errorText(v.tr, err)
		s.render(w, r, formStatus, dashboardPage(v, s.dashboardData(r, v, true)))
		return
	}
	s.redirect(w, r, "/dashboard?approved="+url.QueryEscape(name))
}
