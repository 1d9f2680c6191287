// A page reached by a redirect after a form carries its one-time message
// in the query (?done=create, ?deleted=NAME, ...). Once shown, the
// message's parameters leave the address bar, so a reload or a bookmark
// does not show it again (post/redirect/get). The server keeps the list
// in step (flashParams in ui/flash.go).
(function () {
	"use strict";
	var triggers = ["done", "deleted", "created", "uploaded", "approved", "reset", "saved"];
	var companions = ["name", "ip", "node", "disk"];
	var q = new URLSearchParams(window.location.search);
	if (!triggers.some(function (k) { return q.has(k); })) {
		return;
	}
	triggers.concat(companions).forEach(function (k) { q.delete(k); });
	var rest = q.toString();
	window.history.replaceState(window.history.state, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
})();
