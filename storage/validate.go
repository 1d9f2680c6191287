package storage

import (
	"strings"
	"unicode/utf8"

	"github.com/cairnhq/cairn/consensus"
)

// S3's limits on what describes an object.
const (
	MaxKeyBytes  = 1024
	MaxMetaBytes = 2048 // user metadata: names and values together
	MaxTags      = 10
	MaxTagKey    = 128 // characters
	MaxTagValue  = 256
)

// ValidKey refuses an object key S3 would refuse, or that the replicated
// state could not keep as it is: keys are UTF-8 (JSON replaces invalid
// bytes, so two keys would become one), 1 to 1024 bytes, and without NUL,
// which separates a key from its version in the state.
func ValidKey(key string) error {
	switch {
	case key == "" || len(key) > MaxKeyBytes:
		return consensus.Errorf(consensus.CodeInvalid, "object keys are 1 to %d bytes", MaxKeyBytes)
	case !utf8.ValidString(key):
		return consensus.Errorf(consensus.CodeInvalid, "object keys must be valid UTF-8")
	case strings.ContainsRune(key, 0):
		return consensus.Errorf(consensus.CodeInvalid, "object keys must not contain NUL")
	}
	return nil
}

// validMeta refuses user metadata over S3's 2 KiB or not in UTF-8.
func validMeta(m map[string]string) error {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return consensus.Errorf(consensus.CodeInvalid, "user metadata must be valid UTF-8")
		}
	}
	if n > MaxMetaBytes {
		return consensus.Reasonf(consensus.CodeInvalid, ReasonMetadataTooLarge, "user metadata is %d bytes; at most %d are allowed", n, MaxMetaBytes)
	}
	return nil
}

// ReasonMetadataTooLarge is S3's MetadataTooLarge.
const ReasonMetadataTooLarge = "metadata_too_large"

// ValidTags refuses a tag set S3 would refuse.
func ValidTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return consensus.Errorf(consensus.CodeInvalid, "at most %d tags are allowed, not %d", MaxTags, len(tags))
	}
	for k, v := range tags {
		switch {
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return consensus.Errorf(consensus.CodeInvalid, "tags must be valid UTF-8")
		case k == "" || utf8.RuneCountInString(k) > MaxTagKey:
			return consensus.Errorf(consensus.CodeInvalid, "tag keys are 1 to %d characters", MaxTagKey)
		case utf8.RuneCountInString(v) > MaxTagValue:
			return consensus.Errorf(consensus.CodeInvalid, "tag values are at most %d characters", MaxTagValue)
		}
	}
	return nil
}
