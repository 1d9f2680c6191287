//go:build linux

package main

import "testing"

func TestWantsEFIBoots(t *testing.T) {
	for _, c := range []struct {
		userData string
		want     bool
	}{
		{"#cloud-config\n# cairn-guest efiboots\n", true},
		{"#cloud-config\n#cairn-guest efiboots", true},
		{"  # cairn-guest   efiboots  \r\n", true},
		{"#cloud-config\n# cairn-guest memcheck 32\n# cairn-guest efiboots\n", true},
		{"", false},
		{"#cloud-config\n", false},
		{"# cairn-guest efiboots 2\n", false},
		{"# cairn-guest efiboot\n", false},
		{"# efiboots\n", false},
		{"runcmd: [cairn-guest efiboots]\n", false},
	} {
		if got := wantsEFIBoots([]byte(c.userData)); got != c.want {
			t.Errorf("wantsEFIBoots(%q) = %v, want %v", c.userData, got, c.want)
		}
	}
}

func TestWantsEFITick(t *testing.T) {
	for userData, want := range map[string]bool{
		"#cloud-config\n# cairn-guest efitick\n":                       true,
		"#cloud-config\n# cairn-guest efiboots\n# cairn-guest efitick": true,
		"#cloud-config\n# cairn-guest efiboots\n":                      false,
		"# cairn-guest efitick 5\n":                                    false,
	} {
		if got := wantsEFITick([]byte(userData)); got != want {
			t.Errorf("wantsEFITick(%q) = %v, want %v", userData, got, want)
		}
	}
}

func TestIsEFIBootVar(t *testing.T) {
	for _, c := range []struct {
		name string
		want bool
	}{
		{efiBootVar(1), true},
		{efiBootVar(12), true},
		{"CairnBoot3-6d1c7e0a-3c2b-4b8e-9f1d-2a5e0c4b7d11", true},
		{"CairnBoot0-6d1c7e0a-3c2b-4b8e-9f1d-2a5e0c4b7d11", false},
		{"CairnBoot01-6d1c7e0a-3c2b-4b8e-9f1d-2a5e0c4b7d11", false},
		{"CairnBoot-6d1c7e0a-3c2b-4b8e-9f1d-2a5e0c4b7d11", false},
		{"CairnBoot1-8be4df61-93ca-11d2-aa0d-00e098032b8c", false},
		{"Boot0001-8be4df61-93ca-11d2-aa0d-00e098032b8c", false},
	} {
		if got := isEFIBootVar(c.name); got != c.want {
			t.Errorf("isEFIBootVar(%q) = %v, want %v", c.name, got, c.want)
		}
	}
}
