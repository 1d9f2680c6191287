package nbd

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
)

// TestMinimumBlockSize: an export with a 4 KiB minimum block size makes
// clients ask for block sizes (or refuses them), refuses unaligned
// requests, and QEMU turns unaligned writes into aligned
// read-modify-writes.
func TestMinimumBlockSize(t *testing.T) {
	exp, backing := newFileExport(t, "disk", 1<<20, false, pattern(41))
	exp.MinBlockSize, exp.PreferredBlockSize = 4096, 65536
	ts := startServer(t, DefaultConfig(), exp)
	want := readFile(t, backing)

	out := run(t, "nbdinfo", "--json", unixURI(ts, "disk"))
	var info struct {
		Exports []struct {
			Min  int64 `json:"block_size_minimum"`
			Pref int64 `json:"block_size_preferred"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 || info.Exports[0].Min != 4096 || info.Exports[0].Pref != 65536 {
		t.Fatalf("nbdinfo (%v):\n%s", err, out)
	}

	qemuIO(t, unixURI(ts, "disk"), "write -P 0x33 100 200", "read -P 0x33 100 200", "flush")
	copy(want[100:300], bytes.Repeat([]byte{0x33}, 200))
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("unaligned qemu-io write changed the wrong bytes")
	}

	// GO without asking for block sizes is refused, asking works.
	nc, r := rawConn(t, ts)
	c := &testClient{t: t, nc: nc, r: r}
	nc.Write(fixedFlags)
	goData := func(infos ...uint16) []byte {
		b := binary.BigEndian.AppendUint32(nil, 4)
		b = binary.BigEndian.AppendUint16(append(b, "disk"...), uint16(len(infos)))
		for _, i := range infos {
			b = binary.BigEndian.AppendUint16(b, i)
		}
		return b
	}
	last := func(data []byte) uint32 {
		c.sendOption(optGo, data)
		for {
			typ, _, err := c.readOptionReply(optGo)
			if err != nil {
				t.Fatal(err)
			}
			if typ != repInfo {
				return typ
			}
		}
	}
	if typ := last(goData()); typ != repErrBlockSizeReq {
		t.Fatalf("GO without block sizes: %#x", typ)
	}
	if typ := last(goData(infoBlockSize)); typ != repAck {
		t.Fatalf("GO with block sizes: %#x", typ)
	}
	for i, req := range []request{
		{typ: cmdRead, offset: 100, length: 4096},
		{typ: cmdRead, offset: 4096, length: 100},
		{typ: cmdTrim, offset: 512, length: 4096},
	} {
		req.cookie = uint64(i)
		if errno, _ := c.do(req, nil); errno != errInval {
			t.Errorf("unaligned %s: errno %d", cmdName(req.typ), errno)
		}
	}
	if errno, _ := c.do(request{typ: cmdWrite, cookie: 9, offset: 4096 + 1, length: 10}, make([]byte, 10)); errno != errInval {
		t.Errorf("unaligned write: errno %d", errno)
	}
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("refused requests changed the export")
	}
}
