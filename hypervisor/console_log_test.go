package hypervisor

import (
	"os"
	"path/filepath"
	"testing"
)

// TestTailLogAcrossRotation: right after the driver rotated a VM's serial
// log, the log viewer still shows the newest output, from the rotated copy.
func TestTailLogAcrossRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(path+".1", []byte("boot line 1\nboot line 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("login:"), 0o600); err != nil {
		t.Fatal(err)
	}
	for max, want := range map[int64]string{
		4:    "gin:",
		18:   "boot line 2\nlogin:",
		1000: "boot line 1\nboot line 2\nlogin:",
	} {
		got, err := tailLog(path, max)
		if err != nil || string(got) != want {
			t.Errorf("tail %d: %q, %v; want %q", max, got, err, want)
		}
	}
	os.Remove(path + ".1")
	if got, err := tailLog(path, 1000); err != nil || string(got) != "login:" {
		t.Errorf("tail without a rotated copy: %q, %v", got, err)
	}
}
