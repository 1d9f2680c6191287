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

// A button with data-copy="ID" copies that element's text (an example
// command, a key) and says so for a moment in its data-copied words.
document.addEventListener("click", function (e) {
	"use strict";
	var b = e.target.closest ? e.target.closest("button[data-copy]") : null;
	if (!b || !navigator.clipboard) {
		return;
	}
	var src = document.getElementById(b.getAttribute("data-copy"));
	if (!src) {
		return;
	}
	navigator.clipboard.writeText(src.textContent).then(function () {
		var was = b.textContent;
		b.textContent = b.getAttribute("data-copied") || was;
		window.setTimeout(function () { b.textContent = was; }, 1500);
	});
});

// The top bar's menu closes on a click elsewhere, when the keyboard's
// focus leaves it, and on Escape while the focus is in it.
document.addEventListener("click", function (e) {
	"use strict";
	document.querySelectorAll("details.navmenu[open]").forEach(function (d) {
		if (!d.contains(e.target)) {
			d.removeAttribute("open");
		}
	});
});
document.addEventListener("focusout", function (e) {
	"use strict";
	var d = e.target.closest ? e.target.closest("details.navmenu[open]") : null;
	if (d && e.relatedTarget && !d.contains(e.relatedTarget)) {
		d.removeAttribute("open");
	}
});
document.addEventListener("keydown", function (e) {
	"use strict";
	if (e.key !== "Escape" || e.defaultPrevented) {
		return;
	}
	document.querySelectorAll("details.navmenu[open]").forEach(function (d) {
		if (d.contains(document.activeElement)) {
			d.removeAttribute("open");
			d.querySelector("summary").focus();
		}
	});
});

// A file picker (filePicker) names the chosen file in the page's words.
document.addEventListener("change", function (e) {
	"use strict";
	var input = e.target;
	if (!input.classList || !input.classList.contains("filepick-input")) {
		return;
	}
	var name = input.parentNode.querySelector(".filepick-name");
	if (name) {
		name.textContent = input.files && input.files.length ? input.files[0].name : name.getAttribute("data-none");
	}
});

// A field with data-rule says its rule, in the page's language, when the
// browser finds it broken: instead of the browser's own "Please match the
// requested format", which names neither the field nor the rule. Typing
// clears it, so the browser checks the field afresh.
document.addEventListener("invalid", function (e) {
	"use strict";
	var el = e.target;
	if (el.dataset && el.dataset.rule && !el.validity.valueMissing) {
		el.setCustomValidity(el.dataset.rule);
	}
}, true);
document.addEventListener("input", function (e) {
	"use strict";
	var el = e.target;
	if (el.dataset && el.dataset.rule) {
		el.setCustomValidity("");
	}
}, true);
