package nbd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"sync"
	"testing"
)

// memBackend is a plain memory disk for the fuzz targets.
type memBackend struct {
	mu   sync.Mutex
	data []byte
}

func (b *memBackend) Size() int64 { return int64(len(b.data)) }

func (b *memBackend) ReadAt(_ context.Context, p []byte, off int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(p, b.data[off:])
	return nil
}

func (b *memBackend) WriteAt(_ context.Context, p []byte, off int64, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	copy(b.data[off:], p)
	return nil
}

func (b *memBackend) Flush(context.Context) error { return nil }

func (b *memBackend) Trim(ctx context.Context, off, n int64) error {
	return b.WriteZeroes(ctx, off, n, false)
}

func (b *memBackend) WriteZeroes(_ context.Context, off, n int64, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.data[off : off+n])
	return nil
}

// BlockStatus reports the first half of any range as a hole.
func (b *memBackend) BlockStatus(_ context.Context, off, n int64) ([]Extent, error) {
	return []Extent{{Length: n / 2, Hole: true, Zero: true}, {Length: n - n/2}}, nil
}

// lockedBuffer collects replies written by concurrent requests.
type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func fuzzConfig() *Config {
	cfg := DefaultConfig()
	cfg.MaxPayload = 64 << 10
	cfg.Logger = slog.New(slog.DiscardHandler)
	return &cfg
}

// checkReplies walks a reply stream and fails on anything but whole
// simple replies or structured chunks.
func checkReplies(t *testing.T, out []byte, readLens map[uint64]int) {
	for len(out) > 0 {
		if len(out) < 16 {
			t.Fatalf("%d trailing bytes", len(out))
		}
		switch binary.BigEndian.Uint32(out) {
		case magicSimple:
			n := 0
			if binary.BigEndian.Uint32(out[4:]) == 0 {
				n = readLens[binary.BigEndian.Uint64(out[8:])]
			}
			if len(out) < 16+n {
				t.Fatalf("short reply")
			}
			out = out[16+n:]
		case magicStructure:
			if len(out) < 20 {
				t.Fatalf("short chunk header")
			}
			n := int(binary.BigEndian.Uint32(out[16:]))
			if len(out) < 20+n {
				t.Fatalf("short chunk")
			}
			out = out[20+n:]
		default:
			t.Fatalf("bad reply magic %x", out[:4])
		}
	}
}

// FuzzRequestDecoder feeds arbitrary bytes to the transmission phase of a
// writable 64 KiB export: it must answer or hang up, never panic or
// touch memory outside the export, and every reply must be whole.
func FuzzRequestDecoder(f *testing.F) {
	add := func(reqs ...[]byte) { f.Add(bytes.Join(reqs, nil)) }
	add(request{typ: cmdRead, length: 512}.encode())
	add(request{typ: cmdWrite, flags: cmdFlagFUA, offset: 4096, length: 4}.encode(), []byte("abcd"), request{typ: cmdFlush, cookie: 1}.encode())
	add(request{typ: cmdWriteZeroes, flags: cmdFlagNoHole, length: 1 << 16}.encode(), request{typ: cmdTrim, offset: 1 << 15, length: 1 << 15}.encode())
	add(request{typ: cmdRead, offset: ^uint64(0), length: 10}.encode(), request{typ: cmdDisc}.encode())
	add(request{typ: cmdWrite, length: 1 << 30}.encode())
	add([]byte{0x25, 0x60, 0x95, 0x13, 0, 0})
	add(request{typ: cmdBlockStatus, flags: cmdFlagReqOne, length: 1 << 16}.encode(), request{typ: cmdBlockStatus, offset: 7, length: 9}.encode(), []byte{0})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) >= requestSize {
			if req, err := decodeRequest(in[:requestSize]); err == nil && !bytes.Equal(req.encode(), in[:requestSize]) {
				t.Fatalf("decode/encode round trip differs")
			}
		}
		be := &memBackend{data: make([]byte, 64<<10)}
		exp := &Export{Name: "fuzz", Backend: be}
		var out lockedBuffer
		// Inputs of odd length run with structured replies and block status.
		odd := len(in)%2 == 1
		s := newSession(negotiated{export: exp, structured: odd, blockStatus: odd}, fuzzConfig(), bytes.NewReader(in), &out, slog.New(slog.DiscardHandler))
		s.run(context.Background(), func() bool { return false })
		if len(be.data) != 64<<10 {
			t.Fatal("export resized")
		}
		// The simple reply to a successful read carries its data: decoding
		// the stream needs each read's length by cookie, unambiguous only
		// when no cookie repeats.
		if lens, ok := readLengths(in); ok {
			checkReplies(t, out.Bytes(), lens)
		}
	})
}

