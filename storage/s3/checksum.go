package s3

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"net/http"
	"strconv"
	"strings"
)

// S3's flexible checksums: a client may declare one of five digests of the
// object, as base64 of the big-endian digest, in a header or a trailer.

// checksumAlgo names a flexible checksum the way S3 spells it in
// x-amz-checksum-algorithm.
type checksumAlgo string

const (
	checksumCRC32     checksumAlgo = "CRC32"
	checksumCRC32C    checksumAlgo = "CRC32C"
	checksumCRC64NVME checksumAlgo = "CRC64NVME"
	checksumSHA1      checksumAlgo = "SHA1"
	checksumSHA256    checksumAlgo = "SHA256"
)

// crc64NVMEPoly is CRC-64/NVME's polynomial 0xad93d23594c93659 bit-reversed,
// the form hash/crc64 takes; its complemented start and finish are the
// algorithm's init and xorout.
const crc64NVMEPoly = 0x9a6c9329ac4bc9b5

// checksumAlgos lists every algorithm, in a fixed order (a function, so that
// no caller can change the list).
func checksumAlgos() []checksumAlgo {
	return []checksumAlgo{checksumCRC32, checksumCRC32C, checksumCRC64NVME, checksumSHA1, checksumSHA256}
}

// parseChecksumAlgo reads an algorithm name, in any case.
func parseChecksumAlgo(s string) (checksumAlgo, bool) {
	for _, a := range checksumAlgos() {
		if strings.EqualFold(s, string(a)) {
			return a, true
		}
	}
	return "", false
}

// hash returns a new digest for the algorithm; its Sum is the big-endian
// value S3 encodes.
func (a checksumAlgo) hash() hash.Hash {
	switch a {
	case checksumCRC32:
		return crc32.NewIEEE()
	case checksumCRC32C:
		return crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case checksumCRC64NVME:
		return crc64.New(crc64.MakeTable(crc64NVMEPoly))
	case checksumSHA1:
		return sha1.New()
	case checksumSHA256:
		return sha256.New()
	}
	panic("s3: unknown checksum algorithm " + string(a))
}

// header is the request and response header that carries the value.
func (a checksumAlgo) header() string { return "x-amz-checksum-" + strings.ToLower(string(a)) }

// isCRC tells the algorithms whose values combine across parts (FULL_OBJECT).
func (a checksumAlgo) isCRC() bool {
	return a == checksumCRC32 || a == checksumCRC32C || a == checksumCRC64NVME
}

// size is the digest's length in bytes.
func (a checksumAlgo) size() int {
	switch a {
	case checksumCRC32, checksumCRC32C:
		return 4
	case checksumCRC64NVME:
		return 8
	case checksumSHA1:
		return sha1.Size
	case checksumSHA256:
		return sha256.Size
	}
	return 0
}

// decode reads a base64 value of the algorithm's length; S3 takes nothing
// else, so neither do we.
func (a checksumAlgo) decode(v string) ([]byte, bool) {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) != a.size() || base64.StdEncoding.EncodeToString(b) != v {
		return nil, false
	}
	return b, true
}

// compositeChecksum is S3's COMPOSITE multipart checksum: base64(H(raw1||raw2||...)) + "-N".
func compositeChecksum(a checksumAlgo, parts [][]byte) string {
	h := a.hash()
	for _, p := range parts {
		h.Write(p)
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)) + "-" + strconv.Itoa(len(parts))
}

// combineCRC is S3's FULL_OBJECT multipart checksum for CRC algorithms: the CRC of the
// whole object computed from the parts' CRCs and sizes (zlib's crc32_combine method,
// generalised to 64 bits).
func combineCRC(a checksumAlgo, parts [][]byte, sizes []int64) ([]byte, error) {
	var c crcPoly
	switch a {
	case checksumCRC32:
		c = crcPoly{poly: crc32.IEEE, width: 32}
	case checksumCRC32C:
		c = crcPoly{poly: crc32.Castagnoli, width: 32}
	case checksumCRC64NVME:
		c = crcPoly{poly: crc64NVMEPoly, width: 64}
	default:
		return nil, fmt.Errorf("combine checksums: %s is not a crc", a)
	}
	if len(parts) != len(sizes) {
		return nil, fmt.Errorf("combine %s: %d checksums for %d sizes", a, len(parts), len(sizes))
	}
	n := int(c.width / 8)
	var crc uint64 // the CRC of no bytes at all is zero for these algorithms
	for i, p := range parts {
		if len(p) != n {
			return nil, fmt.Errorf("combine %s: part %d: checksum of %d bytes, want %d", a, i+1, len(p), n)
		}
		if sizes[i] < 0 {
			return nil, fmt.Errorf("combine %s: part %d: negative size", a, i+1)
		}
		var v uint64
		if n == 4 {
			v = uint64(binary.BigEndian.Uint32(p))
		} else {
			v = binary.BigEndian.Uint64(p)
		}
		crc = c.mul(c.xPow8n(uint64(sizes[i])), crc) ^ v
	}
	out := make([]byte, n)
	if n == 4 {
		binary.BigEndian.PutUint32(out, uint32(crc))
	} else {
		binary.BigEndian.PutUint64(out, crc)
	}
	return out, nil
}

