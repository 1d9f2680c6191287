package erasure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/reedsolomon"
)

// Layout is how an object is cut and coded.
type Layout struct {
	Data       int `json:"data"`        // k
	Parity     int `json:"parity"`      // m
	StripeSize int `json:"stripe_size"` // object bytes per stripe
}

// DefaultStripeSize is 1 MiB of object data per stripe.
const DefaultStripeSize = 1 << 20

// Validate rejects layouts the codec cannot use.
func (l Layout) Validate() error {
	switch {
	case l.Data < 1 || l.Parity < 0 || l.Data+l.Parity > 256:
		return fmt.Errorf("layout %d+%d: need 1-256 shards with at least one data shard", l.Data, l.Parity)
	case l.StripeSize < l.Data || l.StripeSize > 64<<20:
		return fmt.Errorf("layout stripe size %d out of range", l.StripeSize)
	}
	return nil
}

// Shards is k+m.
func (l Layout) Shards() int { return l.Data + l.Parity }

// BlockSize is the payload of one full stripe's block in each shard.
func (l Layout) BlockSize() int { return (l.StripeSize + l.Data - 1) / l.Data }

// String is "k+m".
func (l Layout) String() string { return fmt.Sprintf("%d+%d", l.Data, l.Parity) }

// ShardSize is the byte length of every shard of an object of size bytes.
func (l Layout) ShardSize(size int64) int64 {
	full := size / int64(l.StripeSize)
	n := headerSize + full*int64(checksumSize+l.BlockSize())
	if rest := size % int64(l.StripeSize); rest > 0 || size == 0 {
		n += checksumSize + int64(lastBlock(int(rest), l.Data))
	}
	return n
}

func lastBlock(rest, k int) int { return (rest + k - 1) / k }

const (
	headerSize   = 32
	checksumSize = 8
	magic        = "CRNSHRD1"
)

// header identifies a shard stream, so a shard is never decoded against the
// wrong layout or object size.
type header struct {
	Layout
	Index int
	Size  int64
}

func (h header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, magic)
	b[8], b[9] = byte(h.Data), byte(h.Parity)
	binary.BigEndian.PutUint16(b[10:], uint16(h.Index))
	binary.BigEndian.PutUint32(b[12:], uint32(h.StripeSize))
	binary.BigEndian.PutUint64(b[16:], uint64(h.Size))
	binary.BigEndian.PutUint64(b[24:], xxhash.Sum64(b[:24]))
	return b
}

func decodeHeader(b []byte) (header, error) {
	if len(b) < headerSize || string(b[:8]) != magic || binary.BigEndian.Uint64(b[24:]) != xxhash.Sum64(b[:24]) {
		return header{}, ErrCorrupt
	}
	return header{
		Layout: Layout{Data: int(b[8]), Parity: int(b[9]), StripeSize: int(binary.BigEndian.Uint32(b[12:]))},
		Index:  int(binary.BigEndian.Uint16(b[10:])),
		Size:   int64(binary.BigEndian.Uint64(b[16:])),
	}, nil
}

// ErrCorrupt marks a shard block whose checksum or header does not match.
var ErrCorrupt = errors.New("shard data corrupt")

// ErrTooFewShards means fewer than k good shards remain for a stripe: the
// data cannot be recovered, and no bytes are returned for it.
var ErrTooFewShards = errors.New("not enough intact shards to recover the data")

// Encoder cuts a stream into stripes and writes each stripe's blocks to the
// shard writers. A nil writer is a shard that is not written (a degraded
// write; the healer recreates it later). A writer that fails is skipped from
// then on; Failed reports it, and the caller decides whether enough shards
// are durable.
type Encoder struct {
	l      Layout
	rs     reedsolomon.Encoder // nil without parity
	w      []io.Writer
	size   int64
	total  int64
	buf    []byte // one stripe of input
	n      int
	shards [][]byte // per shard: checksum, then one block
	failed []error
}

