package federation

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	mathrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/go-memdb"
)

// Images on several hub nodes. An upload lands on the node that took it;
// every other hub node copies it from a node that holds it, over the hub's
// cluster port, and is then recorded as a holder too. So a push goes out
// from whichever node holds the site's session, and an image outlives the
// node it was uploaded to. A copy cut short goes on from where it stopped
// (ImageDir/fetch-SHA256), and is kept only if its SHA-256 is the image's.

const imagePath = RPCPrefix + "images/"

// serveImage answers a peer's GET for an image this node holds, with
// ranges, so a copy resumes.
func (h *Hub) serveImage(w http.ResponseWriter, r *http.Request) {
	sum := r.PathValue("sha")
	if len(sum) != 64 || !isHex(sum) || h.ImageDir == "" {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(filepath.Join(h.ImageDir, sum))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// copyRetry is how long a node first waits before trying a failed copy
// again; it doubles up to copyRetryCap.
const (
	copyRetry    = 10 * time.Second
	copyRetryCap = 5 * time.Minute
)

// RunImageCopies keeps a copy of every hub image on this node (every hub
// node runs it), until ctx ends: those it does not hold, and those it is
// recorded as holding whose file is gone (a disk replaced).
func (h *Hub) RunImageCopies(ctx context.Context) {
	if h.ImageDir == "" {
		return
	}
	type backoff struct {
		until time.Time
		wait  time.Duration
	}
	failed := map[string]backoff{} // by image
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		txn := h.c.Store().ReadTxn()
		it, err := txn.Get(tHubImages, "id")
		if err != nil {
			return
		}
		ws.Add(it.WatchCh())
		var wanted []HubImage
		for o := it.Next(); o != nil; o = it.Next() {
			im := o.(*HubImage)
			final := filepath.Join(h.ImageDir, im.SHA256)
			if _, err := os.Stat(final); err != nil || !slices.Contains(im.Holders, h.c.Name()) {
				wanted = append(wanted, *im)
			}
		}
		wait := time.Duration(0)
		soonest := func(d time.Duration) {
			if wait == 0 || d < wait {
				wait = d
			}
		}
		for _, im := range wanted {
			if b, ok := failed[im.SHA256]; ok && time.Now().Before(b.until) {
				soonest(time.Until(b.until))
				continue
			}
			if err := h.copyImage(ctx, im); err != nil {
				if ctx.Err() != nil {
					return
				}
				b := failed[im.SHA256]
				b.wait = min(max(copyRetry, 2*b.wait), copyRetryCap)
				b.until = time.Now().Add(b.wait)
				failed[im.SHA256] = b
				h.log.Warn("copy an image from another hub node; trying again", "image", im.Name, "sha256", im.SHA256, "err", err, "in", b.wait)
				soonest(b.wait)
				continue
			}
			delete(failed, im.SHA256)
		}
		wctx, cancel := context.WithCancel(ctx)
		if wait > 0 {
			wctx, cancel = context.WithTimeout(ctx, wait)
		}
		_ = h.c.Store().Watch(wctx, ws)
		cancel()
	}
}

// copyImage fetches im from a node that holds it, and records this node
// as holding it once the bytes are whole, checked and durable.
func (h *Hub) copyImage(ctx context.Context, im HubImage) error {
	final := filepath.Join(h.ImageDir, im.SHA256)
	if _, err := os.Stat(final); err != nil {
		if err := h.fetchImage(ctx, im, final); err != nil {
			return err
		}
	}
	_ = os.Remove(filepath.Join(h.ImageDir, "fetch-"+im.SHA256)) // one left beside a whole copy
	if slices.Contains(im.Holders, h.c.Name()) {
		return nil
	}
	_, err := h.c.Apply(ctx, MsgAddHubImage, addHubImageCmd{Image: HubImage{SHA256: im.SHA256, Size: im.Size, Holders: []string{h.c.Name()}}}, nil)
	return err
}

// partialCopy is how far a node's copy of an image got, kept between
// tries so that a long partial file is not read again each time.
type partialCopy struct {
	n    int64
	hash []byte // the SHA-256 state after n bytes (encoding.BinaryMarshaler)
}

func (h *Hub) fetchImage(ctx context.Context, im HubImage, final string) error {
	p, ok := h.c.(peers)
	if !ok {
		return errors.New("this hub node does not reach its peers")
	}
	// One holder a try, another (perhaps) the next; asked only when bytes
	// are missing (a whole partial is checked here alone).
	fetch := func(have int64, f *os.File, sum hash.Hash) (int64, error) {
		var from []string
		for _, holder := range im.Holders {
			if holder != h.c.Name() {
				from = append(from, holder)
			}
		}
		if len(from) == 0 {
			return 0, errors.New("no other hub node holds it")
		}
		holder := from[mathrand.IntN(len(from))]
		addr, ok := p.PeerAddr(holder)
		if !ok {
			return 0, fmt.Errorf("hub node %s is not known", holder)
		}
		n, err := fetchFrom(ctx, p.RPCClient(), "https://"+addr+imagePath+im.SHA256, have, im.Size-have, f, sum)
		if err != nil {
			return n, fmt.Errorf("from %s: %w", holder, err)
		}
		if have+n != im.Size {
			return n, fmt.Errorf("hub node %s sent %d of %d bytes", holder, have+n, im.Size)
		}
		return n, nil
	}
	if err := os.MkdirAll(h.ImageDir, 0o700); err != nil {
		return err
	}
	part := filepath.Join(h.ImageDir, "fetch-"+im.SHA256)
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	have, sum, err := h.resume(im, f)
	if err != nil {
		return err
	}
	defer h.keepPartial(im.SHA256, f, &have, sum)
	if have < im.Size {
		if err := roomFor(h.ImageDir, im.Size-have); err != nil {
			return err
		}
		n, err := fetch(have, f, sum)
		have += n
		if err != nil {
			return err
		}
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != im.SHA256 {
		// Not what was uploaded: thrown away, fetched whole next time.
		have = -1
		_ = os.Remove(part)
		return fmt.Errorf("the copy's SHA-256 is %s", got)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := os.Rename(part, final); err != nil {
		return err
	}
	have = -1
	return syncDir(h.ImageDir)
}

// resume is where a copy in f goes on from, and the hash of what f holds
// up to there: from the state the last try kept if f is as long as it
// left it, else read again (a node restarted, or a write was cut short).
// A file longer than the image is emptied.
func (h *Hub) resume(im HubImage, f *os.File) (int64, hash.Hash, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, nil, err
	}
	sum := sha256.New()
	h.mu.Lock()
	kept, ok := h.partials[im.SHA256]
	h.mu.Unlock()
	if ok && kept.n == fi.Size() && kept.n <= im.Size {
		if u, ok := sum.(encoding.BinaryUnmarshaler); ok && u.UnmarshalBinary(kept.hash) == nil {
			_, err := f.Seek(kept.n, io.SeekStart)
			return kept.n, sum, err
		}
		sum = sha256.New()
	}
	if fi.Size() > im.Size {
		if err := f.Truncate(0); err != nil {
			return 0, nil, err
		}
		_, err := f.Seek(0, io.SeekStart)
		return 0, sum, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, nil, err
	}
	have, err := io.Copy(sum, f)
	return have, sum, err
}

// keepPartial keeps how far a try got (have -1: the copy is done or
// thrown away), if f is as long as that.
func (h *Hub) keepPartial(image string, f *os.File, have *int64, sum hash.Hash) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.partials, image)
	if *have < 0 {
		return
	}
	fi, err := f.Stat()
	m, ok := sum.(encoding.BinaryMarshaler)
	if err != nil || !ok || fi.Size() != *have {
		return
	}
	if state, err := m.MarshalBinary(); err == nil {
		if h.partials == nil {
			h.partials = map[string]partialCopy{}
		}
		h.partials[image] = partialCopy{n: *have, hash: state}
	}
}

// fetchFrom appends what url holds from byte off on, up to want bytes, to
// f (and sum), returning how much it appended.
func fetchFrom(ctx context.Context, c *http.Client, url string, off, want int64, f *os.File, sum hash.Hash) (int64, error) {
	if c == nil {
		return 0, errors.New("no client for the hub's peers")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	switch {
	case off > 0 && res.StatusCode == http.StatusPartialContent, off == 0 && res.StatusCode == http.StatusOK:
	default:
		return 0, fmt.Errorf("HTTP %s", res.Status)
	}
	return io.Copy(hashedFile{f, sum}, io.LimitReader(res.Body, want))
}

// hashedFile hashes exactly what it wrote to the file, so that the two
// agree even after a write cut short.
type hashedFile struct {
	f   *os.File
	sum hash.Hash
}

func (w hashedFile) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.sum.Write(p[:n])
	return n, err
}

// roomFor refuses a copy that would leave less than stagingReserve free
// in dir.
func roomFor(dir string, n int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free-n < stagingReserve {
		return fmt.Errorf("%d MiB free on this node, %d MiB needed and %d MiB kept free", free>>20, n>>20, stagingReserve>>20)
	}
	return nil
}
