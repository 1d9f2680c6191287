package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// S3's multipart limits.
const (
	MaxParts    = 10000
	MinPartSize = 5 << 20 // every part but the last
)

// CreateUpload starts a multipart upload.
func (o *Objects) CreateUpload(ctx context.Context, p *identity.Principal, bucket, key string, opt PutOptions) (*Upload, error) {
	b, err := o.writable(ctx, p, "upload.create", bucket)
	if err != nil {
		return nil, err
	}
	u := Upload{ID: newDataID(), Bucket: bucket, Key: key, ContentType: opt.ContentType, Meta: opt.Meta, Initiated: time.Now().UTC()}
	var out Upload
	if err := o.id.Mutate(ctx, p, "upload.create", bucket+"/"+key, b.ProjectID, MsgCreateUpload, u, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (o *Objects) upload(ctx context.Context, p *identity.Principal, bucket, key, uploadID string) (*Bucket, *Upload, error) {
	b, err := o.writable(ctx, p, "upload.part", bucket)
	if err != nil {
		return nil, nil, err
	}
	u := consensus.First[Upload](o.c.Store().ReadTxn(), tUploads, "id", uploadID)
	if u == nil {
		// Created a moment ago through another node, perhaps: this node may
		// not have applied it yet. A linearizable read settles it.
		if err := o.c.ConsistentRead(ctx); err != nil {
			return nil, nil, err
		}
		u = consensus.First[Upload](o.c.Store().ReadTxn(), tUploads, "id", uploadID)
	}
	if u == nil || u.Bucket != bucket || u.Key != key {
		return nil, nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", uploadID)
	}
	return b, u, nil
}

// UploadPart stores one part, erasure-coded like an object of its own.
// Uploading a part number again replaces it.
func (o *Objects) UploadPart(ctx context.Context, p *identity.Principal, bucket, key, uploadID string, number int, size int64, body io.Reader, md5sum []byte) (string, error) {
	if number < 1 || number > MaxParts {
		return "", consensus.Errorf(consensus.CodeInvalid, "part numbers are 1 to %d", MaxParts)
	}
	b, _, err := o.upload(ctx, p, bucket, key, uploadID)
	if err != nil {
		return "", err
	}
	dataID := newDataID()
	l, placed, err := o.place(b, size, dataID)
	if err != nil {
		return "", err
	}
	locs, sum, err := o.writeShards(ctx, l, placed, dataID, size, body)
	if err != nil {
		return "", err
	}
	if md5sum != nil && !bytes.Equal(md5sum, sum) {
		o.deleteShards(l, locs, dataID)
		return "", ErrBadDigest
	}
	seg := Segment{Size: size, ETag: hex.EncodeToString(sum), Layout: l, DataID: dataID, Shards: locs}
	part := Part{ID: partID(uploadID, number), UploadID: uploadID, Number: number, Segment: seg, Modified: time.Now().UTC()}
	var old *Part
	// Parts are not audited one by one; the upload's creation and completion are.
	if _, err := o.c.Apply(ctx, MsgPutPart, part, &old); err != nil {
		o.deleteShards(l, locs, dataID)
		return "", err
	}
	if old != nil {
		go o.deleteShards(old.Segment.Layout, old.Segment.Shards, old.Segment.DataID)
	}
	return seg.ETag, nil
}

// CompletePart names a part the client wants in the object.
type CompletePart struct {
	Number int
	ETag   string // without quotes
}

// ErrInvalidPart and ErrInvalidPartOrder and ErrEntityTooSmall are S3's
// complete-upload errors.
var (
	ErrInvalidPart      = fmt.Errorf("a listed part was not uploaded or its ETag does not match")
	ErrInvalidPartOrder = fmt.Errorf("the list of parts was not in ascending order")
	ErrEntityTooSmall   = fmt.Errorf("a part other than the last is smaller than 5 MiB")
)

// CompleteUpload assembles the listed parts into the object.
func (o *Objects) CompleteUpload(ctx context.Context, p *identity.Principal, bucket, key, uploadID string, list []CompletePart) (*Object, error) {
	// Parts may have been uploaded through other nodes: see all of them.
	if err := o.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	b, u, err := o.upload(ctx, p, bucket, key, uploadID)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, ErrInvalidPart
	}
	txn := o.c.Store().ReadTxn()
	obj := Object{ID: bucket + "/" + key, Bucket: bucket, Key: key, ContentType: u.ContentType, Meta: u.Meta, Modified: time.Now().UTC()}
	var used []string
	h := md5.New()
	for i := 1; i < len(list); i++ {
		if list[i].Number <= list[i-1].Number {
			return nil, ErrInvalidPartOrder
		}
	}
	for i, cp := range list {
		part := consensus.First[Part](txn, tParts, "id", partID(uploadID, cp.Number))
		if part == nil || part.Segment.ETag != cp.ETag {
			return nil, ErrInvalidPart
		}
		if i < len(list)-1 && part.Segment.Size < MinPartSize {
			return nil, ErrEntityTooSmall
		}
		raw, _ := hex.DecodeString(part.Segment.ETag)
		h.Write(raw)
		obj.Parts = append(obj.Parts, part.Segment)
		obj.Size += part.Segment.Size
		used = append(used, part.ID)
	}
	obj.ETag = fmt.Sprintf("%s-%d", hex.EncodeToString(h.Sum(nil)), len(list))
	var res completeResult
	if err := o.id.Mutate(ctx, p, "upload.complete", obj.ID, b.ProjectID, MsgCompleteUpload,
		completeUploadCmd{UploadID: uploadID, Object: obj, Used: used}, &res); err != nil {
		return nil, err
	}
	go func() {
		for _, part := range res.Unused {
			o.deleteShards(part.Segment.Layout, part.Segment.Shards, part.Segment.DataID)
		}
		if res.Replaced != nil {
			o.deleteObjectData(res.Replaced)
		}
	}()
	return res.Object, nil
}

// AbortUpload drops an upload and its parts' shards.
func (o *Objects) AbortUpload(ctx context.Context, p *identity.Principal, bucket, key, uploadID string) error {
	b, u, err := o.upload(ctx, p, bucket, key, uploadID)
	if err != nil {
		return err
	}
	return o.abortUpload(ctx, p, b.ProjectID, u)
}

// abortUpload is the abort itself, shared by AbortUpload and the upload
// expirer: the upload and its parts go in one audited command, then the
// parts' shards are deleted (parts are not charged to the quota until
// completion, so nothing is released).
func (o *Objects) abortUpload(ctx context.Context, p *identity.Principal, projectID string, u *Upload) error {
	var parts []Part
	if err := o.id.Mutate(ctx, p, "upload.abort", u.Bucket+"/"+u.Key, projectID, MsgAbortUpload, deleteObjectCmd{ID: u.ID}, &parts); err != nil {
		return err
	}
	for _, part := range parts {
		o.deleteShards(part.Segment.Layout, part.Segment.Shards, part.Segment.DataID)
	}
	return nil
}

// ListParts returns an upload's parts in order.
func (o *Objects) ListParts(ctx context.Context, p *identity.Principal, bucket, key, uploadID string) ([]Part, error) {
	if err := o.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	if _, _, err := o.upload(ctx, p, bucket, key, uploadID); err != nil {
		return nil, err
	}
	it, err := o.c.Store().ReadTxn().Get(tParts, "id_prefix", uploadID+"/")
	if err != nil {
		return nil, err
	}
	var out []Part
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, *obj.(*Part))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out, nil
}

// ListUploads returns a bucket's uploads in progress.
func (o *Objects) ListUploads(ctx context.Context, p *identity.Principal, bucket, prefix string) ([]Upload, error) {
	if _, err := o.Bucket(ctx, p, bucket); err != nil {
		return nil, err
	}
	it, err := o.c.Store().ReadTxn().Get(tUploads, "id")
	if err != nil {
		return nil, err
	}
	var out []Upload
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if u := obj.(*Upload); u.Bucket == bucket && len(u.Key) >= len(prefix) && u.Key[:len(prefix)] == prefix {
			out = append(out, *u)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}
