package volume

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
)

// FuzzReplicaRequest feeds arbitrary bytes to the request decoder and to a
// whole server session: nothing panics, what decodes re-encodes to the same
// bytes within the bounds, and the session ends.
func FuzzReplicaRequest(f *testing.F) {
	f.Add(rawRequest(request{op: opFence, epoch: 3}))
	f.Add(append(rawRequest(request{op: opWrite, flags: flagFUA, epoch: 1, gen: 2, length: BlockSize}), make([]byte, BlockSize)...))
	f.Add(rawRequest(request{op: opRead, offset: BlockSize, length: 2 * BlockSize}))
	f.Add(rawRequest(request{op: opZero, flags: flagPunch, length: 1 << 40}))
	f.Add(append(rawRequest(request{op: opExtents}), rawRequest(request{op: opReadExtent, offset: 1})...))
	f.Add(append(rawRequest(request{op: opWriteExtent, length: 8}), make([]byte, 8)...))
	f.Add(rawRequest(request{op: opResize, offset: 1 << 20}))
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= reqHeaderSize {
			req, err := decodeRequest(data[:reqHeaderSize])
			if err == nil {
				var b [reqHeaderSize]byte
				req.encode(&b)
				if !bytes.Equal(b[:], data[:reqHeaderSize]) {
					t.Fatalf("decode/encode changed the header: %x -> %x", data[:reqHeaderSize], b)
				}
				if req.payloadLen() > maxPayload || req.offset > 1<<63-1 {
					t.Fatalf("decoded out of bounds: %+v", req)
				}
				if (req.op == opRead && req.length > maxPayload) || (req.op == opWriteExtent && req.length > ExtentSize) {
					t.Fatalf("decoded out of bounds: %+v", req)
				}
			}
		}
		mem := newMemTarget(2*ExtentSize + BlockSize)
		_ = serveReplica(context.Background(), mem, bytes.NewReader(data), io.Discard, nil, log)
	})
}
