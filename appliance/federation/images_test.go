package federation

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
)

// imageStore stands in for a site's image upload route: it keeps the
// hash of what it was given, and who asked.
type imageStore struct {
	mu      sync.Mutex
	uploads []string // sha256 as user
}

func (s *imageStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/fed/v1/api/v1/images/upload" {
		http.NotFound(w, r)
		return
	}
	h := sha256.New()
	_, _ = io.Copy(h, r.Body)
	_, name, _, _ := Delegation(r)
	s.mu.Lock()
	s.uploads = append(s.uploads, hex.EncodeToString(h.Sum(nil))+" "+r.URL.Query().Get("name")+" as "+name)
	s.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"sha256":%q}`, hex.EncodeToString(h.Sum(nil)))
}

func (s *imageStore) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.uploads...)
}

// An image pushed to a site arrives whole, checked chunk by chunk, and is
// imported there once, as the user who pushed it. A link broken in the
// middle costs what was in flight: the push goes on from what the site
// holds. A chunk that does not match its hash is refused and changes
// nothing; an import sent again is replayed.
func TestImagePushResumes(t *testing.T) {
	e := startHub(t)
	e.hub.ImageDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.hub.RunIntents(ctx)
	site := joinSite(t, e, "ward-east")
	store := &imageStore{}
	site.m.Handler, site.m.StagingDir = store, t.TempDir()
	site.run()

	img := make([]byte, 5*ChunkSize+12345)
	_, _ = rand.Read(img)
	sum := sha256.Sum256(img)
	sha := hex.EncodeToString(sum[:])
	if _, err := e.hub.UploadImage(ctx, e.user, "golden", bytes.NewReader(img)); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("an upload by a user who is not a hub admin: %v", err)
	}
	im, err := e.hub.UploadImage(ctx, e.admin, "golden", bytes.NewReader(img))
	if err != nil || im.SHA256 != sha || im.Size != int64(len(img)) {
		t.Fatalf("upload: %+v %v", im, err)
	}
	if _, err := e.hub.PushImage(ctx, e.admin, "golden", PushSpec{Sites: []string{"ward-east"}}); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("a push without a project: %v", err)
	}
	ds, err := e.hub.PushImage(ctx, e.admin, "golden", PushSpec{Sites: []string{"ward-east"}, Project: "radiology", RateKiB: 2048})
	if err != nil || len(ds) != 1 {
		t.Fatalf("push: %+v %v", ds, err)
	}
	dist := func() Distribution {
		for _, d := range e.hub.Distributions(e.admin, "golden") {
			if d.ID == ds[0].ID {
				return d
			}
		}
		t.Fatal("the push is gone")
		return Distribution{}
	}
	// The link breaks part way.
	testutil.WaitFor(t, 20*time.Second, "part of the image at the site", func() error {
		if d := dist(); d.Received < 2*ChunkSize {
			return fmt.Errorf("%+v", d)
		}
		return nil
	})
	site.stop()
	testutil.WaitFor(t, 10*time.Second, "the session ended", func() error {
		if e.hub.Connected(site.m.membership().SiteID) {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	cut := dist()
	if cut.State != DistPending || cut.Received >= cut.Size {
		t.Fatalf("cut off: %+v", cut)
	}
	site.run()
	testutil.WaitFor(t, 30*time.Second, "the image imported at the site", func() error {
		if d := dist(); d.State != DistDone {
			return fmt.Errorf("%s %d/%d %s", d.State, d.Received, d.Size, d.Message)
		}
		return nil
	})
	d := dist()
	if d.Resumes < 1 || d.Sent > d.Size+2*ChunkSize {
		t.Fatalf("the push started over: %d resumes, %d bytes sent for %d", d.Resumes, d.Sent, d.Size)
	}
	if got := store.list(); len(got) != 1 || got[0] != sha+" golden as it-central@hub" || !strings.Contains(d.Result, sha) {
		t.Fatalf("the site's imports: %q, result %q", got, d.Result)
	}
	if left, _ := filepath.Glob(filepath.Join(site.m.StagingDir, "*")); len(left) != 0 {
		t.Fatalf("staging left %v", left)
	}

	// Sent again, the import is replayed; a chunk with the wrong hash is
	// refused and stages nothing.
	send := func(method, path string, body []byte, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, bytes.NewReader(body))
		req.Header.Set(HeaderUser, "it-central")
		req.Header.Set(HeaderRole, string(HubAdmin))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		site.m.hubHandler().ServeHTTP(rec, req)
		return rec
	}
	size := fmt.Sprint(len(img))
	if rec := send("POST", "/fed/v1/images/"+sha+"/import?size="+size+"&name=golden&project=radiology&dist="+ds[0].ID, nil); rec.Code != http.StatusCreated || len(store.list()) != 1 {
		t.Fatalf("an import sent again: %d %s, %d imports", rec.Code, rec.Body, len(store.list()))
	}
	if rec := send("PUT", "/fed/v1/images/"+sha+"/chunks/0?size="+size, img[:ChunkSize], HeaderChunkSHA256, strings.Repeat("0", 64)); rec.Code != http.StatusBadRequest {
		t.Fatalf("a chunk with the wrong hash: %d %s", rec.Code, rec.Body)
	}
	if _, err := os.Stat(filepath.Join(site.m.StagingDir, sha+".part")); !os.IsNotExist(err) {
		t.Fatalf("a refused chunk was staged: %v", err)
	}
	if rec := send("POST", "/fed/v1/images/"+sha+"/import?size="+size+"&name=golden&project=radiology&dist=another", nil); rec.Code != http.StatusConflict {
		t.Fatalf("an import of an image not all there: %d %s", rec.Code, rec.Body)
	}
	// A staged file longer than the image is not this image: it goes.
	part := filepath.Join(site.m.StagingDir, sha+".part")
	if err := os.WriteFile(part, append(img, 'x'), 0o600); err != nil {
		t.Fatal(err)
	}
	if rec := send("GET", "/fed/v1/images/"+sha+"?size="+size, nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"received":0`) {
		t.Fatalf("a staged file too long: %d %s", rec.Code, rec.Body)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Fatalf("a staged file too long was kept: %v", err)
	}

	// A push a site that is away does not get by its expiry fails, and
	// never reaches it.
	site.stop()
	testutil.WaitFor(t, 10*time.Second, "the session ended", func() error {
		if e.hub.Connected(site.m.membership().SiteID) {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	late, err := e.hub.PushImage(ctx, e.admin, sha, PushSpec{Sites: []string{"ward-east"}, Project: "radiology", ExpiresIn: "1s"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := e.hub.ExpireIntents(ctx); err != nil {
		t.Fatal(err)
	}
	ds = late
	if d := dist(); d.State != DistFailed || !strings.Contains(d.Message, "expired") {
		t.Fatalf("an expired push: %+v", d)
	}
	site.run()
	time.Sleep(2 * time.Second)
	if got := store.list(); len(got) != 1 {
		t.Fatalf("an expired push reached the site: %q", got)
	}
}
