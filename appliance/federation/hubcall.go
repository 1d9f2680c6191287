package federation

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// Headers by which the hub tells a site, on the site's own session, whose
// call it carries and with what role. Only the hub can open streams on a
// site's session, so only the hub can set them; the hub's own credentials
// never travel.
const (
	HeaderUser = "Cairn-Hub-User"
	HeaderRole = "Cairn-Hub-Role"
)

// forwarded are the request headers a call takes to the site.
var forwarded = []string{"Content-Type", "Accept", "Accept-Language", "If-Match", "If-None-Match"}

// Call runs one request of a site's API (path under /api/v1/) as hub user
// p, through the site's session. p needs a role on the site, and more than
// read-only for anything but GET. The site acts with the matching role of
// its own and records the hub user's name in its audit log; the hub
// records a changing call in its own. The caller closes the answer's body.
func (h *Hub) Call(ctx context.Context, p *identity.Principal, site, method, path, rawQuery string, body io.Reader, hdr http.Header) (*http.Response, error) {
	const action = "federation.site.call"
	resource := site + " " + method + " " + path
	st, role, err := h.visibleSite(h.c.Store().ReadTxn(), p, site)
	if err != nil {
		return nil, h.id.Deny(ctx, p, action, resource, "", err)
	}
	resource = st.Name + " " + method + " " + path
	readOnly := method == http.MethodGet || method == http.MethodHead
	switch {
	case !SiteAPIPath(path):
		return nil, h.id.Deny(ctx, p, action, resource, "", consensus.Errorf(consensus.CodeInvalid, "a site's API path starts with /api/v1/"))
	case !readOnly && role == HubReadOnly:
		return nil, h.id.Deny(ctx, p, action, resource, "", consensus.Errorf(consensus.CodeForbidden, "read-only on site %s: only GET", st.Name))
	case !st.Active():
		return nil, h.id.Deny(ctx, p, action, resource, "", consensus.Errorf(consensus.CodeConflict, "site %s is revoked", st.Name))
	}
	c, err := h.SiteClient(st.ID)
	if err != nil {
		if !readOnly {
			h.id.AuditAction(ctx, p, action, resource, err)
		}
		return nil, err
	}
	u := &url.URL{Scheme: "http", Host: "site", Path: "/fed/v1" + path, RawQuery: rawQuery}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, consensus.Errorf(consensus.CodeInvalid, "the call: %v", err)
	}
	for _, k := range forwarded {
		if v := hdr.Values(k); len(v) > 0 {
			req.Header[k] = v
		}
	}
	req.Header.Set(HeaderUser, p.User.Name)
	req.Header.Set(HeaderRole, string(role))
	res, err := c.Do(req)
	if err != nil {
		// Whether a changing call happened is the site's to say: its
		// audit log has it when it did.
		err = consensus.Errorf(consensus.CodeUnavailable, "site %s did not answer (whether the call was done, the site's audit log says): %v", st.Name, err)
		if !readOnly {
			h.id.AuditAction(ctx, p, action, resource, err)
		}
		return nil, err
	}
	if !readOnly {
		var aerr error
		if res.StatusCode >= 400 {
			aerr = consensus.Errorf(codeOf(res.StatusCode), "the site answered %s", res.Status)
		}
		h.id.AuditAction(ctx, p, action, resource, aerr)
	}
	return res, nil
}

// SiteAPIPath tells whether p is a clean path of a site's API: under
// /api/v1/, with nothing that a second decoding or a cleaning would turn
// into another path (the site's /fed/ routes are never the hub users').
func SiteAPIPath(p string) bool {
	return strings.HasPrefix(p, "/api/v1/") && path.Clean(p) == p && !strings.ContainsAny(p, "%?#\\")
}

// codeOf is the error code of a site's HTTP status, for the hub's audit.
func codeOf(status int) string {
	switch status {
	case http.StatusBadRequest:
		return consensus.CodeInvalid
	case http.StatusForbidden, http.StatusUnauthorized:
		return consensus.CodeForbidden
	case http.StatusNotFound:
		return consensus.CodeNotFound
	case http.StatusConflict:
		return consensus.CodeConflict
	case http.StatusPreconditionFailed:
		return consensus.CodePreconditionFailed
	case http.StatusInsufficientStorage, http.StatusRequestEntityTooLarge:
		return consensus.CodeQuotaExceeded
	}
	return consensus.CodeUnavailable
}

// Delegation reads the hub user and role a call through the session
// carries, for the site to act as: the principal's ID and name, and the
// site's role. ok is false for a request without them.
func Delegation(r *http.Request) (id, name string, role identity.Role, ok bool) {
	user := r.Header.Get(HeaderUser)
	role = HubRole(r.Header.Get(HeaderRole)).SiteRole()
	if user == "" || role == "" || strings.ContainsAny(user, "@/ ") {
		return "", "", "", false
	}
	return "hub:" + user, user + "@hub", role, true
}
