package identity

import "context"

// AuditAction records a mutating call that other packages carried out (node
// admission lives in consensus): its success, or why it failed.
func (s *Service) AuditAction(ctx context.Context, p *Principal, action, resource string, err error) {
	if err != nil {
		s.recordFailure(ctx, s.auditEntry(ctx, p, action, resource, ""), err)
		return
	}
	e := s.auditEntry(ctx, p, action, resource, "")
	e.Result = "success"
	if _, aerr := s.c.Apply(ctx, MsgRecordAudit, e, nil); aerr != nil {
		s.log.Error("audit record lost", "action", e.Action, "err", aerr)
	}
}
