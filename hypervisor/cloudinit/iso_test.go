package cloudinit

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := testKey(t, "one"), testKey(t, "two")
	tests := []struct {
		name string
		seed Seed
		// wantUserData is the user-data read back, when not seed.UserData.
		wantUserData string
	}{
		{"generated user-data", Seed{InstanceID: "iid-t1", Hostname: "t1", SSHKeys: []string{k1, k2}},
			"#cloud-config\nssh_authorized_keys:\n    - " + k1 + "\n    - " + k2 + "\n"},
		{"no keys", Seed{InstanceID: "i", Hostname: "t2"}, "#cloud-config\n"},
		{"everything", Seed{InstanceID: "iid-3", Hostname: "vm3.example.org", SSHKeys: []string{k1},
			UserData:      []byte("#!/bin/sh\necho hi\n"),
			NetworkConfig: []byte("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".iso")
			if err := tt.seed.WriteISO(path); err != nil {
				t.Fatal(err)
			}
			got, err := ReadISO(path)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.seed
			if tt.wantUserData != "" {
				want.UserData = []byte(tt.wantUserData)
			}
			if len(want.NetworkConfig) == 0 {
				want.NetworkConfig = nil
			}
			if len(got.NetworkConfig) == 0 {
				got.NetworkConfig = nil
			}
			if !reflect.DeepEqual(*got, want) {
				t.Fatalf("read back\n%+v\nwant\n%+v", *got, want)
			}
		})
	}
}

func TestWriteISODeterministicAndAtomic(t *testing.T) {
	dir := t.TempDir()
	s := Seed{InstanceID: "iid-1", Hostname: "a", SSHKeys: []string{testKey(t, "k")}}
	a, b := filepath.Join(dir, "a.iso"), filepath.Join(dir, "b.iso")
	if err := s.WriteISO(a); err != nil {
		t.Fatal(err)
	}
	// Cross a second boundary: the clock must not reach the image, and the
	// files' inode change times (which nothing can set) once did.
	for start := time.Now().Unix(); time.Now().Unix() == start; {
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.WriteISO(b); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if !bytes.Equal(ba, bb) {
		t.Error("two writes of one seed differ")
	}
	// A rejected seed leaves the old file and no temporary one.
	bad := s
	bad.Hostname = "no_such"
	if err := bad.WriteISO(a); err == nil {
		t.Fatal("WriteISO of an invalid seed succeeded")
	}
	if got, _ := os.ReadFile(a); !bytes.Equal(got, ba) {
		t.Error("a failed write changed the file")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".seed-*")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

func TestReadISORejectsOtherLabels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.iso")
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadISO(path); err == nil || !strings.Contains(err.Error(), "not an ISO9660") {
		t.Fatalf("ReadISO of zeros = %v", err)
	}
}

// TestISOWithIndependentReaders checks the image with tools that share no
// code with go-diskfs: blkid (util-linux) for the label and type, isoinfo
// (genisoimage) for the Rock Ridge and Joliet names and the contents.
func TestISOWithIndependentReaders(t *testing.T) {
	for _, tool := range []string{"blkid", "isoinfo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (Debian packages util-linux, genisoimage): %v", tool, err)
		}
	}
	path := filepath.Join(t.TempDir(), "seed.iso")
	s := Seed{InstanceID: "iid-t1", Hostname: "t1", SSHKeys: []string{testKey(t, "k")},
		NetworkConfig: []byte("version: 2\n")}
	if err := s.WriteISO(path); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("blkid", "-p", "-o", "export", path).CombinedOutput()
	if err != nil {
		t.Fatalf("blkid: %v\n%s", err, out)
	}
	for _, want := range []string{"LABEL=cidata", "TYPE=iso9660"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("blkid says\n%s\nwant %s", out, want)
		}
	}
	for _, ext := range []string{"-R", "-J"} {
		out, err := exec.Command("isoinfo", ext, "-f", "-i", path).CombinedOutput()
		if err != nil {
			t.Fatalf("isoinfo %s -f: %v\n%s", ext, err, out)
		}
		if got, want := strings.Fields(string(out)), []string{"/meta-data", "/network-config", "/user-data"}; !reflect.DeepEqual(got, want) {
			t.Errorf("isoinfo %s lists %q, want %q", ext, got, want)
		}
	}
	md, err := exec.Command("isoinfo", "-R", "-x", "/meta-data", "-i", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "instance-id: iid-t1\nlocal-hostname: t1\npublic-keys:\n    - " + s.SSHKeys[0] + "\n"
	if string(md) != want {
		t.Errorf("meta-data is\n%s\nwant\n%s", md, want)
	}
}
