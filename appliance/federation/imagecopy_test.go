package federation

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// An image uploaded to one node of a three-node hub is copied to the
// other two over the hub's cluster port, each then recorded as holding
// it: one goes on from the half an earlier copy left, the other throws
// away a copy whose bytes are not the image's and fetches it whole. The
// uploading node can then be lost: the others hold the bytes.
func TestImagesCopiedToEveryHubNode(t *testing.T) {
	hubs := make([]*Hub, 3)
	var mu sync.Mutex
	var ranges []string // asked of any node
	c := consensustest.StartWith(t, 3, func(r *consensus.Registry) {
		identity.Register(r)
		Register(r)
	}, func(i int, nd *consensus.Node) {
		nd.HandleRPC(RPCPrefix, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
			hubs[i].RPCHandler().ServeHTTP(w, r)
		}))
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var ids []*identity.Service
	for i, n := range c.Nodes {
		ids = append(ids, identity.NewService(n, identity.DefaultConfig()))
		hubs[i] = NewHub(n, ids[i], slog.New(slog.DiscardHandler))
		hubs[i].ImageDir = t.TempDir()
	}
	if _, err := ids[0].CreateFirstAdmin(ctx, "it-central", "hub-root-7373"); err != nil {
		t.Fatal(err)
	}
	admin := login(t, ids[0], "it-central", "hub-root-7373")

	img := make([]byte, 5*ChunkSize+12345)
	for i := range img {
		img[i] = byte(rand.Uint32())
	}
	raw := sha256.Sum256(img)
	sum := hex.EncodeToString(raw[:])
	// Node 2 holds the first half from a copy cut short; node 3 a copy of
	// the right length whose bytes are not the image's.
	if err := os.WriteFile(filepath.Join(hubs[1].ImageDir, "fetch-"+sum), img[:len(img)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(img)
	bad[len(bad)/3] ^= 1
	if err := os.WriteFile(filepath.Join(hubs[2].ImageDir, "fetch-"+sum), bad, 0o600); err != nil {
		t.Fatal(err)
	}

	im, err := hubs[0].UploadImage(ctx, admin, "golden", bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if im.SHA256 != sum || !slices.Equal(im.Holders, []string{c.Nodes[0].Name()}) {
		t.Fatalf("uploaded %+v", im)
	}
	for _, h := range hubs {
		go h.RunImageCopies(ctx)
	}
	testutil.WaitFor(t, 45*time.Second, "the image on every hub node", func() error {
		for i, h := range hubs {
			got := imageByRef(h.c.Store().ReadTxn(), "golden")
			if got == nil || len(got.Holders) != 3 {
				return fmt.Errorf("node %d says %+v", i+1, got)
			}
		}
		return nil
	})
	for i, h := range hubs {
		b, err := os.ReadFile(filepath.Join(h.ImageDir, sum))
		if err != nil || !bytes.Equal(b, img) {
			t.Fatalf("node %d holds %d bytes, not the image (%v)", i+1, len(b), err)
		}
		if left, _ := filepath.Glob(filepath.Join(h.ImageDir, "fetch-*")); len(left) > 0 {
			t.Fatalf("node %d keeps %v", i+1, left)
		}
	}
	mu.Lock()
	half := fmt.Sprintf("bytes=%d-", len(img)/2)
	if !slices.Contains(ranges, half) || !slices.Contains(ranges, "") {
		t.Fatalf("the copies asked for %q; want one going on from %s and one whole", ranges, half)
	}
	mu.Unlock()
	// The name and uploader stay the upload's.
	if got := imageByRef(hubs[2].c.Store().ReadTxn(), sum); got.Name != "golden" || got.UploadedBy != "it-central" || got.Size != int64(len(img)) {
		t.Fatalf("after the copies: %+v", got)
	}
	// Only the hub's nodes reach the copy: a site's or a browser's
	// request to the cluster port has no certificate of the hub's CA.
	anyone := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if res, err := anyone.Get("https://" + c.Nodes[0].RaftAddr() + imagePath + sum); err == nil {
		res.Body.Close()
		if res.StatusCode < 300 {
			t.Fatalf("fetched without the cluster's certificate: %s", res.Status)
		}
	}
}

// A copy cut short goes on from the hash state its last try kept, without
// reading the partial file again; a file of another length than that
// state's is read again, and one longer than the image emptied.
func TestPartialCopyState(t *testing.T) {
	h := &Hub{}
	data := make([]byte, 3*ChunkSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	raw := sha256.Sum256(data)
	im := HubImage{SHA256: hex.EncodeToString(raw[:]), Size: int64(len(data))}
	f, err := os.Create(filepath.Join(t.TempDir(), "fetch-"+im.SHA256))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	have, sum, err := h.resume(im, f)
	if err != nil || have != 0 {
		t.Fatalf("an empty partial: %d %v", have, err)
	}
	k := int64(ChunkSize + 4096)
	if _, err := (hashedFile{f, sum}).Write(data[:k]); err != nil {
		t.Fatal(err)
	}
	h.keepPartial(im.SHA256, f, &k, sum)
	// The file's bytes changed behind the kept state: resume trusts the
	// state (it does not read the file), which the end's hash check
	// would catch; here it shows the file was not read again.
	if _, err := f.WriteAt(make([]byte, k), 0); err != nil {
		t.Fatal(err)
	}
	have, sum, err = h.resume(im, f)
	if err != nil || have != k {
		t.Fatalf("resumed at %d (%v), want %d", have, err, k)
	}
	sum.Write(data[k:])
	if got := hex.EncodeToString(sum.Sum(nil)); got != im.SHA256 {
		t.Fatal("the kept state was not the hash of the first bytes")
	}
	// Another length than the kept state's: read again.
	if _, err := f.WriteAt(data[:k+1], 0); err != nil {
		t.Fatal(err)
	}
	if have, _, err = h.resume(im, f); err != nil || have != k+1 {
		t.Fatalf("a partial of another length resumed at %d (%v)", have, err)
	}
	// Longer than the image: emptied.
	if _, err := f.WriteAt(data[:1], int64(len(data))); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	delete(h.partials, im.SHA256)
	h.mu.Unlock()
	if have, _, err = h.resume(im, f); err != nil || have != 0 {
		t.Fatalf("a partial longer than the image resumed at %d (%v)", have, err)
	}
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Fatalf("kept %d bytes", fi.Size())
	}
}