// readLengths walks the requests of a stream as the server decodes them
// and returns the length of each read by cookie; ok is false if a
// cookie repeats.
func readLengths(in []byte) (lens map[uint64]int, ok bool) {
	lens = map[uint64]int{}
	seen := map[uint64]bool{}
	for b := in; len(b) >= requestSize; b = b[requestSize:] {
		req, err := decodeRequest(b[:requestSize])
		if err != nil {
			break
		}
		if seen[req.cookie] {
			return nil, false
		}
		seen[req.cookie] = true
		if req.typ == cmdRead {
			lens[req.cookie] = int(req.length)
		}
		if req.typ == cmdWrite {
			if uint64(len(b)) < requestSize+uint64(req.length) {
				break
			}
			b = b[req.length:]
		}
	}
	return lens, true
}

// FuzzOptions feeds arbitrary bytes to the handshake (and, if it picks an
// export, to the transmission phase after it): option length lies,
// truncated options and unknown options must end in a refusal or a
// close, never a panic.
func FuzzOptions(f *testing.F) {
	opt := func(o uint32, data []byte) []byte { return optionBytes(magicIHaveOpt, o, uint32(len(data)), data) }
	goData := func(name string, infos ...uint16) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
		b = binary.BigEndian.AppendUint16(append(b, name...), uint16(len(infos)))
		for _, i := range infos {
			b = binary.BigEndian.AppendUint16(b, i)
		}
		return b
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	f.Add(join(fixedFlags, opt(optStructuredReply, nil), opt(optGo, goData("disk", infoName, infoBlockSize)), request{typ: cmdRead, length: 8}.encode()))
	f.Add(join(fixedFlags, opt(optList, nil), opt(optInfo, goData("")), opt(optExportName, []byte("disk"))))
	f.Add(join(fixedFlags, opt(optStartTLS, nil), opt(42, []byte("x")), opt(optAbort, nil)))
	f.Add(join(fixedFlags, optionBytes(magicIHaveOpt, optGo, 9, []byte{0, 0, 0, 200, 'd'})))
	f.Add(join(fixedFlags, opt(optStructuredReply, nil), opt(optListMetaContext, metaQuery("disk")),
		opt(optSetMetaContext, metaQuery("disk", "base:allocation")), opt(optGo, goData("disk")),
		request{typ: cmdBlockStatus, length: 4096}.encode()))
	f.Fuzz(func(t *testing.T, in []byte) {
		be := &memBackend{data: make([]byte, 4096)}
		cfg := fuzzConfig()
		cfg.Lookup = func(_ context.Context, name string) (*Export, error) {
			if name == "disk" || name == "" {
				return &Export{Name: name, Backend: be, ReadOnly: len(in)%2 == 0}, nil
			}
			return nil, ErrNoExport
		}
		cfg.List = func(context.Context) []string { return []string{"disk"} }
		var out lockedBuffer
		h := &handshake{cfg: cfg, r: bufio.NewReader(bytes.NewReader(in)), w: &out}
		neg, err := h.run(context.Background())
		if err != nil {
			return
		}
		if neg.export == nil {
			t.Fatal("handshake ended without an export or an error")
		}
		s := newSession(neg, cfg, h.r, io.Discard, cfg.Logger)
		s.run(context.Background(), func() bool { return false })
	})
}
