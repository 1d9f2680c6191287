package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cairnhq/cairn/storage/disk"
	"github.com/cairnhq/cairn/storage/erasure"
)

// Shards stream between nodes over the cluster's mutual-TLS port:
//
//	PUT    /storage/v1/shards/{disk}/{key}   body: the shard; 204 once durable
//	GET    /storage/v1/shards/{disk}/{key}   Range requests for ranged reads
//	DELETE /storage/v1/shards/{disk}/{key}
//	POST   /storage/v1/shards/{disk}/{key}/verify?data=4&parity=2&stripe=1048576&size=N&index=I
//	       204 intact, 404 missing, 422 corrupt (and deleted), 503 disk not open
//
// A shard on this node's own disk is read and written directly.

const shardPrefix = "/storage/v1/shards/"

// Peers is what shard transfer needs from the consensus node.
type Peers interface {
	Name() string
	RPCClient() *http.Client
	PeerAddr(name string) (string, bool)
}

// Shards moves shard bytes to and from any node's disks.
type Shards struct {
	peers Peers
	disks *DiskAgent
}

// NewShards returns the shard transfer of this node.
func NewShards(peers Peers, disks *DiskAgent) *Shards { return &Shards{peers: peers, disks: disks} }

// RPCPrefix is where to mount Handler on the cluster port.
const RPCPrefix = shardPrefix

const shardRoute = shardPrefix + "{disk}/{key}"

// Handler serves this node's disks to peers.
func (s *Shards) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT "+shardRoute, s.servePut)
	mux.HandleFunc("GET "+shardRoute, s.serveGet)
	mux.HandleFunc("DELETE "+shardRoute, s.serveDelete)
	mux.HandleFunc("POST "+shardRoute+"/verify", s.serveVerify)
	return mux
}

func (s *Shards) local(w http.ResponseWriter, r *http.Request) *disk.Store {
	st := s.disks.Disk(r.PathValue("disk"))
	if st == nil {
		http.Error(w, "no such disk on this node", http.StatusNotFound)
	}
	return st
}

