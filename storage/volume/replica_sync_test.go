package volume

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestReplicaSyncs watches a traced helper's system calls with strace: a
// plain write makes no fdatasync (so the trace can tell), a FUA write
// fdatasyncs after its pwrites, Flush fdatasyncs the three files, Zero
// reaches fallocate. The helper marks each call's span by writing a label
// to /dev/null.
func TestReplicaSyncs(t *testing.T) {
	if os.Getenv("CAIRN_REPLICA_SYNC_HELPER") != "" {
		replicaSyncHelper(t)
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is required (qa/scripts/deps.sh test installs it)")
	}
	logFile := filepath.Join(t.TempDir(), "strace.log")
	cmd := exec.Command(strace, "-f", "-s", "64", "-e", "trace=write,pwrite64,fdatasync,fallocate", "-o", logFile,
		os.Args[0], "-test.run=^TestReplicaSyncs$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CAIRN_REPLICA_SYNC_HELPER=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	span := func(label string) string {
		s := regexp.MustCompile(`(?s)"begin ` + label + `".*?"end ` + label + `"`).FindString(string(log))
		if s == "" {
			t.Fatalf("no span %s in the trace:\n%s", label, log)
		}
		return s
	}
	if s := span("write"); strings.Contains(s, "fdatasync(") || strings.Count(s, "pwrite64(") != 3 {
		t.Errorf("plain write: want three pwrite64 (gens, data, sums) and no fdatasync:\n%s", s)
	}
	if s := span("fua"); !regexp.MustCompile(`(?s)pwrite64\(.*pwrite64\(.*fdatasync\(.*fdatasync\(.*fdatasync\(`).MatchString(s) {
		t.Errorf("FUA write answered without pwrite64 then three fdatasync:\n%s", s)
	}
	if s := span("flush"); strings.Count(s, "fdatasync(") != 3 {
		t.Errorf("flush: want three fdatasync:\n%s", s)
	}
	if s := span("punch"); !strings.Contains(s, "FALLOC_FL_PUNCH_HOLE") {
		t.Errorf("zero with punch did not punch a hole:\n%s", s)
	}
	if s := span("zero"); !strings.Contains(s, "FALLOC_FL_ZERO_RANGE") {
		t.Errorf("zero without punch did not zero a range:\n%s", s)
	}
}

func replicaSyncHelper(t *testing.T) {
	r, _ := newReplica(t, 4*ExtentSize)
	ctx := context.Background()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	p := pattern(1, BlockSize)
	for _, step := range []struct {
		label string
		fn    func() error
	}{
		{"write", func() error { return r.WriteAt(ctx, 0, 1, p, 0, false) }},
		{"fua", func() error { return r.WriteAt(ctx, 0, 2, p, ExtentSize, true) }},
		{"flush", func() error { return r.Flush(ctx, 0) }},
		{"punch", func() error { return r.Zero(ctx, 0, 3, 0, 16*BlockSize, true) }},
		{"zero", func() error { return r.Zero(ctx, 0, 4, 2*ExtentSize, 16*BlockSize, false) }},
	} {
		null.WriteString("begin " + step.label)
		if err := step.fn(); err != nil {
			t.Fatalf("%s: %v", step.label, err)
		}
		null.WriteString("end " + step.label)
	}
}
