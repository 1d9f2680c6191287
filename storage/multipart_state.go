package storage

import (
	"fmt"
	"sort"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/storage/erasure"
	"github.com/hashicorp/go-memdb"
)

// Multipart commands.
const (
	MsgCreateUpload   consensus.MessageType = 136
	MsgPutPart        consensus.MessageType = 137
	MsgCompleteUpload consensus.MessageType = 138
	MsgAbortUpload    consensus.MessageType = 139
)

// Reasons the state machine refuses a completion with, for S3's error codes.
const (
	ReasonInvalidPart      = "invalid_part"
	ReasonInvalidPartOrder = "invalid_part_order"
	ReasonEntityTooSmall   = "entity_too_small"
)

// Upload is a multipart upload in progress. It belongs to one bucket by its
// UID, not only its name.
type Upload struct {
	ID          string            `json:"id"`
	Bucket      string            `json:"bucket"`
	BucketUID   string            `json:"bucket_uid,omitempty"`
	Key         string            `json:"key"`
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
	Retention   *Retention        `json:"retention,omitempty"`
	LegalHold   bool              `json:"legal_hold,omitempty"`
	// Checksum names the algorithm and type (COMPOSITE or FULL_OBJECT) the
	// client chose for the object; Value is empty.
	Checksum *Checksum `json:"checksum,omitempty"`
	// Charged: the upload's record (and its parts, see Part.Charged) count
	// against the project's quota. Uploads from before that did not.
	Charged   bool      `json:"charged,omitempty"`
	Initiated time.Time `json:"initiated"`
	Version   uint64    `json:"version"`
}

// Segment is one erasure-coded run of an object's bytes: the whole object,
// or one part of a multipart upload.
type Segment struct {
	Size     int64          `json:"size"`
	ETag     string         `json:"etag"`
	Checksum string         `json:"checksum,omitempty"` // a part's flexible checksum (base64), in its upload's algorithm
	Layout   erasure.Layout `json:"layout"`
	DataID   string         `json:"data_id"`
	Shards   []ShardLoc     `json:"shards"`
}

// Part is an uploaded part. ID is "<upload>/<number, zero-padded>".
type Part struct {
	ID       string    `json:"id"`
	UploadID string    `json:"upload_id"`
	Number   int       `json:"number"`
	Segment  Segment   `json:"segment"`
	Modified time.Time `json:"modified"`
	// Charged: the part's bytes and record count against the project's
	// quota from when it lands; a part from before that did not, and is
	// not released either.
	Charged bool `json:"charged,omitempty"`
}

const (
	tUploads = "uploads"
	tParts   = "parts"
)

func partID(upload string, n int) string { return fmt.Sprintf("%s/%05d", upload, n) }

// CompletePart names a part the client wants in the object, as it saw it
// (ETag, and size and checksum when the caller read them): the completion
// is refused if the part changed since.
type CompletePart struct {
	Number   int    `json:"number"`
	ETag     string `json:"etag"` // without quotes
	Size     int64  `json:"size,omitempty"`
	Checksum string `json:"checksum,omitempty"`
}

// completeUploadCmd assembles the object from the parts as they are in the
// state when it applies, never from a copy read earlier: a part uploaded
// again meanwhile fails the completion instead of leaving the object
// pointing at shards that are being deleted.
type completeUploadCmd struct {
	UploadID    string         `json:"upload_id"`
	Parts       []CompletePart `json:"parts"`
	Object      Object         `json:"object"` // everything but its segments, size and ETag
	IfMatch     string         `json:"if_match,omitempty"`
	IfNoneMatch bool           `json:"if_none_match,omitempty"`
	target
	// Used is how completions were written before Parts: the object came
	// assembled, these part IDs named what it used. Kept so that such
	// entries in the log apply on replay as they did.
	Used []string `json:"used,omitempty"`
}

// completeResult is what the caller must clean up after a completion.
type completeResult struct {
	Removed []Object `json:"removed,omitempty"`
	Unused  []Part   `json:"unused,omitempty"`
	Object  *Object  `json:"object"`
}

