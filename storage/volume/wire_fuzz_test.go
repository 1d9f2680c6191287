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
	f.Add(rawRequest(wireRequest{op: opFence, epoch: 3}))
	f.Add(append(rawRequest(wireRequest{op: opWrite, flags: reqFUA, epoch: 1, gen: 2, length: BlockSize}), make([]byte, BlockSize)...))
	f.Add(rawRequest(wireRequest{op: opRead, offset: BlockSize, length: 2 * BlockSize}))
	f.Add(rawRequest(wireRequest{op: opZero, flags: reqPunch, length: 1 << 40}))
	f.Add(append(rawRequest(wireRequest{op: opExtents}), rawRequest(wireRequest{op: opReadExtent, offset: 1})...))
	f.Add(append(rawRequest(wireRequest{op: opWriteExtent, length: 8}), make([]byte, 8)...))
	f.Add(rawRequest(wireRequest{op: opResize, offset: 1 << 20}))
	f.Add(rawRequest(wireRequest{op: opReadLayer, offset: BlockSize, length: 3 * BlockSize}))
	f.Add(rawRequest(wireRequest{op: opReadExtent, flags: reqPresence, offset: 1}))
	f.Add(append(rawRequest(wireRequest{op: opWriteExtent, flags: reqPresence, offset: 2, length: wireExtentPresence + BlockSize}), make([]byte, wireExtentPresence+BlockSize)...))
	f.Add(append(rawRequest(wireRequest{op: opWriteExtent, flags: reqPresence, length: 8}), make([]byte, 8)...))
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
				if req.payloadLen() > wireMaxPayload || req.offset > 1<<63-1 {
					t.Fatalf("decoded out of bounds: %+v", req)
				}
				if ((req.op == opRead || req.op == opReadLayer) && req.length > wireMaxPayload) ||
					(req.op == opWriteExtent && req.length > ExtentSize+wireExtentPresence) ||
					(req.op == opWriteExtent && req.flags&reqPresence == 0 && req.length > ExtentSize) {
					t.Fatalf("decoded out of bounds: %+v", req)
				}
			}
		}
		mem := newMemTarget(2*ExtentSize + BlockSize)
		_ = serveReplica(context.Background(), mem, bytes.NewReader(data), io.Discard, nil, log)
	})
}