// crcPoly is a reflected CRC polynomial: bit width-1 holds x^0. With the
// init and xorout all ones (every algorithm here), crc(A||B) is
// crc(A)·x^(8·len(B)) + crc(B) modulo the polynomial, which is what zlib
// computes; only the multiplication needs the polynomial.
type crcPoly struct {
	poly  uint64
	width uint
}

// mul returns a·b modulo the polynomial.
func (c crcPoly) mul(a, b uint64) uint64 {
	var p uint64
	for m := uint64(1) << (c.width - 1); m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
		}
		if b&1 != 0 {
			b = b>>1 ^ c.poly
		} else {
			b >>= 1
		}
	}
	return p
}

// xPow8n returns x^(8n) modulo the polynomial, by squaring: O(log n).
func (c crcPoly) xPow8n(n uint64) uint64 {
	p := uint64(1) << (c.width - 1)  // x^0
	sq := uint64(1) << (c.width - 2) // x^1
	for range 3 {
		sq = c.mul(sq, sq) // x^8 after three squarings
	}
	for ; n != 0; n >>= 1 {
		if n&1 != 0 {
			p = c.mul(p, sq)
		}
		sq = c.mul(sq, sq)
	}
	return p
}

// checksumDecl is the flexible checksum a request declares, if any.
type checksumDecl struct {
	algo    checksumAlgo // "" when none is declared
	value   string       // the header's base64 value; "" for a trailer or a bare algorithm
	trailer bool         // the value comes in the aws-chunked trailer
}

// parseChecksumDecl reads the checksum headers of a request: at most one
// value (x-amz-checksum-ALGO, or x-amz-trailer naming one when the body may
// carry a trailer), and algorithm names (x-amz-sdk-checksum-algorithm,
// x-amz-checksum-algorithm) that must agree with it.
func parseChecksumDecl(h http.Header, trailerAllowed bool) (checksumDecl, *Error) {
	var d checksumDecl
	for _, a := range checksumAlgos() {
		vs := h.Values(a.header())
		if len(vs) == 0 {
			continue
		}
		if d.algo != "" {
			return d, errInvalidRequest("expecting a single x-amz-checksum- header; multiple checksum types are not allowed")
		}
		if len(vs) > 1 {
			return d, errInvalidRequest("value for " + a.header() + " header is invalid")
		}
		if _, ok := a.decode(vs[0]); !ok {
			return d, errInvalidRequest("value for " + a.header() + " header is invalid")
		}
		d.algo, d.value = a, vs[0]
	}
	if t := strings.TrimSpace(h.Get("X-Amz-Trailer")); t != "" {
		a, ok := trailerAlgo(t)
		switch {
		case !trailerAllowed:
			return d, errInvalidRequest("x-amz-trailer needs an aws-chunked body with a trailer (x-amz-content-sha256 STREAMING-...-TRAILER)")
		case !ok:
			return d, errInvalidRequest("x-amz-trailer " + t + " is not supported: name one x-amz-checksum- header")
		case d.algo != "":
			return d, errInvalidRequest("expecting a single x-amz-checksum- header; multiple checksum types are not allowed")
		}
		d.algo, d.trailer = a, true
	}
	for _, name := range []string{"X-Amz-Sdk-Checksum-Algorithm", "X-Amz-Checksum-Algorithm"} {
		v := h.Get(name)
		if v == "" {
			continue
		}
		a, ok := parseChecksumAlgo(v)
		switch {
		case !ok:
			return d, errInvalidRequest("value for " + strings.ToLower(name) + " header is invalid")
		case d.algo == "":
			d.algo = a
		case d.algo != a:
			return d, errInvalidRequest(strings.ToLower(name) + " is " + string(a) + " but the checksum sent is " + string(d.algo))
		}
	}
	return d, nil
}

// trailerAlgo reads x-amz-trailer: the name of one checksum header.
func trailerAlgo(t string) (checksumAlgo, bool) {
	name, ok := strings.CutPrefix(strings.ToLower(t), "x-amz-checksum-")
	if !ok {
		return "", false
	}
	return parseChecksumAlgo(name)
}
