package storage

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// S3's multipart limits.
const (
	MaxParts    = 10000
	MinPartSize = 5 << 20 // every part but the last
)

// CreateUpload starts a multipart upload. Its options are the object's:
// they apply when it completes.
func (o *Objects) CreateUpload(ctx context.Context, p *identity.Principal, bucket, key string, opt PutOptions) (*Upload, error) {
	const action = "upload.create"
	b, err := o.writable(ctx, p, action, bucket)
	if err != nil {
		return nil, err
	}
	if err := o.checkNew(b, key, opt); err != nil {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, err)
	}
	if !p.Can(b.ProjectID, lockRole(opt)) {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only project admins set COMPLIANCE retention or a legal hold"))
	}
	u := Upload{ID: newDataID(), Bucket: bucket, BucketUID: b.UID, Key: key, ContentType: opt.ContentType, Meta: opt.Meta, Charged: true,
		Tags: opt.Tags, Retention: opt.Retention, LegalHold: opt.LegalHold, Checksum: opt.checksum(), Initiated: time.Now().UTC()}
	u.Headers = opt.Headers
	var out Upload
	if err := o.id.Mutate(ctx, p, action, objectID(bucket, key), b.ProjectID, MsgCreateUpload, u, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// upload returns an upload in progress of this bucket and key.
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
	if u == nil || u.Bucket != bucket || u.BucketUID != b.UID || u.Key != key {
		return nil, nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", uploadID)
	}
	return b, u, nil
}

// Upload returns an upload in progress, for its options (checksum).
func (o *Objects) Upload(ctx context.Context, p *identity.Principal, bucket, key, uploadID string) (*Upload, error) {
	_, u, err := o.upload(ctx, p, bucket, key, uploadID)
	return u, err
}

// PartOptions are the checks of a part upload.
type PartOptions struct {
	MD5 []byte // Content-MD5, checked if set
	// Checksum returns, once the body is read, the part's flexible
	// checksum the caller verified (base64; "" for none).
	Checksum func() string
}

// UploadPart stores one part, erasure-coded like an object of its own.
// Uploading a part number again replaces it.
func (o *Objects) UploadPart(ctx context.Context, p *identity.Principal, bucket, key, uploadID string, number int, size int64, body io.Reader, opt PartOptions) (string, error) {
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
	if opt.MD5 != nil && !bytes.Equal(opt.MD5, sum) {
		o.deleteShards(l, locs, dataID)
		return "", ErrBadDigest
	}
	seg := Segment{Size: size, ETag: hex.EncodeToString(sum), Layout: l, DataID: dataID, Shards: locs}
	if opt.Checksum != nil {
		seg.Checksum = opt.Checksum()
	}
	part := Part{ID: partID(uploadID, number), UploadID: uploadID, Number: number, Segment: seg, Modified: time.Now().UTC(), Charged: true}
	var old *Part
	// Parts are not audited one by one; the upload's creation and completion are.
	if _, err := o.c.Apply(ctx, MsgPutPart, part, &old); err != nil {
		if !o.settle(ctx, err, dataID, func() { o.deleteShards(l, locs, dataID) }) {
			return "", err
		}
		return seg.ETag, nil
	}
	if old != nil {
		go o.deleteShards(old.Segment.Layout, old.Segment.Shards, old.Segment.DataID)
	}
	return seg.ETag, nil
}

// multipartETag is S3's ETag of a multipart object: the MD5 of the parts'
// MD5s, then "-" and the number of parts.
func multipartETag(parts []Segment) string {
	h := md5.New()
	for _, seg := range parts {
		raw, _ := hex.DecodeString(seg.ETag)
		h.Write(raw)
	}
	return fmt.Sprintf("%s-%d", hex.EncodeToString(h.Sum(nil)), len(parts))
}

