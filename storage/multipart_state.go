package storage

import (
	"fmt"
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

// Upload is a multipart upload in progress.
type Upload struct {
	ID          string            `json:"id"`
	Bucket      string            `json:"bucket"`
	Key         string            `json:"key"`
	ContentType string            `json:"content_type,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Initiated   time.Time         `json:"initiated"`
	Version     uint64            `json:"version"`
}

// Segment is one erasure-coded run of an object's bytes: the whole object,
// or one part of a multipart upload.
type Segment struct {
	Size   int64          `json:"size"`
	ETag   string         `json:"etag"`
	Layout erasure.Layout `json:"layout"`
	DataID string         `json:"data_id"`
	Shards []ShardLoc     `json:"shards"`
}

// Part is an uploaded part. ID is "<upload>/<number, zero-padded>".
type Part struct {
	ID       string    `json:"id"`
	UploadID string    `json:"upload_id"`
	Number   int       `json:"number"`
	Segment  Segment   `json:"segment"`
	Modified time.Time `json:"modified"`
}

const (
	tUploads = "uploads"
	tParts   = "parts"
)

func partID(upload string, n int) string { return fmt.Sprintf("%s/%05d", upload, n) }

type completeUploadCmd struct {
	UploadID string   `json:"upload_id"`
	Object   Object   `json:"object"`
	Used     []string `json:"used"` // part IDs that became the object
}

// completeResult is what the caller must clean up after a completion.
type completeResult struct {
	Replaced *Object `json:"replaced,omitempty"`
	Unused   []Part  `json:"unused,omitempty"`
	Object   *Object `json:"object"`
}

func registerMultipart(reg *consensus.Registry) {
	consensus.RegisterTable[Upload](reg, &memdb.TableSchema{Name: tUploads, Indexes: map[string]*memdb.IndexSchema{
		"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
	}})
	consensus.RegisterTable[Part](reg, &memdb.TableSchema{Name: tParts, Indexes: map[string]*memdb.IndexSchema{
		"id":   {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		"disk": {Name: "disk", AllowMissing: true, Indexer: diskIndex{func(p any) []Segment { return []Segment{p.(*Part).Segment} }}},
	}})
	consensus.Handle(reg, MsgCreateUpload, "CreateUpload", func(tx *consensus.Tx, u *Upload) (any, error) {
		if consensus.First[Bucket](tx.Txn, tBuckets, "id", u.Bucket) == nil {
			return nil, consensus.Errorf(consensus.CodeNotFound, "bucket %q not found", u.Bucket)
		}
		row := *u
		row.Version = tx.Index
		return &row, tx.Insert(tUploads, &row)
	})
	consensus.Handle(reg, MsgPutPart, "PutPart", func(tx *consensus.Tx, p *Part) (any, error) {
		if consensus.First[Upload](tx.Txn, tUploads, "id", p.UploadID) == nil {
			return nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", p.UploadID)
		}
		old := consensus.First[Part](tx.Txn, tParts, "id", p.ID)
		row := *p
		return old, tx.Insert(tParts, &row)
	})
	consensus.Handle(reg, MsgCompleteUpload, "CompleteUpload", applyCompleteUpload)
	consensus.Handle(reg, MsgAbortUpload, "AbortUpload", func(tx *consensus.Tx, c *deleteObjectCmd) (any, error) {
		u := consensus.First[Upload](tx.Txn, tUploads, "id", c.ID)
		if u == nil {
			return nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", c.ID)
		}
		parts, err := removeParts(tx, u.ID)
		if err != nil {
			return nil, err
		}
		return parts, tx.Delete(tUploads, u)
	})
}

// removeParts deletes every part row of an upload and returns them.
func removeParts(tx *consensus.Tx, upload string) ([]Part, error) {
	it, err := tx.Get(tParts, "id_prefix", upload+"/")
	if err != nil {
		return nil, err
	}
	var parts []Part
	for obj := it.Next(); obj != nil; obj = it.Next() {
		parts = append(parts, *obj.(*Part))
	}
	for i := range parts {
		if err := tx.Delete(tParts, &parts[i]); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// applyCompleteUpload turns the listed parts into the object in one step:
// the object appears, the upload and its parts disappear, and the quota is
// charged, together or not at all.
func applyCompleteUpload(tx *consensus.Tx, c *completeUploadCmd) (any, error) {
	u := consensus.First[Upload](tx.Txn, tUploads, "id", c.UploadID)
	if u == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "upload %q not found", c.UploadID)
	}
	for _, id := range c.Used {
		if consensus.First[Part](tx.Txn, tParts, "id", id) == nil {
			return nil, consensus.Errorf(consensus.CodeInvalid, "part %s is not uploaded", id)
		}
	}
	parts, err := removeParts(tx, u.ID)
	if err != nil {
		return nil, err
	}
	if err := tx.Delete(tUploads, u); err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, id := range c.Used {
		used[id] = true
	}
	res := &completeResult{}
	for _, p := range parts {
		if !used[p.ID] {
			res.Unused = append(res.Unused, p)
		}
	}
	old, err := applyPutObject(tx, &putObjectCmd{Object: c.Object})
	if err != nil {
		return nil, err
	}
	res.Replaced, _ = old.(*Object)
	res.Object = consensus.First[Object](tx.Txn, tObjects, "id", c.Object.ID)
	return res, nil
}
