package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Small objects live in the replicated state itself.
//
// An erasure-coded 4 KiB object is six shard files on three nodes, each
// created, fsynced, renamed and its directory fsynced, and then a Raft
// commit: the files cost more than the commit, which a small PUT cannot
// avoid anyway. So an object of at most InlineMax bytes rides in its own
// PutObject command: one commit, fsynced in the Raft log of a majority
// before it is acknowledged, kept by every node (three copies, where 4+2
// shards would have taken a sixth of the object six times over a 4 KiB
// filesystem block each), and read from memory. MinIO keeps objects under
// 128 KiB inline with their metadata for the same reason.
//
// What it costs is memory on every node and bytes in every snapshot, so
// the pool holds at most its inline budget (DefaultInlineBudget unless a
// cluster admin sets another); past it the state
// machine refuses inline writes and small objects are erasure-coded like
// the rest. A read checks an inline object's bytes against its MD5 (its
// ETag) before sending any.

// Inline limits: per object, and for the whole pool unless a cluster
// admin sets another budget.
const (
	InlineMax           = 32 << 10
	DefaultInlineBudget = 128 << 20
)

// MsgSetInlineBudget sets the pool's inline budget.
const MsgSetInlineBudget consensus.MessageType = 153

// ReasonInlineFull refuses an inline write when the pool's budget is spent;
// the writer stores the object as shards instead.
const ReasonInlineFull = "inline_full"

// poolStats is the pool's replicated bookkeeping: one row, ID "pool".
type poolStats struct {
	ID          string `json:"id"`
	InlineBytes int64  `json:"inline_bytes"`
	// Budget is the most inline bytes the pool keeps; 0 means
	// DefaultInlineBudget.
	Budget int64 `json:"inline_budget,omitempty"`
}

func (p *poolStats) budget() int64 {
	if p.Budget == 0 {
		return DefaultInlineBudget
	}
	return p.Budget
}

type setInlineBudgetCmd struct {
	Bytes int64 `json:"bytes"`
}

const tPool = "pool"

