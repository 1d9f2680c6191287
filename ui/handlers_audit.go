package ui

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/cairnhq/cairn/appliance/identity"
)

// auditActions are offered as filter suggestions. The filter is a prefix
// match, so "project." finds every project action.
func auditActions() []string {
	return []string{
		"auth.", "auth.login", "auth.logout", "setup.create_admin",
		"project.", "project.create", "project.update", "project.delete", "project.member.set", "project.member.remove",
		"user.", "user.create", "user.update", "user.disable", "user.enable", "user.delete",
		"token.create", "token.revoke",
		"flavor.", "flavor.create", "flavor.update", "flavor.delete",
		"quota.set",
		"bucket.", "bucket.create", "bucket.delete",
		"bucket.layout", "storage.inline-budget",
		"object.", "object.put", "object.delete", "object.tags", "object.retention", "object.legal-hold",
		"upload.", "upload.create", "upload.complete", "upload.abort",
		"disk.", "disk.add", "disk.draining", "disk.active", "disk.remove",
		"s3.credential.create", "s3.credential.delete",
		"vm.", "vm.create", "vm.start", "vm.stop", "vm.force-stop", "vm.reboot", "vm.pause", "vm.resume",
		"vm.resize", "vm.rename", "vm.delete", "vm.console",
		"image.", "image.create", "image.import", "image.update", "image.delete",
		"compute.settings",
		"vm.console.open", "vm.console.close", "vm.console.log", "identity.settings.update",
		"volume.", "volume.create", "volume.delete", "volume.extend", "volume.attach", "volume.detach",
		"volume.snapshot", "volume.snapshot.delete", "volume.export", "volume.export.grant", "volume.unexport", "vm.convert-disk",
		"vm.migrate", "vm.migrate.cancel", "vm.ha", "node.cordon", "node.uncordon", "node.drain",
		"network.", "network.create", "network.subnet", "network.delete", "port.update",
		"router.", "router.create", "router.set_gateway", "router.add_interface", "router.remove_interface", "router.delete",
		"floating_ip.", "floating_ip.create", "floating_ip.associate", "floating_ip.disassociate", "floating_ip.delete",
		"security_group.", "security_group.create", "security_group.rule_add", "security_group.rule_delete", "security_group.delete",
		"federation.", "federation.token.create", "federation.site.revoke", "federation.join", "federation.leave", "federation.grant", "federation.site.group", "federation.site.call", "federation.intent.create", "federation.image.upload", "federation.image.push",
	}
}

// auditPageSize is how many entries one page shows.
const auditPageSize = 100

func (s *server) audit(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "audit"
	q := r.URL.Query()
	d := auditData{User: strings.TrimSpace(q.Get("user")), Action: strings.TrimSpace(q.Get("action"))}
	entries, err := s.id.ListAudit(v.p, identity.AuditFilter{User: d.User, Action: d.Action, Before: q.Get("before"), Limit: auditPageSize})
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	d.Entries = entries
	if len(entries) == auditPageSize {
		older := url.Values{"before": {entries[len(entries)-1].ID}}
		if d.User != "" {
			older.Set("user", d.User)
		}
		if d.Action != "" {
			older.Set("action", d.Action)
		}
		d.Older = "/audit?" + older.Encode()
	}
	s.render(w, r, http.StatusOK, auditPage(v, d))
}

// auditDetail is an entry's detail in the reader's language where it has
// a key or a format the catalogues know; else as recorded (the tooltip
// keeps that).
func auditDetail(v *view, e identity.AuditEntry) string {
	if text, ok := keyedText(v.tr, e.Key, e.Args); ok {
		return text
	}
	if text, ok := formatText(v.tr, e.Format, e.Args, e.Inner); ok {
		return text
	}
	return e.Message
}