func registerMultipart(reg *consensus.Registry) {
	consensus.RegisterTable[Upload](reg, &memdb.TableSchema{Name: tUploads, Indexes: map[string]*memdb.IndexSchema{
		"id":     {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"bucket": {Name: "bucket", Indexer: &memdb.StringFieldIndex{Field: "Bucket"}},
	}})
	consensus.RegisterTable[Part](reg, &memdb.TableSchema{Name: tParts, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"disk": {Name: "disk", AllowMissing: true, Indexer: diskIndex{func(p any) []Segment { return []Segment{p.(*Part).Segment} }}},
		"data": {Name: "data", AllowMissing: true, Indexer: dataIndex{func(p any) []Segment { return []Segment{p.(*Part).Segment} }}},
	}})
	consensus.Handle(reg, MsgCreateUpload, "CreateUpload", applyCreateUpload)
	consensus.Handle(reg, MsgPutPart, "PutPart", applyPutPart)
	consensus.Handle(reg, MsgCompleteUpload, "CompleteUpload", applyCompleteUpload)
	consensus.Handle(reg, MsgAbortUpload, "AbortUpload", applyAbortUpload)
}

func applyCreateUpload(tx *consensus.Tx, u *Upload) (any, error) {
	b := consensus.First[Bucket](tx.Txn, tBuckets, "id", u.Bucket)
	if b == nil || (u.BucketUID != "" && b.UID != u.BucketUID) {
		return nil, consensus.Errorf(consensus.CodeNotFound, "bucket %q not found", u.Bucket)
	}
	row := *u
	row.BucketUID, row.Version = b.UID, tx.Index
	if row.Charged {
		acc := newBucketAccount(b, true)
		acc.part(0, +1) // the upload's own record
		if err := acc.commit(tx); err != nil {
			return nil, err
		}
	}
	return &row, tx.Insert(tUploads, &row)
}

// uploadOf returns an upload in progress and its bucket, if the upload
// still belongs to the bucket of that name.
func uploadOf(tx *consensus.Tx, id string) (*Upload, *Bucket, error) {
	u := consensus.First[Upload](tx.Txn, tUploads, "id", id)
	if u == nil {
		return nil, nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", id)
	}
	b := consensus.First[Bucket](tx.Txn, tBuckets, "id", u.Bucket)
	if b == nil || b.UID != u.BucketUID {
		return nil, nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", id)
	}
	return u, b, nil
}

// applyPutPart records a part, charging its bytes to the project now: an
// upload in progress holds disk space as much as an object does.
func applyPutPart(tx *consensus.Tx, p *Part) (any, error) {
	_, b, err := uploadOf(tx, p.UploadID)
	if err != nil {
		return nil, err
	}
	if err := checkNotAbandoned(tx, []Segment{p.Segment}); err != nil {
		return nil, err
	}
	acc := newBucketAccount(b, true)
	old := consensus.First[Part](tx.Txn, tParts, "id", p.ID)
	if old != nil && old.Charged {
		acc.part(old.Segment.Size, -1)
	}
	if p.Charged {
		acc.part(p.Segment.Size, +1)
	}
	if err := acc.commit(tx); err != nil {
		return nil, err
	}
	row := *p
	return old, tx.Insert(tParts, &row)
}

func applyAbortUpload(tx *consensus.Tx, c *deleteObjectCmd) (any, error) {
	u := consensus.First[Upload](tx.Txn, tUploads, "id", c.ID)
	if u == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", c.ID)
	}
	parts, err := removeUpload(tx, u)
	if err != nil {
		return nil, err
	}
	if b := consensus.First[Bucket](tx.Txn, tBuckets, "id", u.Bucket); b != nil && b.UID == u.BucketUID {
		acc := newBucketAccount(b, true)
		release(acc, u, parts)
		if err := acc.commit(tx); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// release stops charging an upload's record and its parts, those that
// were charged.
func release(acc *bucketAccount, u *Upload, parts []Part) {
	if u.Charged {
		acc.part(0, -1)
	}
	for _, p := range parts {
		if p.Charged {
			acc.part(p.Segment.Size, -1)
		}
	}
}

// removeUpload deletes an upload and its part rows and returns the parts;
// the caller settles the bucket's account.
func removeUpload(tx *consensus.Tx, u *Upload) ([]Part, error) {
	parts := uploadParts(tx.Txn, u.ID)
	for i := range parts {
		if err := tx.Delete(tParts, &parts[i]); err != nil {
			return nil, err
		}
	}
	return parts, tx.Delete(tUploads, u)
}

// uploadParts returns an upload's parts in order of their numbers.
func uploadParts(txn *memdb.Txn, upload string) []Part {
	it, err := txn.Get(tParts, "id_prefix", upload+"/")
	if err != nil {
		panic(err) // the index is registered with the table: a bug
	}
	var parts []Part
	for obj := it.Next(); obj != nil; obj = it.Next() {
		parts = append(parts, *obj.(*Part))
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Number < parts[j].Number })
	return parts
}