// CompleteOptions are the conditions of a completion and the object's
// checksum, which the caller computes from the parts it is given.
type CompleteOptions struct {
	IfMatch     string
	IfNoneMatch bool
	// Checksum, if set, returns the object's checksum from its upload and
	// the listed parts as they are now (their sizes and checksums are
	// checked again when the completion applies).
	Checksum func(u *Upload, parts []Part) (*Checksum, error)
}

// CompleteUpload assembles the listed parts into the object.
func (o *Objects) CompleteUpload(ctx context.Context, p *identity.Principal, bucket, key, uploadID string, list []CompletePart, opt CompleteOptions) (*Object, error) {
	// Parts may have been uploaded through other nodes: see all of them.
	if err := o.c.ConsistentRead(ctx); err != nil {
		return nil, err
	}
	b, u, err := o.upload(ctx, p, bucket, key, uploadID)
	if err != nil {
		return nil, err
	}
	txn := o.c.Store().ReadTxn()
	parts := make([]Part, 0, len(list))
	for i, cp := range list {
		part := consensus.First[Part](txn, tParts, "id", partID(uploadID, cp.Number))
		if part == nil || part.Segment.ETag != cp.ETag {
			return nil, consensus.Reasonf(consensus.CodeInvalid, ReasonInvalidPart, "part %d was not uploaded or its ETag does not match", cp.Number)
		}
		if cp.Checksum != "" && part.Segment.Checksum != cp.Checksum {
			return nil, consensus.Reasonf(consensus.CodeInvalid, ReasonInvalidPart, "part %d's checksum does not match", cp.Number)
		}
		list[i].Size, list[i].Checksum = part.Segment.Size, part.Segment.Checksum
		parts = append(parts, *part)
	}
	obj := Object{ID: objectID(bucket, key), Bucket: bucket, Key: key, VersionID: newVersionIDFor(b), ContentType: u.ContentType, Meta: u.Meta,
		Tags: u.Tags, Retention: u.Retention, LegalHold: u.LegalHold, Modified: time.Now().UTC()}
	obj.Headers = u.Headers
	if opt.Checksum != nil && u.Checksum != nil {
		if obj.Checksum, err = opt.Checksum(u, parts); err != nil {
			return nil, err
		}
	}
	var res completeResult
	cmd := completeUploadCmd{UploadID: uploadID, Parts: list, Object: obj, IfMatch: opt.IfMatch, IfNoneMatch: opt.IfNoneMatch, target: targetOf(b)}
	if err := o.id.Mutate(ctx, p, "upload.complete", obj.ID, b.ProjectID, MsgCompleteUpload, cmd, &res); err != nil {
		return nil, err
	}
	go func() {
		for _, part := range res.Unused {
			o.deleteShards(part.Segment.Layout, part.Segment.Shards, part.Segment.DataID)
		}
		o.deleteVersions(res.Removed)
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

// abortUpload is the abort itself, shared by AbortUpload, lifecycle rules
// and the upload expirer: the upload and its parts go in one audited
// command (which releases their quota), then the parts' shards are deleted.
func (o *Objects) abortUpload(ctx context.Context, p *identity.Principal, projectID string, u *Upload) error {
	var parts []Part
	if err := o.id.Mutate(ctx, p, "upload.abort", objectID(u.Bucket, u.Key), projectID, MsgAbortUpload, deleteObjectCmd{ID: u.ID}, &parts); err != nil {
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
	return uploadParts(o.c.Store().ReadTxn(), uploadID), nil
}

// ListUploads returns a bucket's uploads in progress whose keys start with
// prefix, by key and then by upload ID, the order S3's upload-id-marker
// resumes in.
func (o *Objects) ListUploads(ctx context.Context, p *identity.Principal, bucket, prefix string) ([]Upload, error) {
	b, err := o.Bucket(ctx, p, bucket)
	if err != nil {
		return nil, err
	}
	var out []Upload
	for _, u := range bucketUploads(o.c.Store().ReadTxn(), bucket) {
		if u.BucketUID == b.UID && strings.HasPrefix(u.Key, prefix) {
			out = append(out, u)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