// NewEncoder starts encoding an object of exactly size bytes.
func NewEncoder(l Layout, size int64, w []io.Writer) (*Encoder, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if len(w) != l.Shards() {
		return nil, fmt.Errorf("encoder: %d writers for %s", len(w), l)
	}
	// An object smaller than a stripe needs buffers of its own size only: a
	// 4 KiB PUT would otherwise allocate 2.5 MiB.
	stripe := int(min(int64(l.StripeSize), size))
	e := &Encoder{l: l, w: w, size: size, buf: make([]byte, stripe), failed: make([]error, len(w))}
	if l.Parity > 0 {
		rs, err := coder(l.Data, l.Parity)
		if err != nil {
			return nil, err
		}
		e.rs = rs
	}
	// Each shard's block sits right after room for its checksum, so the two
	// go to the shard writer in one Write: one system call, one TLS record
	// run, not an 8-byte write of their own.
	stride := checksumSize + lastBlock(stripe, l.Data)
	backing := make([]byte, stride*l.Shards())
	e.shards = make([][]byte, l.Shards())
	for i := range e.shards {
		e.shards[i] = backing[i*stride : (i+1)*stride]
	}
	for i := range w {
		e.write(i, header{Layout: l, Index: i, Size: size}.encode())
	}
	return e, nil
}

func (e *Encoder) write(i int, p []byte) {
	if e.w[i] == nil || e.failed[i] != nil {
		return
	}
	if _, err := e.w[i].Write(p); err != nil {
		e.failed[i] = err
	}
}

// Write buffers input and encodes every full stripe.
func (e *Encoder) Write(p []byte) (int, error) {
	if e.total+int64(len(p)) > e.size {
		return 0, fmt.Errorf("encoder: more than the declared %d bytes", e.size)
	}
	total := 0
	for len(p) > 0 {
		c := copy(e.buf[e.n:], p)
		e.n += c
		p = p[c:]
		total += c
		if e.n == len(e.buf) {
			if err := e.flush(); err != nil {
				return total, err
			}
		}
	}
	e.total += int64(total)
	return total, nil
}

func (e *Encoder) flush() error {
	k := e.l.Data
	blk := lastBlock(e.n, k)
	shards := make([][]byte, len(e.shards))
	for i := range shards {
		shards[i] = e.shards[i][checksumSize : checksumSize+blk]
	}
	for i := 0; i < k; i++ {
		lo, hi := min(i*blk, e.n), min((i+1)*blk, e.n)
		c := copy(shards[i], e.buf[lo:hi])
		clear(shards[i][c:])
	}
	if e.rs != nil && blk > 0 {
		if err := e.rs.Encode(shards); err != nil {
			return err
		}
	}
	for i := range e.w {
		binary.BigEndian.PutUint64(e.shards[i], xxhash.Sum64(shards[i]))
		e.write(i, e.shards[i][:checksumSize+blk])
	}
	e.n = 0
	return nil
}

// Close encodes the last, partial stripe, or the single empty block of an
// empty object. It fails if fewer than the declared bytes were written.
func (e *Encoder) Close() error {
	if e.total != e.size {
		return fmt.Errorf("encoder: %d bytes written, %d declared", e.total, e.size)
	}
	if e.n > 0 || e.size == 0 {
		return e.flush()
	}
	return nil
}

// Failed returns, per shard, the first write error (nil for healthy or skipped shards).
func (e *Encoder) Failed() []error { return e.failed }