// servePut commits the shard only if the whole body arrived: a client that
// dies mid-stream leaves nothing behind.
func (s *Shards) servePut(w http.ResponseWriter, r *http.Request) {
	st := s.local(w, r)
	if st == nil {
		return
	}
	if r.ContentLength > 0 {
		if err := s.disks.reserve.Check(st.Root(), uint64(r.ContentLength)); err != nil {
			http.Error(w, "shard not stored: "+err.Error(), statusForWriteError(err))
			return
		}
	}
	sw, err := st.CreateSized(r.PathValue("key"), r.ContentLength)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The disk writer gathers the body's TLS reads (16 KiB each) into its
	// own chunk buffer (io.Copy reads into it), and writes whole chunks.
	n, err := io.Copy(sw, r.Body)
	if err == nil && r.ContentLength >= 0 && n != r.ContentLength {
		err = fmt.Errorf("got %d of %d bytes", n, r.ContentLength)
	}
	if err != nil {
		sw.Abort()
		http.Error(w, "shard not stored: "+err.Error(), statusForWriteError(err))
		return
	}
	if err := sw.Commit(); err != nil {
		http.Error(w, "shard not stored: "+err.Error(), statusForWriteError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Every shard of every download passes through one of these buffers (a
// decode block each), so they are pooled.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func statusForWriteError(err error) int {
	if isNoSpace(err) {
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

func (s *Shards) serveGet(w http.ResponseWriter, r *http.Request) {
	st := s.local(w, r)
	if st == nil {
		return
	}
	f, err := st.Open(r.PathValue("key"))
	if errors.Is(err, disk.ErrNotFound) {
		http.Error(w, "no such shard", http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Peers ask for a whole shard or for "bytes=N-" (remoteReader). The copy
	// goes in decode-block-sized reads: net/http's own copy reads 32 KiB at a
	// time, and on these machines the system calls are what a GET costs.
	off, size := int64(0), info.Size()
	if rg := r.Header.Get("Range"); rg != "" {
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
		if err != nil || !strings.HasPrefix(rg, "bytes=") || !strings.HasSuffix(rg, "-") || n < 0 {
			http.Error(w, "only bytes=N- ranges are served", http.StatusBadRequest)
			return
		}
		if n >= size {
			w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			http.Error(w, "range past the end of the shard", http.StatusRequestedRangeNotSatisfiable)
			return
		}
		off = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, size-1, size))
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size-off, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	if off > 0 || r.Header.Get("Range") != "" {
		w.WriteHeader(http.StatusPartialContent)
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	_, _ = io.CopyBuffer(struct{ io.Writer }{w}, io.NewSectionReader(f, off, size-off), *bp)
}

func (s *Shards) serveDelete(w http.ResponseWriter, r *http.Request) {
	st := s.local(w, r)
	if st == nil {
		return
	}
	if err := st.Delete(r.PathValue("key")); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Shards) serveVerify(w http.ResponseWriter, r *http.Request) {
	st := s.disks.Disk(r.PathValue("disk"))
	if st == nil { // not "missing": a disk still opening would lose every shard
		http.Error(w, "disk not open on this node", http.StatusServiceUnavailable)
		return
	}
	q := r.URL.Query()
	var l erasure.Layout
	var size int64
	var index int
	_, err := fmt.Sscanf(q.Get("data")+" "+q.Get("parity")+" "+q.Get("stripe")+" "+q.Get("size")+" "+q.Get("index"),
		"%d %d %d %d %d", &l.Data, &l.Parity, &l.StripeSize, &size, &index)
	if err == nil {
		err = l.Validate()
	}
	if err != nil || size < 0 || index < 0 || index >= l.Shards() {
		http.Error(w, "bad shard description", http.StatusBadRequest)
		return
	}
	switch err := verifyStored(st, r.PathValue("key"), l, size, index); {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, disk.ErrNotFound):
		http.Error(w, "no such shard", http.StatusNotFound)
	case errors.Is(err, erasure.ErrCorrupt):
		http.Error(w, "shard corrupt; deleted", http.StatusUnprocessableEntity)
	default:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

// verifyStored reads shard key of disk st whole and checks its header and
// every block. A corrupt shard is deleted: a bad copy must never be read
// again, and the caller marks it missing so that it is rebuilt.
func verifyStored(st *disk.Store, key string, l erasure.Layout, size int64, index int) error {
	f, err := st.Open(key)
	if errors.Is(err, disk.ErrNotFound) {
		// Missing from a disk that is no longer there (unmounted under
		// the node) is no verdict.
		if ierr := st.CheckIdentity(); ierr != nil {
			return fmt.Errorf("disk not verifiable: %w", ierr)
		}
	}
	if err != nil {
		return err
	}
	err = erasure.VerifyShard(f, l, size, index)
	f.Close()
	if errors.Is(err, erasure.ErrCorrupt) {
		_ = st.Delete(key)
	}
	return err
}

// Verify checks shard index of an object of size bytes in layout l, stored
// as key on disk d, where it lies: only the verdict crosses the network. It
// returns nil if the shard is intact, ErrShardNotFound if it is missing,
// erasure.ErrCorrupt if it failed its checks (it is then deleted), and any
// other error if the disk's node could not tell.
func (s *Shards) Verify(ctx context.Context, d Disk, key string, l erasure.Layout, size int64, index int) error {
	if d.Node == s.peers.Name() {
		st := s.disks.Disk(d.ID)
		if st == nil {
			return fmt.Errorf("disk %s is not open on this node", d.ID)
		}
		return verifyStored(st, key, l, size, index)
	}
	q := url.Values{}
	for k, v := range map[string]int64{"data": int64(l.Data), "parity": int64(l.Parity), "stripe": int64(l.StripeSize), "size": size, "index": int64(index)} {
		q.Set(k, strconv.FormatInt(v, 10))
	}
	status, err := s.call(ctx, http.MethodPost, d, key, "/verify?"+q.Encode())
	if err != nil {
		return err
	}
	switch status {
	case http.StatusNoContent:
		return nil
	case http.StatusNotFound:
		return ErrShardNotFound
	case http.StatusUnprocessableEntity:
		return erasure.ErrCorrupt
	default:
		return fmt.Errorf("verify shard on %s: %s", d.Node, http.StatusText(status))
	}
}

// ShardWriter is a shard being written to some node's disk.
type ShardWriter interface {
	io.Writer
	Commit() error // durable (fsynced) on that disk when it returns nil
	Abort()
}

// Create starts writing a shard of size bytes to disk d, on this node or a
// peer. Fewer bytes than size fail the Commit.
func (s *Shards) Create(ctx context.Context, d Disk, key string, size int64) (ShardWriter, error) {
	if d.Node == s.peers.Name() {
		st := s.disks.Disk(d.ID)
		if st == nil {
			return nil, fmt.Errorf("disk %s is not open on this node", d.ID)
		}
		if err := s.disks.reserve.Check(st.Root(), uint64(max(size, 0))); err != nil {
			return nil, fmt.Errorf("store shard on %s: %w", d.ID, err)
		}
		w, err := st.CreateSized(key, size)
		if err != nil {
			return nil, err
		}
		return &sizedWriter{ShardWriter: w, want: size}, nil
	}
	u, c, err := s.url(d, key)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, pr)
	if err != nil {
		return nil, err
	}
	// A body of known length goes onto the connection through io.Copy in
	// 256 KiB writes (tlsbatch); a chunked one in 32 KiB chunks, each two
	// system calls. The peer also checks the length before it commits.
	req.ContentLength = size
	rw := &remoteWriter{pw: pw, done: make(chan error, 1)}
	go func() {
		res, err := c.Do(req)
		if err == nil {
			msg, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
			res.Body.Close()
			switch res.StatusCode {
			case http.StatusNoContent:
			case http.StatusInsufficientStorage: // the peer's disk is full: ENOSPC, as for a local one
				err = fmt.Errorf("store shard on %s: %s: %w", d.Node, bytes.TrimSpace(msg), syscall.ENOSPC)
			default:
				err = fmt.Errorf("store shard on %s: %s: %s", d.Node, res.Status, msg)
			}
		}
		pr.CloseWithError(err) // unblock a writer if the request died early
		rw.done <- err
	}()
	return rw, nil
}

// sizedWriter commits a local shard only if exactly the promised bytes were
// written, as the peer does for a remote one (Content-Length).
type sizedWriter struct {
	ShardWriter
	want, n int64
}

func (w *sizedWriter) Write(p []byte) (int, error) {
	n, err := w.ShardWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *sizedWriter) Commit() error {
	if w.n != w.want {
		w.Abort()
		return fmt.Errorf("shard not stored: %d of %d bytes written", w.n, w.want)
	}
	return w.ShardWriter.Commit()
}

type remoteWriter struct {
	pw   *io.PipeWriter
	done chan error
	once sync.Once
	err  error
}

// Write sends p to the peer. A body the HTTP client closed (it had the
// peer's answer before the whole body, a refusal) gives that answer.
func (w *remoteWriter) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	if errors.Is(err, io.ErrClosedPipe) {
		if rerr := w.result(); rerr != nil {
			return n, rerr
		}
	}
	return n, err
}

// result is the request's outcome, once it has one.
func (w *remoteWriter) result() error {
	w.once.Do(func() { w.err = <-w.done })
	return w.err
}

func (w *remoteWriter) Commit() error {
	w.pw.Close() // the end of the body: the peer commits
	return w.result()
}

// errAborted ends the request mid-body, so the peer discards the shard.
var errAborted = errors.New("shard write aborted")

func (w *remoteWriter) Abort() {
	w.pw.CloseWithError(errAborted)
	w.result()
}

// ShardReader reads a shard on some node's disk.
type ShardReader interface {
	io.ReaderAt
	io.Closer
}

// ErrShardNotFound means the disk does not have the shard.
var ErrShardNotFound = disk.ErrNotFound

// Open returns a reader of a shard on disk d, on this node or a peer.
func (s *Shards) Open(ctx context.Context, d Disk, key string) (ShardReader, error) {
	if d.Node == s.peers.Name() {
		st := s.disks.Disk(d.ID)
		if st == nil {
			return nil, fmt.Errorf("disk %s is not open on this node", d.ID)
		}
		f, err := st.Open(key)
		if err != nil {
			return nil, err // not a ShardReader holding a nil *os.File
		}
		return f, nil
	}
	u, c, err := s.url(d, key)
	if err != nil {
		return nil, err
	}
	return &remoteReader{ctx: ctx, url: u, c: c}, nil
}

// remoteReader reads a shard on a peer. A decode reads each shard front to
// back, block by block, so a read that starts where the previous one ended
// continues one streaming Range request; a read anywhere else starts a new
// one.
type remoteReader struct {
	ctx  context.Context
	url  string
	c    *http.Client
	body io.ReadCloser // nil until the first read, and after an error
	pos  int64         // offset of the next byte body yields
}

func (r *remoteReader) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.body == nil || off != r.pos {
		if err := r.open(off); err != nil {
			return 0, err
		}
	}
	n, err := io.ReadFull(r.body, p)
	r.pos += int64(n)
	if err != nil {
		r.closeBody() // the next read starts over
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
	}
	return n, err
}

// open starts streaming the shard from off to its end.
func (r *remoteReader) open(off int64) error {
	r.closeBody()
	req, err := http.NewRequestWithContext(r.ctx, http.MethodGet, r.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	res, err := r.c.Do(req)
	if err != nil {
		return err
	}
	switch res.StatusCode {
	case http.StatusPartialContent:
		r.body, r.pos = res.Body, off
		return nil
	case http.StatusNotFound:
		err = ErrShardNotFound
	case http.StatusRequestedRangeNotSatisfiable:
		err = io.EOF
	default:
		err = fmt.Errorf("read shard: %s", res.Status)
	}
	res.Body.Close()
	return err
}

// closeBody ends the current stream. A stream read to (nearly) its end is
// drained so that its connection can be reused.
func (r *remoteReader) closeBody() {
	if r.body == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, r.body, 64<<10)
	r.body.Close()
	r.body = nil
}

func (r *remoteReader) Close() error {
	r.closeBody()
	return nil
}

// Delete removes a shard from disk d, on this node or a peer.
func (s *Shards) Delete(ctx context.Context, d Disk, key string) error {
	if d.Node == s.peers.Name() {
		st := s.disks.Disk(d.ID)
		if st == nil {
			return fmt.Errorf("disk %s is not open on this node", d.ID)
		}
		return st.Delete(key)
	}
	status, err := s.call(ctx, http.MethodDelete, d, key, "")
	if err != nil {
		return err
	}
	if status != http.StatusNoContent {
		return fmt.Errorf("delete shard on %s: %s", d.Node, http.StatusText(status))
	}
	return nil
}

// call sends a request without a body about shard key on d's node (suffix
// follows the shard's path) and returns the response's status.
func (s *Shards) call(ctx context.Context, method string, d Disk, key, suffix string) (int, error) {
	u, c, err := s.url(d, key)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u+suffix, nil)
	if err != nil {
		return 0, err
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 4096)) // for the connection's reuse
	res.Body.Close()
	return res.StatusCode, nil
}

func (s *Shards) url(d Disk, key string) (string, *http.Client, error) {
	addr, ok := s.peers.PeerAddr(d.Node)
	if !ok {
		return "", nil, fmt.Errorf("node %s is not reachable", d.Node)
	}
	c := s.peers.RPCClient()
	if c == nil {
		return "", nil, errors.New("this node has no cluster credentials yet")
	}
	return "https://" + addr + shardPrefix + url.PathEscape(d.ID) + "/" + url.PathEscape(key), c, nil
}
