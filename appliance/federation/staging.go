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
	"sync"
	"time"

	"golang.org/x/sys/unix"

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

// imageRoutes are the staging routes of hubHandler. One image's requests
// take its lock: a chunk checked against what is held is written before
// any other is checked, and an import reads the file no chunk changes.
func (s *Member) imageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /fed/v1/images/{sha}", func(w http.ResponseWriter, r *http.Request) {
		path, size, err := s.stagingFile(r)
		if err != nil {
			writeError(w, err)
			return
		}
		defer s.lockImage(path)()
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
		want := min(int64(ChunkSize), size-off)
		buf, err := io.ReadAll(io.LimitReader(r.Body, want+1))
		sum := sha256.Sum256(buf)
		if err != nil || int64(len(buf)) != want || hex.EncodeToString(sum[:]) != r.Header.Get(HeaderChunkSHA256) {
			writeError(w, consensus.Errorf(consensus.CodeInvalid, "chunk %d of the image did not arrive whole", i))
			return
		}
		defer s.lockImage(path)()
		if have := held(path, size); have != off {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			_ = json.NewEncoder(w).Encode(staged{Received: have})
			return
		}
		if off == 0 {
			if err := s.stagingRoom(size); err != nil {
				writeError(w, err)
				return
			}
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
		defer s.lockImage(path)()
		up := url.Values{"name": {q.Get("name")}, "project": {q.Get("project")}}
		if v := q.Get("visibility"); v != "" {
			up.Set("visibility", v)
		}
		req := r.Clone(r.Context())
		req.Method, req.URL = "POST", &url.URL{Path: "/fed/v1/api/v1/images/upload", RawQuery: up.Encode()}
		req.RequestURI, req.Body, req.ContentLength = "", http.NoBody, 0
		req.Header.Del("Content-Type")
		// Done before (the hub missed the answer): replayed, and the file
		// is not needed. Else the file is checked whole, through the
		// handle the import then reads.
		if consensus.First[ledgerEntry](s.c.Store().ReadTxn(), tLedger, "id", step) == nil {
			f, err := wholeImage(path, size, r.PathValue("sha"))
			if err != nil {
				writeError(w, err)
				return
			}
			defer f.Close()
			req.Body, req.ContentLength = f, size
		}
		rec := &stepRecorder{header: http.Header{}, status: http.StatusOK}
		// An import takes its time: ten minutes, and more at 20 MB/s.
		s.runStep(rec, req, step, stepTimeout+time.Duration(size/(20<<20))*time.Second)
		state := rec.header.Get(HeaderIntentState)
		if rec.status < 300 || (state == "" && rec.status < 500 && rec.status != http.StatusTooManyRequests) {
			_ = os.Remove(path) // imported, or refused: not needed again
		}
		if state != "" {
			w.Header().Set(HeaderIntentState, state)
		}
		replay(w, &ledgerEntry{Status: rec.status, ContentType: rec.header.Get("Content-Type"), Body: rec.body.Bytes()})
	})
}

// lockImage takes the lock of the image staged at path; the returned
// function lets it go.
func (s *Member) lockImage(path string) func() {
	s.mu.Lock()
	if s.imageLocks == nil {
		s.imageLocks = map[string]*imageLock{}
	}
	l := s.imageLocks[path]
	if l == nil {
		l = &imageLock{}
		s.imageLocks[path] = l
	}
	l.users++
	s.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.imageLocks, path)
		}
		s.mu.Unlock()
	}
}

// imageLock is one staged image's lock, kept while anyone waits for it.
type imageLock struct {
	sync.Mutex
	users int
}

// stagingReserve is what staging leaves free on its file system.
const stagingReserve = 2 << 30

// stagingRoom refuses an image the staging file system cannot take and
// keep stagingReserve free.
func (s *Member) stagingRoom(size int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(s.StagingDir, &st); err != nil {
		return consensus.Errorf(consensus.CodeUnavailable, "stage the image: %v", err)
	}
	if free := int64(st.Bavail) * st.Bsize; free-size < stagingReserve {
		return consensus.Errorf(consensus.CodeQuotaExceeded, "this site has %d MiB free to stage images; this one needs %d MiB and %d MiB stay free", free>>20, size>>20, stagingReserve>>20)
	}
	return nil
}

// sweepStaging removes staged images no push has touched for
// stagingKeep: pushes that expired, failed or went elsewhere.
func (s *Member) sweepStaging() {
	if s.StagingDir == "" {
		return
	}
	parts, _ := filepath.Glob(filepath.Join(s.StagingDir, "*.part"))
	for _, p := range parts {
		if st, err := os.Stat(p); err == nil && time.Since(st.ModTime()) > stagingKeep {
			done := s.lockImage(p)
			_ = os.Remove(p)
			done()
		}
	}
}

// stagingKeep is how long an untouched staged image is kept: longer than
// a push may wait.
const stagingKeep = MaxIntentTTL + 24*time.Hour

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
// chunks (a chunk cut short by a crash is sent again), or all of it. A
// file longer than the image is not this image: it goes.
func held(path string, size int64) int64 {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return 0
	case st.Size() > size:
		_ = os.Remove(path)
		return 0
	case st.Size() == size:
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

// wholeImage opens the staged image and checks it: all there, with the
// hash it is named by. The caller reads it from the start through the
// returned file.
func wholeImage(path string, size int64, sha string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, consensus.Errorf(consensus.CodeConflict, "the image is not all here yet")
	}
	if st, err := f.Stat(); err != nil || st.Size() != size {
		f.Close()
		return nil, consensus.Errorf(consensus.CodeConflict, "the image is not all here yet")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, consensus.Errorf(consensus.CodeUnavailable, "read the staged image: %v", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != sha {
		f.Close()
		_ = os.Remove(path) // sent again from the start
		return nil, consensus.Errorf(consensus.CodeConflict, "the staged image does not have its hash: it is sent again")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, consensus.Errorf(consensus.CodeUnavailable, "read the staged image: %v", err)
	}
	return f, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
