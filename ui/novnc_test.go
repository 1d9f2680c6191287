package ui

import (
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

// moduleImportRE finds the specifiers of static imports and re-exports
// (single- or multi-line), side-effect imports and dynamic imports.
var moduleImportRE = regexp.MustCompile(`(?m)(?:^\s*(?:import|export)\s[^'";]*?\bfrom\s*|^\s*import\s*|\bimport\(\s*)['"]([^'"]+)['"]`)

// moduleImports returns the specifiers a module's source imports.
func moduleImports(src string) []string {
	var out []string
	for _, m := range moduleImportRE.FindAllStringSubmatch(src, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestModuleImportsParse(t *testing.T) {
	src := "import RFB from \"./novnc/core/rfb.js\";\nimport {\n  a,\n  b\n} from '../x.js';\nimport './side.js';\n" +
		"export { c } from \"./c.js\";\nexport var info = 'pako (from Nodeca)';\nconst m = await import(\"./lazy.js\");\n"
	got := strings.Join(moduleImports(src), " ")
	if want := "./novnc/core/rfb.js ../x.js ./side.js ./c.js ./lazy.js"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// TestConsoleModulesAreEmbedded follows the console's ES module graph from
// static/console.js, as the browser would, through the real handler: every
// module must be served with a JavaScript type. A file left out of the
// vendored noVNC would otherwise show as a blank console, not a failure.
func TestConsoleModulesAreEmbedded(t *testing.T) {
	h := offlineHandler(t)
	seen := map[string]bool{}
	queue := []string{"/static/console.js"}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: status %d", p, rec.Code)
			continue
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") {
			t.Errorf("%s: Content-Type %q; browsers refuse modules that are not JavaScript", p, ct)
		}
		for _, spec := range moduleImports(rec.Body.String()) {
			if !strings.HasPrefix(spec, "./") && !strings.HasPrefix(spec, "../") {
				t.Errorf("%s imports %q: bare specifiers need an import map, which the page has not", p, spec)
				continue
			}
			queue = append(queue, path.Join(path.Dir(p), spec))
		}
	}
	if !seen["/static/novnc/core/rfb.js"] || len(seen) < 40 {
		t.Fatalf("followed only %d modules from console.js; is the import parser still right?", len(seen))
	}
	t.Logf("%d modules", len(seen))
}

// TestStaticNestedPaths: noVNC keeps its folders, and nothing escapes the
// embedded tree.
func TestStaticNestedPaths(t *testing.T) {
	h := offlineHandler(t)
	for p, want := range map[string]int{
		"/static/novnc/LICENSE.txt":                     http.StatusOK,
		"/static/novnc/vendor/pako/lib/zlib/inflate.js": http.StatusOK,
		"/static/novnc/core/nope.js":                    http.StatusNotFound,
		"/static/novnc/../ui.go":                        http.StatusNotFound,
		"/static/%2e%2e/ui.go":                          http.StatusNotFound,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != want && !(want == http.StatusNotFound && rec.Code/100 == 3) { // the mux redirects to the cleaned path
			t.Errorf("%s: status %d, want %d", p, rec.Code, want)
		}
	}
}
