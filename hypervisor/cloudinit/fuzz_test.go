package cloudinit

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Whatever a user types into the create-VM form, Validate either refuses
// it or the seed a guest reads back is exactly what was accepted: the
// instance-id, host name and keys survive meta-data's YAML, and a key
// cannot add anything to the #cloud-config generated around it.
func FuzzSeed(f *testing.F) {
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb8fAwPh6CtzChxYAbLzsVhaDU9MBPuq0RgCZ3ikz2X"
	f.Add("iid-1", "vm1", key+" alice@ward", []byte(""), []byte(""))
	f.Add("i: d", "vm1.example.org", `command="echo: hi",no-pty `+key+` "#x: y"`, []byte("#cloud-config\nusers: []\n"), []byte("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"))
	f.Add("'\"", "a-b", key+" - ]{", []byte("#!/bin/sh\necho hi\n"), []byte("network: {config: disabled}\n"))
	f.Add("0", "h", key+"\n", []byte("Content-Type: multipart/mixed\n"), []byte("version: 1\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, id, host, k string, userData, netConf []byte) {
		s := Seed{InstanceID: id, Hostname: host, SSHKeys: []string{k}, UserData: userData, NetworkConfig: netConf}
		if s.Validate() != nil {
			return
		}
		path := filepath.Join(dir, "seed.iso")
		if err := s.WriteISO(path); err != nil {
			t.Fatalf("a valid seed is not written: %v", err)
		}
		got, err := ReadISO(path)
		if err != nil {
			t.Fatalf("a written seed is not read: %v", err)
		}
		if len(got.SSHKeys) != 1 || strings.TrimSpace(got.SSHKeys[0]) != strings.TrimSpace(k) {
			t.Fatalf("keys read back as %q, want %q", got.SSHKeys, k)
		}
		if got.InstanceID != id || got.Hostname != host {
			t.Fatalf("meta-data read back as %q %q, want %q %q", got.InstanceID, got.Hostname, id, host)
		}
		if !bytes.Equal(got.NetworkConfig, netConf) {
			t.Fatalf("network-config read back as %q, want %q", got.NetworkConfig, netConf)
		}
		if len(userData) > 0 {
			if !bytes.Equal(got.UserData, userData) {
				t.Fatalf("user-data read back as %q, want %q", got.UserData, userData)
			}
			return
		}
		var cfg map[string]any
		if err := yaml.Unmarshal(got.UserData, &cfg); err != nil {
			t.Fatalf("the generated #cloud-config is not YAML: %v\n%s", err, got.UserData)
		}
		want := map[string]any{"ssh_authorized_keys": []any{got.SSHKeys[0]}}
		if !reflect.DeepEqual(cfg, want) {
			t.Fatalf("the generated #cloud-config for key %q is %v, want only that key", k, cfg)
		}
	})
}
