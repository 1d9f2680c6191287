package s3

import (
	"encoding/base64"
	"hash"
	"net/http"

	"github.com/cairnhq/cairn/storage"
)

// summer computes a flexible checksum over bytes Cairn copies itself (copy
// and UploadPartCopy), where no client sent one.
type summer struct {
	algo checksumAlgo
	h    hash.Hash
}

func newSummer(a checksumAlgo) *summer { return &summer{algo: a, h: a.hash()} }

func (s *summer) Write(p []byte) (int, error) { return s.h.Write(p) }

func (s *summer) value() string { return base64.StdEncoding.EncodeToString(s.h.Sum(nil)) }

func (s *summer) checksum() *storage.Checksum {
	return &storage.Checksum{Algorithm: string(s.algo), Value: s.value(), Type: "FULL_OBJECT"}
}

// copyChecksum chooses the checksum of a copy: the algorithm the client
// asks for (x-amz-checksum-algorithm), else the source's, computed anew
// over the whole copy.
func copyChecksum(h http.Header, src *storage.Object) (*summer, *Error) {
	name := h.Get("X-Amz-Checksum-Algorithm")
	if name == "" && src.Checksum != nil {
		name = src.Checksum.Algorithm
	}
	if name == "" {
		return nil, nil
	}
	a, ok := parseChecksumAlgo(name)
	if !ok {
		return nil, errInvalidRequest("unknown checksum algorithm " + name)
	}
	return newSummer(a), nil
}