func registerInline(reg *consensus.Registry) {
	consensus.RegisterTable[poolStats](reg, &memdb.TableSchema{Name: tPool, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.Handle(reg, MsgSetInlineBudget, "SetInlineBudget", func(tx *consensus.Tx, c *setInlineBudgetCmd) (any, error) {
		row := pool(tx.Txn)
		row.Budget = c.Bytes
		return &row, tx.Insert(tPool, &row)
	})
}

// pool returns the pool's bookkeeping row.
func pool(txn *memdb.Txn) poolStats {
	if cur := consensus.First[poolStats](txn, tPool, "id", "pool"); cur != nil {
		return *cur
	}
	return poolStats{ID: "pool"}
}

// SetInlineBudget sets how many bytes of small objects the pool keeps
// inline (cluster admins). A budget below what is inline now keeps what is
// there and stores new small objects as shards.
func (o *Objects) SetInlineBudget(ctx context.Context, p *identity.Principal, bytes int64) error {
	const action = "storage.inline-budget"
	if !p.IsClusterAdmin() {
		return o.id.Deny(ctx, p, action, "pool", "", consensus.Errorf(consensus.CodeForbidden, "only cluster admins set the inline budget"))
	}
	if bytes < 1 || bytes > 4<<30 {
		return o.id.Deny(ctx, p, action, "pool", "", consensus.Errorf(consensus.CodeInvalid, "the inline budget is 1 byte to 4 GiB"))
	}
	return o.id.Mutate(ctx, p, action, "pool", "", MsgSetInlineBudget, setInlineBudgetCmd{Bytes: bytes}, nil)
}

// InlineUsage is the pool's inline bytes and budget.
type InlineUsage struct {
	Bytes  int64 `json:"inline_bytes"`
	Budget int64 `json:"inline_budget"`
}

// Inline says how much of its inline budget the pool uses (cluster
// admins).
func (o *Objects) Inline(p *identity.Principal) (*InlineUsage, error) {
	if !p.IsClusterAdmin() {
		return nil, consensus.Errorf(consensus.CodeForbidden, "only cluster admins see the inline budget")
	}
	row := pool(o.c.Store().ReadTxn())
	return &InlineUsage{Bytes: row.InlineBytes, Budget: row.budget()}, nil
}

// IsInline reports whether an object's bytes are in its record.
func (obj *Object) IsInline() bool { return obj.DataID == "" && len(obj.Parts) == 0 && !obj.Delete }

// chargeInline moves the pool's inline bytes by delta, refusing growth
// past the budget.
func chargeInline(tx *consensus.Tx, delta int64) error {
	if delta == 0 {
		return nil
	}
	row := pool(tx.Txn)
	if delta > 0 && row.InlineBytes+delta > row.budget() {
		return consensus.Reasonf(consensus.CodeConflict, ReasonInlineFull, "the pool's %d bytes for small objects kept inline are spent", row.budget())
	}
	row.InlineBytes = max(row.InlineBytes+delta, 0)
	return tx.Insert(tPool, &row)
}

// readInline reads a small object's bytes of size from body. The body's
// reader gives its verdict (checksums, signatures) with its last byte, so
// an error that comes with data counts (io.ReadFull would drop it), and a
// body that has not ended with its last byte must end at the next read.
func readInline(body io.Reader, size int64) ([]byte, error) {
	data := make([]byte, size)
	n, ended := 0, false
	for n < len(data) && !ended {
		k, err := body.Read(data[n:])
		n += k
		switch {
		case err == io.EOF:
			ended = true
		case err != nil:
			return nil, err
		}
	}
	if n < len(data) {
		return nil, ErrIncomplete
	}
	if !ended {
		if k, err := body.Read(make([]byte, 1)); k > 0 {
			return nil, fmt.Errorf("the body is longer than its %d bytes", size)
		} else if err != nil && err != io.EOF {
			return nil, err
		}
	}
	return data, nil
}

// putInline stores a small object in its record. It reports false, with
// no error, when the pool's inline budget is spent and the caller should
// store it as shards.
func (o *Objects) putInline(ctx context.Context, p *identity.Principal, b *Bucket, key string, data []byte, opt PutOptions) (*Object, bool, error) {
	sum := md5.Sum(data)
	if opt.MD5 != nil && !bytes.Equal(opt.MD5, sum[:]) {
		return nil, true, ErrBadDigest
	}
	obj := Object{ID: objectID(b.ID, key), Bucket: b.ID, Key: key, VersionID: newVersionIDFor(b), Size: int64(len(data)), ETag: hex.EncodeToString(sum[:]),
		ContentType: opt.ContentType, Meta: opt.Meta, Headers: opt.Headers, Tags: opt.Tags, Checksum: opt.checksum(), Retention: opt.Retention,
		LegalHold: opt.LegalHold, Inline: data, Modified: time.Now().UTC()}
	var res putResult
	plain := putObjectCmd{Object: obj, IfMatch: opt.IfMatch, IfNoneMatch: opt.IfNoneMatch, target: targetOf(b)}
	// The bytes ride beside the command's JSON, not in it as base64
	// (consensus/attach.go); applyPutObject puts them in the record.
	cmd := plain
	cmd.Object.Inline = nil
	attached := consensus.Attached{Cmd: cmd, Bytes: data, Plain: func() (any, error) { return plain, nil }}
	err := o.id.Mutate(ctx, p, "object.put", obj.ID, b.ProjectID, MsgPutObject, attached, &res)
	if consensus.ErrorReason(err) == ReasonInlineFull {
		return nil, false, nil
	}
	if err != nil {
		// Nothing to clean up: an inline write that did not commit left
		// nothing behind, and one that did is simply there.
		return nil, true, err
	}
	go o.deleteVersions(res.Removed)
	return res.Object, true, nil
}

// writeInline sends bytes [off, off+n) of an inline object, once its bytes
// match its MD5.
func writeInline(obj *Object, off, n int64, w io.Writer) error {
	if sum := md5.Sum(obj.Inline); hex.EncodeToString(sum[:]) != obj.ETag || int64(len(obj.Inline)) != obj.Size {
		return fmt.Errorf("read %s: its inline bytes do not match its ETag", obj.ID)
	}
	_, err := w.Write(obj.Inline[off : off+n])
	return err
}