// bucketUploads returns the uploads in progress of a bucket, by name.
func bucketUploads(txn *memdb.Txn, bucket string) []Upload {
	it, err := txn.Get(tUploads, "bucket", bucket)
	if err != nil {
		panic(err)
	}
	var out []Upload
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, *obj.(*Upload))
	}
	return out
}

// applyCompleteUpload turns the listed parts into the object in one step:
// the object appears, the upload and its parts disappear, and the quotas
// move from parts to object, together or not at all.
func applyCompleteUpload(tx *consensus.Tx, c *completeUploadCmd) (any, error) {
	u, b, err := uploadOf(tx, c.UploadID)
	if err != nil {
		return nil, err
	}
	if len(c.Parts) == 0 && len(c.Used) > 0 {
		return completeLegacy(tx, u, b, c)
	}
	if len(c.Parts) == 0 {
		return nil, consensus.Reasonf(consensus.CodeInvalid, ReasonInvalidPart, "a completion lists at least one part")
	}
	obj := c.Object
	obj.Size, obj.Parts = 0, nil
	used := map[string]bool{}
	for i, cp := range c.Parts {
		if i > 0 && cp.Number <= c.Parts[i-1].Number {
			return nil, consensus.Reasonf(consensus.CodeInvalid, ReasonInvalidPartOrder, "the list of parts is not in ascending order")
		}
		id := partID(u.ID, cp.Number)
		p := consensus.First[Part](tx.Txn, tParts, "id", id)
		if p == nil || p.Segment.ETag != cp.ETag || (cp.Size != 0 && p.Segment.Size != cp.Size) || (cp.Checksum != "" && p.Segment.Checksum != cp.Checksum) {
			return nil, consensus.Reasonf(consensus.CodeInvalid, ReasonInvalidPart, "part %d was not uploaded, or its ETag or checksum does not match", cp.Number)
		}
		if i < len(c.Parts)-1 && p.Segment.Size < MinPartSize {
			return nil, consensus.Reasonf(consensus.CodeInvalid, ReasonEntityTooSmall, "part %d is smaller than 5 MiB and not the last", cp.Number)
		}
		obj.Parts = append(obj.Parts, p.Segment)
		obj.Size += p.Segment.Size
		used[id] = true
	}
	obj.ETag = multipartETag(obj.Parts)
	return finishUpload(tx, u, b, obj, used, c)
}

// completeLegacy applies a completion written before Parts existed.
func completeLegacy(tx *consensus.Tx, u *Upload, b *Bucket, c *completeUploadCmd) (any, error) {
	used := map[string]bool{}
	for _, id := range c.Used {
		if consensus.First[Part](tx.Txn, tParts, "id", id) == nil {
			return nil, consensus.Reasonf(consensus.CodeInvalid, ReasonInvalidPart, "part %s is not uploaded", id)
		}
		used[id] = true
	}
	return finishUpload(tx, u, b, c.Object, used, c)
}

// finishUpload removes the upload, moves the charge from its parts to the
// object, and makes the object current.
func finishUpload(tx *consensus.Tx, u *Upload, b *Bucket, obj Object, used map[string]bool, c *completeUploadCmd) (any, error) {
	parts, err := removeUpload(tx, u)
	if err != nil {
		return nil, err
	}
	// The parts' charge ends here; the object's begins in applyPutObject.
	acc := newBucketAccount(b, true)
	release(acc, u, parts)
	res := &completeResult{}
	for _, p := range parts {
		if !used[p.ID] {
			res.Unused = append(res.Unused, p)
		}
	}
	if err := acc.commit(tx); err != nil {
		return nil, err
	}
	put := &putObjectCmd{Object: obj, IfMatch: c.IfMatch, IfNoneMatch: c.IfNoneMatch, target: c.target}
	put.BucketUID = b.UID // the upload is bound to this bucket already
	out, err := applyPutObject(tx, put)
	if err != nil {
		return nil, err
	}
	pr := out.(*putResult)
	res.Object, res.Removed = pr.Object, pr.Removed
	return res, nil
}
