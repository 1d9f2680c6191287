package s3

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
)

func checksumOf(a checksumAlgo, b []byte) string {
	h := a.hash()
	h.Write(b)
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func TestChecksumVectors(t *testing.T) {
	// The CRC catalogue's check values over "123456789" (CRC-32/ISO-HDLC,
	// CRC-32/ISCSI, CRC-64/NVME), and the digests of a sentence as the AWS
	// SDK for JavaScript sent them (CRC32, SHA1 and SHA256 also agree with
	// Python's zlib and hashlib).
	check := map[checksumAlgo]string{checksumCRC32: "cbf43926", checksumCRC32C: "e3069283", checksumCRC64NVME: "ae8b14860a799888"}
	fox := map[checksumAlgo]string{
		checksumCRC32: "61DMag==", checksumCRC32C: "mMP6ww==", checksumCRC64NVME: "xSkvqfnNkUs=",
		checksumSHA1: "nATNY3IHfpsR9wyhEcmAfccTfks=", checksumSHA256: "tHzA8QS2LUx8MLzWj9jmdhPih9xK2MMQ7xDLreqcQ4A=",
	}
	for _, a := range checksumAlgos() {
		if want, ok := check[a]; ok {
			h := a.hash()
			h.Write([]byte("123456789"))
			if got := hex.EncodeToString(h.Sum(nil)); got != want {
				t.Errorf("%s check value %s, want %s", a, got, want)
			}
		}
		if got := checksumOf(a, []byte("The quick brown fox jumps over the lazy dog.\n")); got != fox[a] {
			t.Errorf("%s of the sentence: %s, want %s", a, got, fox[a])
		}
		if len(a.hash().Sum(nil)) != a.size() {
			t.Errorf("%s: size %d", a, a.size())
		}
	}
	// The CRC32C of the AWS trailing-header example's 66560 bytes of 'a'.
	if got := checksumOf(checksumCRC32C, bytes.Repeat([]byte("a"), 66560)); got != "sOO8/Q==" {
		t.Errorf("crc32c of the AWS example: %s", got)
	}
}

func TestChecksumNames(t *testing.T) {
	for in, want := range map[string]checksumAlgo{"crc32": checksumCRC32, "CRC32C": checksumCRC32C, "Crc64Nvme": checksumCRC64NVME, "sha1": checksumSHA1, "SHA256": checksumSHA256} {
		if a, ok := parseChecksumAlgo(in); !ok || a != want {
			t.Errorf("parse %q: %q %v", in, a, ok)
		}
	}
	for _, bad := range []string{"", "MD5", "crc", "sha-256", "CRC32 "} {
		if a, ok := parseChecksumAlgo(bad); ok {
			t.Errorf("parse %q: %q", bad, a)
		}
	}
	if checksumCRC64NVME.header() != "x-amz-checksum-crc64nvme" || checksumSHA256.header() != "x-amz-checksum-sha256" {
		t.Error("header names")
	}
	if !checksumCRC32.isCRC() || !checksumCRC64NVME.isCRC() || checksumSHA1.isCRC() || checksumSHA256.isCRC() {
		t.Error("isCRC")
	}
	for v, ok := range map[string]bool{"61DMag==": true, "61DMag": false, "61DMah==": false, "xSkvqfnNkUs=": false, " 61DMag==": false} {
		if _, got := checksumCRC32.decode(v); got != ok {
			t.Errorf("decode %q: %v", v, got)
		}
	}
}

func TestCombineCRCMatchesWholeObject(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, a := range checksumAlgos() {
		if !a.isCRC() {
			if _, err := combineCRC(a, nil, nil); err == nil {
				t.Errorf("%s combined", a)
			}
			continue
		}
		for trial := range 40 {
			n := 1 + rng.IntN(6)
			var whole []byte
			var parts [][]byte
			var sizes []int64
			for range n {
				size := rng.IntN(3000)
				switch rng.IntN(4) {
				case 0:
					size = 0
				case 1:
					size = 1 + rng.IntN(8)
				}
				b := make([]byte, size)
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				h := a.hash()
				h.Write(b)
				parts, sizes, whole = append(parts, h.Sum(nil)), append(sizes, int64(size)), append(whole, b...)
			}
			got, err := combineCRC(a, parts, sizes)
			if err != nil {
				t.Fatal(err)
			}
			h := a.hash()
			h.Write(whole)
			if want := h.Sum(nil); !bytes.Equal(got, want) {
				t.Fatalf("%s trial %d sizes %v: combined %x, whole %x", a, trial, sizes, got, want)
			}
		}
		// A large part exercises the squaring: 1 MiB of zeros is not 1 MiB of ones.
		big := bytes.Repeat([]byte{0xff}, 1<<20)
		ha, hb := a.hash(), a.hash()
		ha.Write([]byte("head"))
		hb.Write(big)
		got, _ := combineCRC(a, [][]byte{ha.Sum(nil), hb.Sum(nil)}, []int64{4, 1 << 20})
		h := a.hash()
		h.Write(append([]byte("head"), big...))
		if !bytes.Equal(got, h.Sum(nil)) {
			t.Errorf("%s: 1 MiB part", a)
		}
		if _, err := combineCRC(a, [][]byte{{1, 2}}, []int64{2}); err == nil {
			t.Errorf("%s: a short checksum combined", a)
		}
		if _, err := combineCRC(a, [][]byte{make([]byte, a.size())}, nil); err == nil {
			t.Errorf("%s: missing sizes combined", a)
		}
		if got, err := combineCRC(a, nil, nil); err != nil || !bytes.Equal(got, make([]byte, a.size())) {
			t.Errorf("%s: no parts: %x %v", a, got, err)
		}
	}
}

func TestCompositeChecksum(t *testing.T) {
	p1, p2 := []byte{0xde, 0xad, 0xbe, 0xef}, []byte{0x01, 0x02, 0x03, 0x04}
	// base64(CRC32(de ad be ef 01 02 03 04)) + "-2", computed separately with Python's zlib.
	if got := compositeChecksum(checksumCRC32, [][]byte{p1, p2}); got != "TfUPMw==-2" {
		t.Errorf("composite: %s", got)
	}
	if got := compositeChecksum(checksumSHA256, [][]byte{p1}); !strings.HasSuffix(got, "-1") || got == compositeChecksum(checksumSHA256, [][]byte{p2}) {
		t.Errorf("composite sha256: %s", got)
	}
}

func TestChecksumDeclaration(t *testing.T) {
	crc := checksumOf(checksumCRC32, []byte("x"))
	sha := checksumOf(checksumSHA256, []byte("x"))
	for _, c := range []struct {
		name    string
		hdr     map[string]string
		trailer bool
		algo    checksumAlgo
		value   string
		code    string
	}{
		{"none", nil, false, "", "", ""},
		{"value", map[string]string{"X-Amz-Checksum-Crc32": crc}, false, checksumCRC32, crc, ""},
		{"value and sdk name", map[string]string{"X-Amz-Checksum-Crc32": crc, "X-Amz-Sdk-Checksum-Algorithm": "crc32"}, false, checksumCRC32, crc, ""},
		{"name only", map[string]string{"X-Amz-Checksum-Algorithm": "SHA256"}, false, checksumSHA256, "", ""},
		{"trailer", map[string]string{"X-Amz-Trailer": "x-amz-checksum-crc32", "X-Amz-Sdk-Checksum-Algorithm": "CRC32"}, true, checksumCRC32, "", ""},
		{"checksum type is not a checksum", map[string]string{"X-Amz-Checksum-Type": "FULL_OBJECT"}, false, "", "", ""},
		{"two values", map[string]string{"X-Amz-Checksum-Crc32": crc, "X-Amz-Checksum-Sha256": sha}, false, "", "", "InvalidRequest"},
		{"value and trailer", map[string]string{"X-Amz-Checksum-Crc32": crc, "X-Amz-Trailer": "x-amz-checksum-crc32"}, true, "", "", "InvalidRequest"},
		{"trailer without trailer body", map[string]string{"X-Amz-Trailer": "x-amz-checksum-crc32"}, false, "", "", "InvalidRequest"},
		{"unknown trailer", map[string]string{"X-Amz-Trailer": "x-amz-meta-foo"}, true, "", "", "InvalidRequest"},
		{"names disagree", map[string]string{"X-Amz-Checksum-Crc32": crc, "X-Amz-Sdk-Checksum-Algorithm": "SHA256"}, false, "", "", "InvalidRequest"},
		{"unknown name", map[string]string{"X-Amz-Sdk-Checksum-Algorithm": "MD5"}, false, "", "", "InvalidRequest"},
		{"bad value", map[string]string{"X-Amz-Checksum-Crc32": sha}, false, "", "", "InvalidRequest"},
	} {
		h := http.Header{}
		for k, v := range c.hdr {
			h.Set(k, v)
		}
		d, err := parseChecksumDecl(h, c.trailer)
		switch {
		case c.code != "":
			if err == nil || err.Code != c.code || err.Status != http.StatusBadRequest {
				t.Errorf("%s: %v", c.name, err)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case d.algo != c.algo || d.value != c.value || d.trailer != (c.hdr["X-Amz-Trailer"] != ""):
			t.Errorf("%s: %+v", c.name, d)
		}
	}
}
