package scribble

import (
	"bytes"
	"strings"
	"testing"
)

// disk is a scribbled disk of n blocks with records 1..k.
func disk(n, k int, serial string) []byte {
	d := make([]byte, n*BlockSize)
	copy(d, Magic())
	for s := 1; s <= k; s++ {
		copy(d[s*BlockSize:], Record(uint64(s), serial))
	}
	return d
}

func TestCheck(t *testing.T) {
	for _, k := range []int{0, 1, 57} {
		d := disk(100, k, "vol-0123456789abcdef")
		last, err := Check(bytes.NewReader(d), int64(len(d)))
		if err != nil || last != uint64(k) {
			t.Errorf("k=%d: last = %d, %v", k, last, err)
		}
	}
	// Full: every block of a disk too small for MaxRecords.
	d := disk(10, 9, "s")
	if last, err := Check(bytes.NewReader(d), int64(len(d))); err != nil || last != 9 {
		t.Errorf("full disk: last = %d, %v", last, err)
	}
}

func TestCheckRejects(t *testing.T) {
	cases := map[string]func(d []byte){
		"no magic":      func(d []byte) { d[0] = 'x' },
		"torn record":   func(d []byte) { copy(d[11*BlockSize:], Record(11, "s")[:2048]) },
		"flipped bit":   func(d []byte) { d[5*BlockSize+100] ^= 1 },
		"gap":           func(d []byte) { copy(d[12*BlockSize:], Record(12, "s")) },
		"wrong seq":     func(d []byte) { copy(d[11*BlockSize:], Record(12, "s")) },
		"other serial":  func(d []byte) { copy(d[11*BlockSize:], Record(11, "t")) },
		"junk after":    func(d []byte) { d[40*BlockSize+7] = 1 },
		"stale old rec": func(d []byte) { copy(d[3*BlockSize:], Record(3, "s")[:BlockSize-1]); d[4*BlockSize-1] = 0 },
	}
	for name, spoil := range cases {
		d := disk(50, 10, "s")
		spoil(d)
		if last, err := Check(bytes.NewReader(d), int64(len(d))); err == nil {
			t.Errorf("%s: accepted, last %d", name, last)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 40)
	seq, serial, ok := ParseRecord(Record(16384, long))
	if !ok || seq != 16384 || serial != long[:SerialSize] {
		t.Errorf("parse = %d %q %v", seq, serial, ok)
	}
}
