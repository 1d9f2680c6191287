package nbd

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestFileBackendSyncs watches the system calls of a traced helper with
// strace: a plain write is answered without fdatasync (which proves the
// trace can tell), a FUA write and a FLUSH only after one; TRIM and
// WRITE_ZEROES reach fallocate. The helper marks each request's span by
// writing a label to /dev/null before sending it and after its reply.
func TestFileBackendSyncs(t *testing.T) {
	if os.Getenv("CAIRN_NBD_SYNC_HELPER") != "" {
		syncHelper(t)
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is required (qa/scripts/deps.sh test installs it)")
	}
	logFile := t.TempDir() + "/strace.log"
	cmd := exec.Command(strace, "-f", "-s", "64", "-e", "trace=write,pwrite64,fdatasync,fallocate", "-o", logFile,
		os.Args[0], "-test.run=^TestFileBackendSyncs$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CAIRN_NBD_SYNC_HELPER=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	log := readFile(t, logFile)
	span := func(label string) string {
		re := regexp.MustCompile(`(?s)"begin ` + label + `".*?"end ` + label + `"`)
		s := re.FindString(string(log))
		if s == "" {
			t.Fatalf("no span %s in the trace:\n%s", label, log)
		}
		return s
	}
	if s := span("write"); strings.Contains(s, "fdatasync(") || !strings.Contains(s, "pwrite64(") {
		t.Errorf("plain write: want a pwrite64 and no fdatasync:\n%s", s)
	}
	if s := span("fua"); !regexp.MustCompile(`(?s)pwrite64\(.*fdatasync\(`).MatchString(s) {
		t.Errorf("FUA write answered without pwrite64 then fdatasync:\n%s", s)
	}
	if s := span("flush"); !strings.Contains(s, "fdatasync(") {
		t.Errorf("FLUSH answered without fdatasync:\n%s", s)
	}
	if s := span("trim"); !strings.Contains(s, "fallocate(") {
		t.Errorf("TRIM did not punch a hole:\n%s", s)
	}
	if s := span("zeroes"); !strings.Contains(s, "FALLOC_FL_ZERO_RANGE") {
		t.Errorf("WRITE_ZEROES with NO_HOLE did not zero a range:\n%s", s)
	}
}

func syncHelper(t *testing.T) {
	exp, _ := newFileExport(t, "disk", 1<<20, false, nil)
	ts := startServer(t, DefaultConfig(), exp)
	c := dialTest(t, "unix", ts.sock, "disk", nil)
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	payload := make([]byte, 4096)
	for i, step := range []struct {
		label string
		req   request
	}{
		{"write", request{typ: cmdWrite, length: 4096}},
		{"fua", request{typ: cmdWrite, flags: cmdFlagFUA, offset: 8192, length: 4096}},
		{"flush", request{typ: cmdFlush}},
		{"trim", request{typ: cmdTrim, offset: 65536, length: 65536}},
		{"zeroes", request{typ: cmdWriteZeroes, flags: cmdFlagNoHole, offset: 131072, length: 65536}},
	} {
		step.req.cookie = uint64(i)
		var p []byte
		if step.req.typ == cmdWrite {
			p = payload
		}
		null.WriteString("begin " + step.label)
		if errno, _ := c.do(step.req, p); errno != 0 {
			t.Fatalf("%s: errno %d", step.label, errno)
		}
		null.WriteString("end " + step.label)
	}
}
