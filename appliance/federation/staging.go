package federation

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/cairnhq/cairn/consensus"
)

// The site's side of image distribution: a staging file per image on the
// node holding the session, appended a checked chunk at a time, and the
// import of the whole into the site's own image store as the hub user,
// once (through the ledger).

// HeaderChunkSHA256 carries a chunk's hash.
const HeaderChunkSHA256 = "Cairn-Chunk-SHA256"

var shaRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// staged answers how much of an image the site holds.
type staged struct {
	Received int64 `json:"received"`
}

// imageRoutes are the staging routes of hubHandler.
func (s *Member) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /fed/v1/images/{sha}", func(w http.ResponseWriter, r *http.Request) {
		path, size, err := s.stagingFile(r)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, staged{Received: held(path, size)})
	})
	mux.HandleFunc("PUT /fed/v1/images/{sha}/chunks/{i}", func(w http.ResponseWriter, r *http.Request) {
		path, size, err := s.stagingFile(r)
		if err != nil {
			writeError(w, err)
			return
		}
		i, err := strconv.ParseInt(r.PathValue("i"), 10, 64)
		if err != nil || i < 0 || i*ChunkSize >= size {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "no chunk %s of the image", r.PathValue("i")))
			return
		}
		off := i * ChunkSize
		if have := held(path, size); have != off {
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(staged{Received: have})
			return
		}
		want := min(int64(ChunkSize), size-off)
		buf, err := io.ReadAll(io.LimitReader(r.Body, want+1))
		sum := sha256.Sum256(buf)
		if err != nil || int64(len(buf)) != want || hex.EncodeToString(sum[:]) != r.Header.Get(HeaderChunkSHA256) {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "chunk %d of the image did not arrive whole", i))
			return
		}
		if err := appendChunk(path, off, buf); err != nil {
			s.log.Warn("stage an image chunk", "err", err)
			writeError(w, consensus.Errorf(consensus.CodeUnavailable, "stage the image: %v", err))
			return
		}
		writeJSON(w, staged{Received: off + want})
	})
	mux.HandleFunc("POST /fed/v1/images/{sha}/import", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		step := "image/" + q.Get("dist")
		if q.Get("dist") == "" {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "an import names its push"))
			return
		}
		path, size, err := s.stagingFile(r)
		if err != nil {
			writeError(w, err)
			return
		}
		// Done before (the hub missed the answer): replayed, not again.
		if consensus.First[ledgerEntry](s.c.Store().ReadTxn(), tLedger, "id", step) == nil {
			if err := wholeImage(path, size, r.PathValue("sha")); err != nil {
				writeError(w, err)
				return
			}
		}
		f, err := os.Open(path)
		if err != nil && !os.IsNotExist(err) {
			writeError(w, consensus.Errorf(consensus.CodeUnavailable, "open the staged image: %v", err))
			return
		}
		up := url.Values{"name": {q.Get("name")}, "project": {q.Get("project")}}
		if v := q.Get("visibility"); v != "" {
			up.Set("visibility", v)
		}
		req := r.Clone(r.Context())
		req.Method, req.URL = "POST", &url.URL{Path: "/fed/v1/api/v1/images/upload", RawQuery: up.Encode()}
		req.RequestURI, req.Body, req.ContentLength = "", http.NoBody, 0
		if f != nil {
			defer f.Close()
			req.Body, req.ContentLength = f, size
		}
		req.Header.Del("Content-Type")
		rec := &stepRecorder{header: http.Header{}, status: http.StatusOK}
		s.runStep(rec, req, step)
		if rec.status >= 200 && rec.status < 300 {
			_ = os.Remove(path)
		}
		replay(w, &ledgerEntry{Status: rec.status, ContentType: rec.header.Get("Content-Type"), Body: rec.body.Bytes()})
	})
}

// stagingFile is the staging path and declared size of the image a
// request names.
func (s *Member) stagingFile(r *http.Request) (string, int64, error) {
	sha := r.PathValue("sha")
	size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	switch {
	case s.StagingDir == "":
		return "", 0, consensus.Errorf(consensus.CodeUnavailable, "this site takes no images from the hub")
	case !shaRE.MatchString(sha):
		return "", 0, consensus.Errorf(consensus.CodeInvalid, "an image is named by its SHA-256")
	case err != nil || size <= 0 || size > maxImageSize:
		return "", 0, consensus.Errorf(consensus.CodeInvalid, "an image has 1 byte to 64 GiB")
	}
	if err := os.MkdirAll(s.StagingDir, 0o700); err != nil {
		return "", 0, err
	}
	return filepath.Join(s.StagingDir, sha+".part"), size, nil
}

// held is how much of an image its staging file holds whole: whole
// chunks (a chunk cut short by a crash is sent again), or all of it.
func held(path string, size int64) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st.Size() >= size {
		return size
	}
	return st.Size() / ChunkSize * ChunkSize
}

// appendChunk writes a chunk at off, cutting what a crash left after it,
// and makes it durable before it is acknowledged.
func appendChunk(path string, off int64, buf []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(off); err != nil {
		return err
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if off == 0 {
		return syncDir(filepath.Dir(path))
	}
	return nil
}

// wholeImage checks the staged image: all there, with the hash it is
// named by.
func wholeImage(path string, size int64, sha string) error {
	f, err := os.Open(path)
	if err != nil {
		return consensus.Errorf(consensus.CodeConflict, "the image is not all here yet")
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != size {
		return consensus.Errorf(consensus.CodeConflict, "the image is not all here yet")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return consensus.Errorf(consensus.CodeUnavailable, "read the staged image: %v", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != sha {
		_ = os.Remove(path) // sent again from the start
		return consensus.Errorf(consensus.CodeConflict, "the staged image does not have its hash: it is sent again")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
