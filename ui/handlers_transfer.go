package ui

import (
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"

	"github.com/cairnhq/cairn/storage"
)

// maxObjectSize bounds one upload, as S3 bounds one object.
const maxObjectSize = 5 << 40

// upload stores the request body as an object. The bucket page's script sends
// the file as the raw body with its length, and Put streams it into shards as
// it arrives, so a file is never held in memory here. The answer is plain
// text for the script to show; on success, Location is the listing to reload.
func (s *server) upload(w http.ResponseWriter, r *http.Request, v *view) {
	if s.objects == nil {
		plainText(w, http.StatusServiceUnavailable, v.T("storage.unavailable"))
		return
	}
	bucket, key := r.PathValue("bucket"), r.URL.Query().Get("key")
	switch {
	case key == "":
		plainText(w, http.StatusBadRequest, v.T("objects.no_key"))
		return
	case r.ContentLength < 0:
		plainText(w, http.StatusLengthRequired, v.T("objects.no_length"))
		return
	case r.ContentLength > maxObjectSize:
		plainText(w, http.StatusRequestEntityTooLarge, v.T("objects.too_large"))
		return
	}
	if _, err := s.objects.Put(r.Context(), v.p, bucket, key, r.ContentLength, r.Body, storage.PutOptions{ContentType: contentType(r)}); err != nil {
		s.logErr(r, err)
		plainText(w, httpStatus(err), errorText(v.tr, err))
		return
	}
	dir := folderOf(key)
	w.Header().Set("Location", string(bucketURL(bucket, dir))+sep(dir)+"uploaded="+url.QueryEscape(baseName(key)))
	plainText(w, http.StatusCreated, v.Tf("objects.uploaded", baseName(key)))
}

func plainText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// download streams an object to the browser as a file to save.
func (s *server) download(w http.ResponseWriter, r *http.Request, v *view) {
	v.nav = "buckets"
	if s.objects == nil {
		s.storageUnavailable(w, r, v)
		return
	}
	bucket, key := r.PathValue("bucket"), r.URL.Query().Get("key")
	obj, err := s.objects.Head(r.Context(), v.p, bucket, key)
	if err != nil {
		s.failPage(w, r, v, err)
		return
	}
	dw := &downloadWriter{w: w, obj: obj}
	if _, err := s.objects.Get(r.Context(), v.p, bucket, key, 0, -1, dw); err != nil {
		if !dw.started {
			s.failPage(w, r, v, err)
			return
		}
		s.logErr(r, err)
		// The status line is gone: break the connection, so the browser
		// reports a failed download instead of saving a short file.
		panic(http.ErrAbortHandler)
	}
	dw.start()
}

// downloadWriter sends the download's headers with the first bytes, so an
// object that cannot be read at all still gets an error page. If the object
// is replaced between Head and Get, the length no longer matches and the
// server breaks the connection: the browser reports a failed download.
type downloadWriter struct {
	w       http.ResponseWriter
	obj     *storage.Object
	started bool
}

func (d *downloadWriter) start() {
	if d.started {
		return
	}
	d.started = true
	h := d.w.Header()
	ctype := d.obj.ContentType
	if ctype == "" {
		ctype = "application/octet-stream"
	}
	disp := mime.FormatMediaType("attachment", map[string]string{"filename": fileName(d.obj.Key)})
	if disp == "" {
		disp = "attachment"
	}
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.FormatInt(d.obj.Size, 10))
	h.Set("Content-Disposition", disp)
	h.Set("ETag", `"`+d.obj.ETag+`"`)
	h.Set("Last-Modified", d.obj.Modified.UTC().Format(http.TimeFormat))
	h.Set("Cache-Control", "no-store")
	// Were it ever rendered rather than saved, the file gets no powers.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	d.w.WriteHeader(http.StatusOK)
}

func (d *downloadWriter) Write(p []byte) (int, error) {
	d.start()
	return d.w.Write(p)
}

// baseName is a key's last step, "" for a folder marker such as "scans/".
func baseName(key string) string { return key[len(folderOf(key)):] }

// fileName is what a downloaded object is saved as.
func fileName(key string) string {
	if name := baseName(key); name != "" {
		return name
	}
	return path.Base(key)
}
