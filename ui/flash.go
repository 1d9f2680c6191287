package ui

import (
	"net/http"
	"net/url"
)

// A form's handler redirects (post/redirect/get) to the page that shows
// what it did, with a one-time message in the query: ?done=create,
// ?deleted=NAME, ?created=NAME, ?uploaded=NAME, with the name, address or
// node it speaks of. That message must show once: page.js takes these
// parameters out of the address bar after a full page load, and a page
// that htmx fetched after a redirect is given its clean address to push
// (HX-Push-Url), so the browser lands on the resource's own URL.
var (
	flashTriggers   = []string{"done", "deleted", "created", "uploaded", "approved", "reset", "saved"}
	flashCompanions = []string{"name", "ip", "node", "disk"}
)

// cleanURL is u without its one-time message, and whether it had one.
func cleanURL(u *url.URL) (string, bool) {
	q := u.Query()
	had := false
	for _, k := range flashTriggers {
		had = had || q.Has(k)
	}
	if !had {
		return "", false
	}
	for _, k := range append(flashTriggers, flashCompanions...) {
		q.Del(k)
	}
	out := url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: q.Encode()}
	return out.String(), true
}

// pushCleanURL tells htmx which address a page it fetched after a redirect
// stands at: a new history entry when the form was on another page (the
// create form, and the VM's own page after it), the same entry replaced
// when it was on this one (a power button), so Back is not a stutter.
func pushCleanURL(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.Header.Get("HX-Request") != "true" {
		return
	}
	u, ok := cleanURL(r.URL)
	if !ok {
		return
	}
	if cur, err := url.Parse(r.Header.Get("HX-Current-URL")); err == nil && cur.RequestURI() == u {
		w.Header().Set("HX-Replace-Url", u)
		return
	}
	w.Header().Set("HX-Push-Url", u)
}