// Decode writes bytes [off, off+n) of an object of size bytes to w, reading
// shard i from src[i] (nil when missing). Every block read is verified. It
// reads the k shards it can have most cheaply: those marked near (on this
// node: no network, no TLS) first, then data shards before parity, so with
// all data shards near and intact nothing is reconstructed; a missing or
// corrupt block is replaced by the next shard in that order and the stripe
// reconstructed. near may be nil (all equally far). bad lists the shards
// found missing or corrupt, for repair. If a stripe has fewer than k intact
// blocks, Decode returns ErrTooFewShards and writes nothing for that stripe:
// never wrong bytes.
//
// Each shard in use is read by its own goroutine a block ahead of the
// decoder, front to back, so the reads of all shards overlap each other and
// the write to w; memory stays at about two blocks per shard.
func Decode(w io.Writer, l Layout, size int64, src []io.ReaderAt, near []bool, off, n int64) (bad []int, err error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if len(src) != l.Shards() || (near != nil && len(near) != len(src)) {
		return nil, fmt.Errorf("decode: %d sources for %s", len(src), l)
	}
	order := make([]int, 0, len(src))
	for pass := range 2 {
		for i := range src {
			if (near != nil && near[i]) == (pass == 0) {
				order = append(order, i)
			}
		}
	}
	if off < 0 || n < 0 || off+n > size {
		return nil, fmt.Errorf("decode: range %d+%d outside object of %d bytes", off, n, size)
	}
	broken := make([]bool, len(src))
	mark := func(i int) {
		if !broken[i] {
			broken[i] = true
			bad = append(bad, i)
		}
	}
	for i, r := range src {
		if r == nil {
			mark(i)
		}
	}
	if n == 0 {
		return bad, nil
	}
	var rs reedsolomon.Encoder
	if l.Parity > 0 {
		if rs, err = coder(l.Data, l.Parity); err != nil {
			return bad, err
		}
	}
	stripe := int64(l.StripeSize)
	first, end := off/stripe, (off+n+stripe-1)/stripe
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(done)
		wg.Wait()
	}()
	feeds := make([]chan []byte, len(src))
	shards := make([][]byte, l.Shards())
	used := make([][]byte, 0, l.Shards())
	for s := first; s < end; s++ {
		stripeStart := s * stripe
		stripeLen := min(stripe, size-stripeStart)
		blk := lastBlock(int(stripeLen), l.Data)
		good := 0
		for i := range shards {
			shards[i] = nil
		}
		used = used[:0]
		for _, i := range order {
			if good == l.Data {
				break
			}
			if broken[i] {
				continue
			}
			if feeds[i] == nil {
				feeds[i] = feed(&wg, done, src[i], l, size, i, s, end)
			}
			raw := <-feeds[i]
			if raw == nil || len(raw) != checksumSize+blk || binary.BigEndian.Uint64(raw) != xxhash.Sum64(raw[checksumSize:]) {
				mark(i)
				continue
			}
			shards[i] = raw[checksumSize:]
			used = append(used, raw)
			good++
		}
		if good < l.Data {
			return bad, fmt.Errorf("decode stripe %d: %d of %d shards intact: %w", s, good, l.Data, ErrTooFewShards)
		}
		for i := 0; i < l.Data; i++ {
			if shards[i] == nil {
				if err := rs.ReconstructData(shards); err != nil {
					return bad, fmt.Errorf("decode stripe %d: %w", s, err)
				}
				break
			}
		}
		// Copy out the part of this stripe that lies in [off, off+n).
		lo := max(off, stripeStart) - stripeStart
		hi := min(off+n, stripeStart+stripeLen) - stripeStart
		for i := 0; i < l.Data && lo < hi; i++ {
			bs, be := int64(i*blk), int64((i+1)*blk)
			if be <= lo || bs >= hi {
				continue
			}
			part := shards[i][max(lo, bs)-bs : min(hi, be)-bs]
			if _, err := w.Write(part); err != nil {
				return bad, err
			}
		}
		for _, raw := range used {
			putBlock(raw)
		}
	}
	return bad, nil
}

