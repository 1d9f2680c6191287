package storage

import (
	"context"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
)

// Object attributes that change without a new version: tags, retention and
// legal hold. Each is an audited command on one version.

// SetObjectTags replaces the tags of a version ("" for the current one);
// nil or empty removes them.
func (o *Objects) SetObjectTags(ctx context.Context, p *identity.Principal, bucket, key, versionID string, tags map[string]string) (*Object, error) {
	const action = "object.tags"
	b, err := o.writable(ctx, p, action, bucket)
	if err != nil {
		return nil, err
	}
	if err := ValidKey(key); err != nil {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, err)
	}
	if err := ValidTags(tags); err != nil {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, err)
	}
	var out Object
	err = o.id.Mutate(ctx, p, action, objectID(bucket, key), b.ProjectID, MsgSetObjectTags,
		setObjectTagsCmd{versionRef: versionRef{ID: objectID(bucket, key), VersionID: versionID, target: targetOf(b)}, Tags: tags}, &out)
	return &out, err
}

// SetRetention sets (or, with nil, removes) a version's retention. Making
// it weaker needs bypass (project admins) and a GOVERNANCE retention.
func (o *Objects) SetRetention(ctx context.Context, p *identity.Principal, bucket, key, versionID string, r *Retention, bypass bool) (*Object, error) {
	const action = "object.retention"
	b, err := o.writable(ctx, p, action, bucket)
	if err != nil {
		return nil, err
	}
	if err := ValidKey(key); err != nil {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, err)
	}
	if r != nil && r.Mode != LockGovernance && r.Mode != LockCompliance {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, consensus.Errorf(consensus.CodeInvalid, "retention mode must be GOVERNANCE or COMPLIANCE"))
	}
	if err := checkRetention(r, time.Now()); err != nil {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, err)
	}
	if r != nil && !p.Can(b.ProjectID, lockRole(PutOptions{Retention: r})) {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only project admins set COMPLIANCE retention"))
	}
	if bypass && !p.Can(b.ProjectID, identity.RoleAdmin) {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only project admins may bypass governance retention"))
	}
	var out Object
	err = o.id.Mutate(ctx, p, action, objectID(bucket, key), b.ProjectID, MsgSetRetention,
		setRetentionCmd{versionRef: versionRef{ID: objectID(bucket, key), VersionID: versionID, target: targetOf(b)}, Retention: r, Time: time.Now().UTC(), Bypass: bypass}, &out)
	return &out, err
}

// SetLegalHold puts a version under legal hold or releases it (project
// admins: a hold is what keeps evidence from a stolen member's key).
func (o *Objects) SetLegalHold(ctx context.Context, p *identity.Principal, bucket, key, versionID string, on bool) (*Object, error) {
	const action = "object.legal-hold"
	b, err := o.writable(ctx, p, action, bucket)
	if err != nil {
		return nil, err
	}
	if err := ValidKey(key); err != nil {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, err)
	}
	if !p.Can(b.ProjectID, identity.RoleAdmin) {
		return nil, o.id.Deny(ctx, p, action, objectID(bucket, key), b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "only project admins set or release a legal hold"))
	}
	var out Object
	err = o.id.Mutate(ctx, p, action, objectID(bucket, key), b.ProjectID, MsgSetLegalHold,
		setLegalHoldCmd{versionRef: versionRef{ID: objectID(bucket, key), VersionID: versionID, target: targetOf(b)}, On: on}, &out)
	return &out, err
}

// A bucket's configuration: versioning, tags, object lock, CORS, lifecycle.
// Project admins change how a bucket keeps data (versioning, object lock,
// lifecycle); members may tag it and set its CORS rules.

// SetVersioning enables or suspends a bucket's versioning.
func (o *Objects) SetVersioning(ctx context.Context, p *identity.Principal, bucket, status string) (*Bucket, error) {
	return o.configure(ctx, p, "bucket.versioning", bucket, identity.RoleAdmin, MsgSetBucketVersioning, func(t target) any {
		return setVersioningCmd{Bucket: bucket, Status: status, target: t}
	})
}

// SetBucketTags replaces a bucket's tags.
func (o *Objects) SetBucketTags(ctx context.Context, p *identity.Principal, bucket string, tags map[string]string) (*Bucket, error) {
	if err := ValidTags(tags); err != nil {
		return nil, err
	}
	return o.configure(ctx, p, "bucket.tags", bucket, identity.RoleMember, MsgSetBucketTags, func(t target) any {
		return setBucketTagsCmd{Bucket: bucket, Tags: tags, target: t}
	})
}

// SetObjectLockConfig sets a bucket's default retention, enabling object
// lock on a versioned bucket that did not have it (for good).
func (o *Objects) SetObjectLockConfig(ctx context.Context, p *identity.Principal, bucket string, cfg ObjectLockConfig) (*Bucket, error) {
	if cfg.Mode != "" && cfg.Mode != LockGovernance && cfg.Mode != LockCompliance {
		return nil, consensus.Errorf(consensus.CodeInvalid, "retention mode must be GOVERNANCE or COMPLIANCE")
	}
	if cfg.Mode != "" && (cfg.Days > 0) == (cfg.Years > 0) {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a default retention has days or years, not both")
	}
	if cfg.Days < 0 || cfg.Years < 0 || cfg.Days > 36500 || cfg.Years > 100 {
		return nil, consensus.Errorf(consensus.CodeInvalid, "a default retention is 1 to 36500 days or 1 to 100 years")
	}
	return o.configure(ctx, p, "bucket.object-lock", bucket, identity.RoleAdmin, MsgSetObjectLockConfig, func(t target) any {
		return setObjectLockConfigCmd{Bucket: bucket, Config: cfg, target: t}
	})
}

// SetCORS replaces a bucket's CORS rules (nil: none).
func (o *Objects) SetCORS(ctx context.Context, p *identity.Principal, bucket string, rules []CORSRule) (*Bucket, error) {
	return o.configure(ctx, p, "bucket.cors", bucket, identity.RoleMember, MsgSetBucketCORS, func(t target) any {
		return setCORSCmd{Bucket: bucket, Rules: rules, target: t}
	})
}

// SetLifecycle replaces a bucket's lifecycle rules (nil: none).
func (o *Objects) SetLifecycle(ctx context.Context, p *identity.Principal, bucket string, rules []LifecycleRule) (*Bucket, error) {
	return o.configure(ctx, p, "bucket.lifecycle", bucket, identity.RoleAdmin, MsgSetBucketLifecycle, func(t target) any {
		return setLifecycleCmd{Bucket: bucket, Rules: rules, target: t}
	})
}

// configure sends the command build makes for the bucket as it is now.
func (o *Objects) configure(ctx context.Context, p *identity.Principal, action, bucket string, role identity.Role, t consensus.MessageType, build func(target) any) (*Bucket, error) {
	b, err := o.Bucket(ctx, p, bucket)
	if err != nil {
		return nil, o.id.Deny(ctx, p, action, bucket, "", err)
	}
	if !p.Can(b.ProjectID, role) {
		return nil, o.id.Deny(ctx, p, action, bucket, b.ProjectID, consensus.Errorf(consensus.CodeForbidden, "not allowed to change %q's configuration (%s)", bucket, action))
	}
	var out Bucket
	err = o.id.Mutate(ctx, p, action, bucket, b.ProjectID, t, build(targetOf(b)), &out)
	return &out, err
}
