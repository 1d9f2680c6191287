package nbd

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests drive the server with real clients: libnbd's nbdinfo and
// nbdcopy, and QEMU's qemu-img and qemu-io. make test installs them
// (qa/scripts/deps.sh test), so a missing one fails the test.

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed (qa/scripts/deps.sh test installs it): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(needTool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func runFail(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(needTool(t, name), args...).CombinedOutput()
	if err == nil {
		t.Fatalf("%s %s succeeded, want a failure:\n%s", name, strings.Join(args, " "), out)
	}
	return string(out)
}

func unixURI(ts *testServer, name string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, ts.sock)
}

func tcpURI(ts *testServer, name string) string { return fmt.Sprintf("nbd://%s/%s", ts.tcp, name) }

func sum(b []byte) [32]byte { return sha256.Sum256(b) }

func TestNbdinfo(t *testing.T) {
	rw, _ := newFileExport(t, "disk", 8<<20, false, nil)
	ro, _ := newFileExport(t, "ro", 1<<20, true, nil)
	ro.MultiConn = false
	ts := startServer(t, DefaultConfig(), rw, ro)

	var info struct {
		Exports []struct {
			Name         string `json:"export-name"`
			Description  string `json:"description"`
			Size         int64  `json:"export-size"`
			ReadOnly     bool   `json:"is_read_only"`
			CanFlush     bool   `json:"can_flush"`
			CanFUA       bool   `json:"can_fua"`
			CanTrim      bool   `json:"can_trim"`
			CanZero      bool   `json:"can_zero"`
			CanMultiConn bool   `json:"can_multi_conn"`
			MinBlock     int64  `json:"block_size_minimum"`
			PrefBlock    int64  `json:"block_size_preferred"`
			MaxBlock     int64  `json:"block_size_maximum"`
		} `json:"exports"`
		Structured bool `json:"structured"`
	}
	out := run(t, "nbdinfo", "--json", unixURI(ts, "disk"))
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo output %v:\n%s", err, out)
	}
	e := info.Exports[0]
	if e.Size != 8<<20 || e.ReadOnly || !e.CanFlush || !e.CanFUA || !e.CanTrim || !e.CanZero || !e.CanMultiConn ||
		e.MinBlock != 1 || e.PrefBlock != 4096 || e.MaxBlock != 32<<20 || e.Description != "test export disk" || !info.Structured {
		t.Errorf("nbdinfo of disk:\n%s", out)
	}

	out = run(t, "nbdinfo", "--json", tcpURI(ts, "ro"))
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo output %v:\n%s", err, out)
	}
	if e := info.Exports[0]; e.Size != 1<<20 || !e.ReadOnly || e.CanTrim || e.CanZero || e.CanFUA || e.CanMultiConn {
		t.Errorf("nbdinfo of ro:\n%s", out)
	}

	out = run(t, "nbdinfo", "--list", "--json", unixURI(ts, ""))
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --list %v:\n%s", err, out)
	}
	var names []string
	for _, e := range info.Exports {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "disk,ro" {
		t.Errorf("listed %v:\n%s", names, out)
	}

	out = runFail(t, "nbdinfo", unixURI(ts, "nope"))
	if !strings.Contains(out, "No such file") {
		t.Errorf("nbdinfo of an unknown export:\n%s", out)
	}
}

// TestNbdcopy copies a pattern into an export and back, over several
// connections (the export advertises multi-conn), on unix and TCP.
func TestNbdcopy(t *testing.T) {
	const size = 12 << 20
	exp, backing := newFileExport(t, "disk", size, false, nil)
	ts := startServer(t, DefaultConfig(), exp)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := make([]byte, size)
	pattern(7)(want)
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}

	run(t, "nbdcopy", "--connections=4", "--requests=16", "--flush", src, unixURI(ts, "disk"))
	if sum(readFile(t, backing)) != sum(want) {
		t.Fatal("backing file differs from what nbdcopy wrote")
	}

	dst := filepath.Join(dir, "dst.img")
	run(t, "nbdcopy", "--connections=4", tcpURI(ts, "disk"), dst)
	if sum(readFile(t, dst)) != sum(want) {
		t.Fatal("nbdcopy read back different bytes")
	}

	// A second pattern over TCP, then one connection back over unix.
	pattern(8)(want)
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "nbdcopy", "--connections=2", src, tcpURI(ts, "disk"))
	if sum(readFile(t, backing)) != sum(want) {
		t.Fatal("backing file differs after the TCP copy")
	}
	run(t, "nbdcopy", "--connections=1", unixURI(ts, "disk"), dst)
	if sum(readFile(t, dst)) != sum(want) {
		t.Fatal("nbdcopy over unix read back different bytes")
	}
}

