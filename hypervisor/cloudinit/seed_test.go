package cloudinit

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// testKey returns a fresh OpenSSH public key line.
func testKey(t *testing.T, comment string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " " + comment
}

func TestValidate(t *testing.T) {
	key := testKey(t, "a@b")
	ok := Seed{InstanceID: "iid-1", Hostname: "vm-1.example.org", SSHKeys: []string{key}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid seed: %v", err)
	}
	for _, ud := range []string{
		"#cloud-config\npackages: [curl]\n",
		"#cloud-config\r\nhostname: x\r\n",
		"#cloud-config\n",
		"#!/bin/sh\necho hi\n",
		"Content-Type: multipart/mixed; boundary=x\n\n--x--\n",
		"#include\nhttps://example.org/ud\n",
		"#cloud-boothook\n#!/bin/sh\n",
	} {
		s := ok
		s.UserData = []byte(ud)
		if err := s.Validate(); err != nil {
			t.Errorf("user-data %q: %v", ud, err)
		}
	}

	tests := []struct {
		name string
		edit func(*Seed)
		want string
	}{
		{"no instance id", func(s *Seed) { s.InstanceID = "" }, "instance-id: empty"},
		{"no hostname", func(s *Seed) { s.Hostname = "" }, "hostname: empty"},
		{"underscore", func(s *Seed) { s.Hostname = "vm_1" }, `hostname "vm_1": only letters`},
		{"leading hyphen", func(s *Seed) { s.Hostname = "-vm" }, "may not start or end with a hyphen"},
		{"long label", func(s *Seed) { s.Hostname = strings.Repeat("a", 64) }, "1 to 63 characters"},
		{"empty label", func(s *Seed) { s.Hostname = "a..b" }, "1 to 63 characters"},
		{"bad key", func(s *Seed) { s.SSHKeys = []string{key, "ssh-rsa AAAAnope"} }, "ssh key 2: not an OpenSSH public key"},
		{"two keys in one", func(s *Seed) { s.SSHKeys = []string{key + "\n" + key} }, "ssh key 1: more than one line"},
		{"plain text", func(s *Seed) { s.UserData = []byte("hello world\n") }, `user-data: not a cloud-init document: it starts with "hello world"`},
		{"cloud-config typo", func(s *Seed) { s.UserData = []byte("#cloud-confg\na: 1\n") }, "user-data: not a cloud-init document"},
		{"bad yaml", func(s *Seed) { s.UserData = []byte("#cloud-config\na: 1\nb: [\n") }, "user-data: #cloud-config is not valid YAML: line 3"},
		{"yaml list", func(s *Seed) { s.UserData = []byte("#cloud-config\n- a\n") }, "user-data: #cloud-config is not a YAML mapping"},
		{"too big", func(s *Seed) { s.UserData = []byte("#!/bin/sh\n" + strings.Repeat("#", MaxUserData)) }, "more than the 65536-byte limit"},
		{"bad network", func(s *Seed) { s.NetworkConfig = []byte("version: 2\n  ethernets: x\n") }, "network-config: not valid YAML: line 2"},
		{"network scalar", func(s *Seed) { s.NetworkConfig = []byte("dhcp\n") }, "network-config: not a YAML mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ok
			tt.edit(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
