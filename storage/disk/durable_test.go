package disk

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A shard's directory entry is durable only once its directory is fsynced,
// and the directory's own entry once its parent is: a directory created for
// a new shard must be fsynced into its parent, or a crash can lose the
// directory and every shard in it. The test watches the system calls of a
// commit into a new directory with strace.
func TestNewShardDirectoryIsSyncedIntoItsParent(t *testing.T) {
	if dir := os.Getenv("CAIRN_DISK_COMMIT_DIR"); dir != "" {
		commitOneShard(t, dir)
		return
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Fatal("strace is required (apt-get install strace, or qa/scripts/deps.sh test)")
	}
	dir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "strace.log")
	cmd := exec.Command(strace, "-f", "-e", "trace=mkdirat,mkdir,openat,fsync,fdatasync", "-o", logFile,
		os.Args[0], "-test.run=^TestNewShardDirectoryIsSyncedIntoItsParent$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CAIRN_DISK_COMMIT_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	shards := filepath.Join(dir, "shards")
	mkdir := regexp.MustCompile(`mkdirat\(AT_FDCWD, "` + regexp.QuoteMeta(shards) + `/[0-9a-f]{2}"`)
	open := regexp.MustCompile(`openat\(AT_FDCWD, "` + regexp.QuoteMeta(shards) + `", [^)]*\) = (\d+)`)
	lines := strings.Split(string(log), "\n")
	for i, l := range lines {
		if !mkdir.MatchString(l) {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if m := open.FindStringSubmatch(lines[j]); m != nil {
				for k := j + 1; k < len(lines); k++ {
					if strings.Contains(lines[k], "fsync("+m[1]+")") {
						return
					}
				}
			}
		}
		t.Fatalf("the new shard directory was not fsynced into %s:\n%s", shards, strings.Join(lines[i:], "\n"))
	}
	t.Fatalf("no shard directory was created:\n%s", log)
}

// commitOneShard is the traced helper: one shard into a fresh disk.
func commitOneShard(t *testing.T, dir string) {
	s, err := openNew(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Create("obj.0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("shard")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}