// feed reads shard index's header and then its blocks of stripes [from, to)
// in order, sending each (checksum and data) on the returned channel, one
// block ahead of the reader. A bad header or a short read sends nil and ends
// the feed.
func feed(wg *sync.WaitGroup, done <-chan struct{}, r io.ReaderAt, l Layout, size int64, index int, from, to int64) chan []byte {
	ch := make(chan []byte, 1)
	send := func(raw []byte) bool {
		select {
		case ch <- raw:
			return raw != nil
		case <-done:
			putBlock(raw)
			return false
		}
	}
	wg.Go(func() {
		hb := make([]byte, headerSize)
		if got, _ := r.ReadAt(hb, 0); got < headerSize {
			send(nil)
			return
		}
		if h, err := decodeHeader(hb); err != nil || h.Layout != l || h.Index != index || h.Size != size {
			send(nil)
			return
		}
		stride := int64(checksumSize + l.BlockSize())
		for s := from; s < to; s++ {
			stripeLen := min(int64(l.StripeSize), size-s*int64(l.StripeSize))
			raw := getBlock(checksumSize + lastBlock(int(stripeLen), l.Data))
			// io.ReaderAt may report EOF with a full read; the byte count decides.
			if got, _ := r.ReadAt(raw, headerSize+s*stride); got < len(raw) {
				putBlock(raw)
				raw = nil
			}
			if !send(raw) {
				return
			}
		}
	})
	return ch
}

// coders holds one reedsolomon encoder per k+m. Making one builds matrices
// and tables, and one serves any number of goroutines: its scratch space is
// pooled and its cache of inverted matrices locked.
var coders sync.Map // [2]int{k, m} → reedsolomon.Encoder

func coder(k, m int) (reedsolomon.Encoder, error) {
	key := [2]int{k, m}
	if c, ok := coders.Load(key); ok {
		return c.(reedsolomon.Encoder), nil
	}
	c, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, err
	}
	got, _ := coders.LoadOrStore(key, c)
	return got.(reedsolomon.Encoder), nil
}

// Block buffers are recycled: a large GET would otherwise allocate its whole
// size in garbage.
var blockPool sync.Pool

func getBlock(n int) []byte {
	if b, ok := blockPool.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}

func putBlock(b []byte) {
	if b != nil {
		blockPool.Put(&b)
	}
}

// VerifyShard reads a whole shard and checks its header and every block's
// checksum; the scrubber uses it. ErrCorrupt means the shard must be rebuilt.
func VerifyShard(r io.ReaderAt, l Layout, size int64, index int) error {
	hb := make([]byte, headerSize)
	if got, _ := r.ReadAt(hb, 0); got < headerSize {
		return ErrCorrupt
	}
	h, err := decodeHeader(hb)
	if err != nil || h.Layout != l || h.Index != index || h.Size != size {
		return ErrCorrupt
	}
	block := l.BlockSize()
	buf := make([]byte, checksumSize+block)
	stride := int64(checksumSize + block)
	stripes := (size + int64(l.StripeSize) - 1) / int64(l.StripeSize)
	if size == 0 {
		stripes = 1
	}
	for s := int64(0); s < stripes; s++ {
		stripeLen := min(int64(l.StripeSize), size-s*int64(l.StripeSize))
		raw := buf[:checksumSize+lastBlock(int(stripeLen), l.Data)]
		if got, _ := r.ReadAt(raw, headerSize+s*stride); got < len(raw) {
			return ErrCorrupt
		}
		if binary.BigEndian.Uint64(raw) != xxhash.Sum64(raw[checksumSize:]) {
			return ErrCorrupt
		}
	}
	return nil
}

// Rebuild re-creates the shards at the indexes where dst is non-nil, from the
// shards in src (nil where missing), streaming one stripe at a time.
func Rebuild(l Layout, size int64, src []io.ReaderAt, dst []io.Writer) error {
	pr, pw := io.Pipe()
	go func() {
		_, err := Decode(pw, l, size, src, nil, 0, size)
		pw.CloseWithError(err)
	}()
	enc, err := NewEncoder(l, size, dst)
	if err != nil {
		pr.CloseWithError(err)
		return err
	}
	if _, err := io.Copy(enc, pr); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	for i, e := range enc.Failed() {
		if e != nil {
			return fmt.Errorf("rebuild shard %d: %w", i, e)
		}
	}
	return nil
}
