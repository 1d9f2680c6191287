package storage

import (
	"strings"
	"time"

	"github.com/cairnhq/cairn/consensus"
	"github.com/hashicorp/go-memdb"
)

// Commands that change one version's attributes, never its bytes.
const (
	MsgSetObjectTags consensus.MessageType = 145
	MsgSetRetention  consensus.MessageType = 146
	MsgSetLegalHold  consensus.MessageType = 147
)

// versionRef names one version of an object: VersionID "" is the current one.
type versionRef struct {
	ID        string `json:"id"` // bucket + "/" + key
	VersionID string `json:"version_id,omitempty"`
	target
}

type setObjectTagsCmd struct {
	versionRef
	Tags map[string]string `json:"tags,omitempty"` // empty: remove every tag
}

type setRetentionCmd struct {
	versionRef
	Retention *Retention `json:"retention,omitempty"` // nil: remove (GOVERNANCE with bypass only)
	Time      time.Time  `json:"time"`
	Bypass    bool       `json:"bypass_governance,omitempty"`
}

type setLegalHoldCmd struct {
	versionRef
	On bool `json:"on"`
}

func registerObjectAttrs(reg *consensus.Registry) {
	consensus.Handle(reg, MsgSetObjectTags, "SetObjectTags", func(tx *consensus.Tx, c *setObjectTagsCmd) (any, error) {
		return updateVersion(tx, c.versionRef, func(o *Object) error {
			o.Tags = c.Tags
			return nil
		})
	})
	consensus.Handle(reg, MsgSetRetention, "SetRetention", func(tx *consensus.Tx, c *setRetentionCmd) (any, error) {
		return updateVersion(tx, c.versionRef, func(o *Object) error {
			if b := consensus.First[Bucket](tx.Txn, tBuckets, "id", o.Bucket); b == nil || b.Lock == nil {
				return consensus.Errorf(consensus.CodeInvalid, "bucket %q has no object lock", o.Bucket)
			}
			if err := checkRetentionChange(tx, o, c.Retention, c.Time, c.Bypass); err != nil {
				return err
			}
			o.Retention = c.Retention
			return nil
		})
	})
	consensus.Handle(reg, MsgSetLegalHold, "SetLegalHold", func(tx *consensus.Tx, c *setLegalHoldCmd) (any, error) {
		return updateVersion(tx, c.versionRef, func(o *Object) error {
			if b := consensus.First[Bucket](tx.Txn, tBuckets, "id", o.Bucket); b == nil || b.Lock == nil {
				return consensus.Errorf(consensus.CodeInvalid, "bucket %q has no object lock", o.Bucket)
			}
			o.LegalHold = c.On
			return nil
		})
	})
}

// findVersion returns a version of an object and the table it is in: the
// current one for versionID "", else the one with that ID. A delete marker
// is found only by its version ID.
func findVersion(txn *memdb.Txn, id, versionID string) (*Object, string) {
	cur := consensus.First[Object](txn, tObjects, "id", id)
	if versionID == "" {
		if cur == nil || cur.Delete {
			return nil, ""
		}
		return cur, tObjects
	}
	if cur != nil && cur.VersionIDOrNull() == versionID {
		return cur, tObjects
	}
	for _, v := range versionsOf(txn, id) {
		if v.VersionIDOrNull() == versionID {
			return &v, tVersions
		}
	}
	return nil, ""
}

// updateVersion changes one version's attributes with fn and returns it.
// Delete markers have none.
func updateVersion(tx *consensus.Tx, ref versionRef, fn func(*Object) error) (any, error) {
	bucket, _, _ := strings.Cut(ref.ID, "/")
	if _, err := bucketFor(tx, bucket, ref.target); err != nil {
		return nil, err
	}
	cur, table := findVersion(tx.Txn, ref.ID, ref.VersionID)
	if cur == nil {
		return nil, consensus.Errorf(consensus.CodeNotFound, "object %q version %q not found", ref.ID, ref.VersionID)
	}
	if cur.Delete {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a delete marker has no tags, retention or legal hold")
	}
	o := *cur
	if err := fn(&o); err != nil {
		return nil, err
	}
	return &o, tx.Insert(table, &o)
}
