package storage

import (
	"github.com/cairnhq/cairn/consensus"
)

// Commands that configure a bucket.
const (
	MsgSetBucketVersioning consensus.MessageType = 148
	MsgSetBucketTags       consensus.MessageType = 149
	MsgSetObjectLockConfig consensus.MessageType = 150
	MsgSetBucketCORS       consensus.MessageType = 151
	MsgSetBucketLifecycle  consensus.MessageType = 152
)

// CORSRule is one rule of a bucket's CORS configuration, as S3 has it.
type CORSRule struct {
	ID             string   `json:"id,omitempty"`
	AllowedOrigins []string `json:"allowed_origins"`
	AllowedMethods []string `json:"allowed_methods"`
	AllowedHeaders []string `json:"allowed_headers,omitempty"`
	ExposeHeaders  []string `json:"expose_headers,omitempty"`
	MaxAgeSeconds  int      `json:"max_age_seconds,omitempty"`
}

// LifecycleRule is one rule of a bucket's lifecycle: what it applies to
// (a key prefix and tags) and what expires when. Zero days means the action
// is not part of the rule.
type LifecycleRule struct {
	ID                        string            `json:"id,omitempty"`
	Enabled                   bool              `json:"enabled"`
	Prefix                    string            `json:"prefix,omitempty"`
	Tags                      map[string]string `json:"tags,omitempty"`
	ExpirationDays            int               `json:"expiration_days,omitempty"`              // current versions, by age
	ExpiredDeleteMarker       bool              `json:"expired_object_delete_marker,omitempty"` // delete markers with no older versions left
	NoncurrentDays            int               `json:"noncurrent_days,omitempty"`              // older versions, by time since they became older
	NewerNoncurrentVersions   int               `json:"newer_noncurrent_versions,omitempty"`    // keep this many older versions regardless
	AbortIncompleteUploadDays int               `json:"abort_incomplete_upload_days,omitempty"`
}

type setVersioningCmd struct {
	Bucket string `json:"bucket"`
	Status string `json:"status"` // Enabled or Suspended
	target
}

type setBucketTagsCmd struct {
	Bucket string            `json:"bucket"`
	Tags   map[string]string `json:"tags,omitempty"`
	target
}

type setObjectLockConfigCmd struct {
	Bucket string           `json:"bucket"`
	Config ObjectLockConfig `json:"config"`
	target
}

type setCORSCmd struct {
	Bucket string     `json:"bucket"`
	Rules  []CORSRule `json:"rules,omitempty"`
	target
}

type setLifecycleCmd struct {
	Bucket string          `json:"bucket"`
	Rules  []LifecycleRule `json:"rules,omitempty"`
	target
}

func registerBucketConfig(reg *consensus.Registry) {
	consensus.Handle(reg, MsgSetBucketVersioning, "SetBucketVersioning", func(tx *consensus.Tx, c *setVersioningCmd) (any, error) {
		return updateBucket(tx, c.Bucket, c.target, func(b *Bucket) error {
			if c.Status != VersioningEnabled && c.Status != VersioningSuspended {
				return consensus.Errorf(consensus.CodeInvalid, "versioning status must be Enabled or Suspended")
			}
			if b.Lock != nil && c.Status != VersioningEnabled {
				return consensus.Errorf(consensus.CodeConflict, "bucket %q has object lock: its versioning cannot be suspended", b.ID)
			}
			b.Versioning = c.Status
			return nil
		})
	})
	consensus.Handle(reg, MsgSetBucketTags, "SetBucketTags", func(tx *consensus.Tx, c *setBucketTagsCmd) (any, error) {
		return updateBucket(tx, c.Bucket, c.target, func(b *Bucket) error {
			b.Tags = c.Tags
			return nil
		})
	})
	consensus.Handle(reg, MsgSetObjectLockConfig, "SetObjectLockConfig", func(tx *consensus.Tx, c *setObjectLockConfigCmd) (any, error) {
		return updateBucket(tx, c.Bucket, c.target, func(b *Bucket) error {
			if b.Lock == nil && b.Versioning != VersioningEnabled {
				return consensus.Errorf(consensus.CodeConflict, "object lock needs versioning enabled on bucket %q first", b.ID)
			}
			cfg := c.Config
			b.Lock = &cfg
			return nil
		})
	})
	consensus.Handle(reg, MsgSetBucketCORS, "SetBucketCORS", func(tx *consensus.Tx, c *setCORSCmd) (any, error) {
		return updateBucket(tx, c.Bucket, c.target, func(b *Bucket) error {
			b.CORS = c.Rules
			return nil
		})
	})
	consensus.Handle(reg, MsgSetBucketLifecycle, "SetBucketLifecycle", func(tx *consensus.Tx, c *setLifecycleCmd) (any, error) {
		return updateBucket(tx, c.Bucket, c.target, func(b *Bucket) error {
			b.Lifecycle = c.Rules
			return nil
		})
	})
}

// updateBucket changes a bucket's configuration with fn.
func updateBucket(tx *consensus.Tx, name string, t target, fn func(*Bucket) error) (any, error) {
	cur, err := bucketFor(tx, name, t)
	if err != nil {
		return nil, err
	}
	b := *cur
	if err := fn(&b); err != nil {
		return nil, err
	}
	b.Version = tx.Index
	return &b, tx.Insert(tBuckets, &b)
}
