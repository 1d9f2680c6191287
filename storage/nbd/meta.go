package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
)

// Block status: the base:allocation metadata context (proto.md,
// "Metadata querying"), offered for exports whose Backend implements
// BlockStatuser.

const (
	optListMetaContext = 9
	optSetMetaContext  = 10
	repMetaContext     = 4

	cmdBlockStatus     = 7
	cmdFlagReqOne      = 1 << 3
	replyTypeBlockStat = 5

	stateHole = 1 << 0
	stateZero = 1 << 1

	contextAllocation   = "base:allocation"
	contextAllocationID = 1
	// maxExtents bounds the descriptors of one reply (proto.md: at most 2^20).
	maxExtents = 1024
)

// Extent describes a range of an export.
type Extent struct {
	Length int64
	// Hole: not allocated in the backing store (a write may need space).
	Hole bool
	// Zero: reads as zeroes.
	Zero bool
}

// BlockStatuser is implemented by backends that know which ranges are
// allocated or read as zeroes, so that clients can skip them.
type BlockStatuser interface {
	// BlockStatus describes consecutive extents starting at off. It may
	// cover less than length (at least one byte) or more; the server
	// trims the answer to the request.
	BlockStatus(ctx context.Context, off, length int64) ([]Extent, error)
}

// metaContext answers NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT; the only context is base:allocation.
func (h *handshake) metaContext(ctx context.Context, opt uint32, data []byte) error {
	if opt == optSetMetaContext {
		// Every SET replaces what an earlier one selected, even if it fails.
		h.metaSelected, h.metaExport = false, ""
	}
	if !h.structured {
		return h.reply(opt, repErrInvalid, []byte("structured replies must be negotiated first"))
	}
	name, queries, err := parseMetaQuery(data)
	if err != nil {
		return h.reply(opt, repErrInvalid, []byte(err.Error()))
	}
	exp, err := h.lookup(ctx, name)
	if err != nil {
		return h.reply(opt, repErrUnknown, []byte("no such export"))
	}
	_, offered := exp.Backend.(BlockStatuser)
	match := false
	for _, q := range queries {
		if q == contextAllocation || (opt == optListMetaContext && q == "base:") {
			match = true
		}
	}
	if opt == optListMetaContext && len(queries) == 0 {
		match = true
	}
	if offered && match {
		if opt == optSetMetaContext {
			h.metaSelected, h.metaExport = true, name
		}
		b := binary.BigEndian.AppendUint32(nil, contextAllocationID)
		if err := h.reply(opt, repMetaContext, append(b, contextAllocation...)); err != nil {
			return err
		}
	}
	return h.reply(opt, repAck, nil)
}

// parseMetaQuery splits the data of a LIST or SET option: an export name
// and queries, each length-prefixed; any length that disagrees with the
// option's own is an error.
func parseMetaQuery(data []byte) (string, []string, error) {
	str := func() (string, error) {
		if len(data) < 4 {
			return "", errors.New("truncated string length")
		}
		n := binary.BigEndian.Uint32(data)
		if uint64(n) > uint64(len(data)-4) || n > maxNameLen {
			return "", errors.New("string longer than the option")
		}
		s := string(data[4 : 4+n])
		data = data[4+n:]
		return s, nil
	}
	name, err := str()
	if err != nil {
		return "", nil, err
	}
	if len(data) < 4 {
		return "", nil, errors.New("truncated query count")
	}
	count := binary.BigEndian.Uint32(data)
	data = data[4:]
	if uint64(count)*4 > uint64(len(data)) {
		return "", nil, fmt.Errorf("%d queries in %d bytes", count, len(data))
	}
	queries := make([]string, 0, count)
	for range count {
		q, err := str()
		if err != nil {
			return "", nil, err
		}
		queries = append(queries, q)
	}
	if len(data) != 0 {
		return "", nil, errors.New("trailing bytes after the queries")
	}
	return name, queries, nil
}

// blockStatus answers NBD_CMD_BLOCK_STATUS with one chunk for
// base:allocation, trimmed to the request (to one extent with REQ_ONE).
func (s *session) blockStatus(ctx context.Context, req request) error {
	off, n := int64(req.offset), int64(req.length)
	extents, err := s.bs.BlockStatus(ctx, off, n)
	if err != nil {
		return err
	}
	b := chunkHeader(replyFlagDone, replyTypeBlockStat, req.cookie, 0)
	b = binary.BigEndian.AppendUint32(b, contextAllocationID)
	covered := int64(0)
	for _, e := range extents {
		if covered >= n || (len(b)-24)/8 >= maxExtents {
			break
		}
		if e.Length <= 0 {
			continue
		}
		l := min(e.Length, n-covered)
		var flags uint32
		if e.Hole {
			flags |= stateHole
		}
		if e.Zero {
			flags |= stateZero
		}
		b = binary.BigEndian.AppendUint32(b, uint32(l))
		b = binary.BigEndian.AppendUint32(b, flags)
		covered += l
		if req.flags&cmdFlagReqOne != 0 {
			break
		}
	}
	if covered == 0 {
		// Nothing useful came back: say "allocated, contents unknown",
		// which is always true enough.
		b = binary.BigEndian.AppendUint32(b, uint32(n))
		b = binary.BigEndian.AppendUint32(b, 0)
	}
	binary.BigEndian.PutUint32(b[16:20], uint32(len(b)-20))
	s.send(b)
	return nil
}