func TestQemuImg(t *testing.T) {
	const size = 6 << 20
	exp, backing := newFileExport(t, "disk", size, false, nil)
	ts := startServer(t, DefaultConfig(), exp)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	want := make([]byte, size)
	pattern(11)(want)
	clear(want[1<<20 : 2<<20]) // a zero run, which qemu-img may send as zeroes
	if err := os.WriteFile(src, want, 0o600); err != nil {
		t.Fatal(err)
	}

	run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, unixURI(ts, "disk"))
	if sum(readFile(t, backing)) != sum(want) {
		t.Fatal("backing file differs after qemu-img convert to nbd+unix")
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, tcpURI(ts, "disk"))

	dst := filepath.Join(dir, "dst.img")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", tcpURI(ts, "disk"), dst)
	if sum(readFile(t, dst)) != sum(want) {
		t.Fatal("qemu-img convert from nbd:// read different bytes")
	}

	// compare notices a difference made behind its back.
	b := readFile(t, backing)
	b[3<<20] ^= 1
	if err := os.WriteFile(backing, b, 0o600); err != nil {
		t.Fatal(err)
	}
	runFail(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, unixURI(ts, "disk"))
}

func qemuIO(t *testing.T, uri string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, "qemu-io", append(args, uri)...)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed:") {
		t.Fatalf("qemu-io %q:\n%s", cmds, out)
	}
	return out
}

func TestQemuIO(t *testing.T) {
	const size = 4 << 20
	exp, backing := newFileExport(t, "disk", size, false, pattern(3))
	ts := startServer(t, DefaultConfig(), exp)
	want := readFile(t, backing)
	fill := func(off, n int, v byte) {
		for i := off; i < off+n; i++ {
			want[i] = v
		}
	}

	qemuIO(t, unixURI(ts, "disk"),
		"write -P 0xab 0 64k", "read -P 0xab 0 64k", "flush",
		"write -P 0x11 1M 4k", "write -z 128k 64k", "read -P 0 128k 64k",
		"discard 256k 64k")
	fill(0, 64<<10, 0xab)
	fill(1<<20, 4<<10, 0x11)
	fill(128<<10, 64<<10, 0)
	got := readFile(t, backing)
	// A discard leaves unspecified contents: on a file it punches a hole.
	if !bytes.Equal(got[256<<10:320<<10], make([]byte, 64<<10)) {
		t.Error("discarded range of the file is not a hole")
	}
	copy(want[256<<10:320<<10], got[256<<10:320<<10])
	if !bytes.Equal(got, want) {
		t.Fatal("backing file differs from what qemu-io wrote")
	}

	// Many writes in flight at once, then one flush.
	var cmds []string
	for i := range 32 {
		cmds = append(cmds, fmt.Sprintf("aio_write -P 0x%02x %d 64k", 0x40+i, 2<<20+i*(64<<10)))
		fill(2<<20+i*(64<<10), 64<<10, byte(0x40+i))
	}
	cmds = append(cmds, "aio_flush")
	for i := range 32 {
		cmds = append(cmds, fmt.Sprintf("read -P 0x%02x %d 64k", 0x40+i, 2<<20+i*(64<<10)))
	}
	qemuIO(t, tcpURI(ts, "disk"), cmds...)
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("backing file differs after aio writes")
	}

	// A write past the end is refused and changes nothing.
	out := runFail(t, "qemu-io", "-f", "raw", "-c", "write -P 0xee 4092k 8k", unixURI(ts, "disk"))
	if !strings.Contains(out, "write failed") {
		t.Errorf("write past the end:\n%s", out)
	}
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("a refused write changed the backing file")
	}
}

// TestReadOnlyExport: real clients read it; a write is refused by the
// client (it sees NBD_FLAG_READ_ONLY) and by the server (EPERM), and
// nothing changes.
func TestReadOnlyExport(t *testing.T) {
	exp, backing := newFileExport(t, "ro", 1<<20, true, pattern(5))
	ts := startServer(t, DefaultConfig(), exp)
	want := readFile(t, backing)

	dst := filepath.Join(t.TempDir(), "copy.img")
	run(t, "nbdcopy", unixURI(ts, "ro"), dst)
	if !bytes.Equal(readFile(t, dst), want) {
		t.Fatal("nbdcopy read different bytes from the read-only export")
	}
	out, _ := exec.Command(needTool(t, "qemu-io"), "-f", "raw", "-c", "write -P 0x55 0 4k", unixURI(ts, "ro")).CombinedOutput()
	if strings.Contains(string(out), "wrote ") {
		t.Errorf("qemu-io wrote to a read-only export:\n%s", out)
	}

	c := dialTest(t, "unix", ts.sock, "ro", nil)
	if c.flags&tfReadOnly == 0 {
		t.Errorf("flags %#x lack READ_ONLY", c.flags)
	}
	for i, req := range []request{
		{typ: cmdWrite, length: 4096},
		{typ: cmdWrite, flags: cmdFlagFUA, length: 4096},
		{typ: cmdTrim, length: 4096},
		{typ: cmdWriteZeroes, length: 4096},
	} {
		req.cookie = uint64(i)
		var payload []byte
		if req.typ == cmdWrite {
			payload = bytes.Repeat([]byte{0x55}, int(req.length))
		}
		if errno, _ := c.do(req, payload); errno != errPerm {
			t.Errorf("%s on a read-only export: errno %d, want EPERM", cmdName(req.typ), errno)
		}
	}
	if errno, data := c.do(request{typ: cmdRead, cookie: 9, length: 4096}, nil); errno != 0 || !bytes.Equal(data, want[:4096]) {
		t.Errorf("read after refused writes: errno %d", errno)
	}
	if !bytes.Equal(readFile(t, backing), want) {
		t.Fatal("the read-only export changed")
	}
}
