package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// htmx is vendored from the npm package htmx.org (see static/htmx.LICENSE),
// noVNC from @novnc/novnc (static/novnc/VERSION): the appliance may have no
// internet, so nothing is fetched at run time. noVNC's ES modules import
// each other by relative path, so files keep their folders under /static/.
//
//go:embed static
var staticFS embed.FS

// asset is an embedded file with its validator.
type asset struct {
	body  []byte
	etag  string
	ctype string
}

// loadStatic reads the embedded files once; their ETags let browsers
// revalidate cheaply after an upgrade changed them.
func loadStatic() (map[string]asset, error) {
	out := map[string]asset{}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if path.Ext(p) == ".js" {
			// Module scripts need a JavaScript type; the host's mime.types
			// must not decide that.
			ctype = "text/javascript; charset=utf-8"
		}
		if ctype == "" {
			ctype = "text/plain; charset=utf-8"
		}
		out[strings.TrimPrefix(p, "static/")] = asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: ctype}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load static files: %w", err)
	}
	return out, nil
}

func (s *server) serveStatic(w http.ResponseWriter, r *http.Request) {
	a, ok := s.static[r.PathValue("name")]
	if !ok {
		s.notFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache") // always revalidate; the ETag makes it a 304
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
