package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenMachine is the base of the golden cases; each case changes a little.
func goldenMachine() Machine {
	return Machine{
		Name:      "vm1",
		UUID:      "0f0c3c2e-5a54-4b7e-9a3c-6e0d2f1a9b10",
		VCPUs:     2,
		MemoryMiB: 1024,
		Accel:     "tcg",
		Dir:       "/run/cairn/vm/vm1",
		Disks:     []Disk{{ID: "root", Path: "/var/lib/cairn/disks/vm1-root.qcow2", Format: "qcow2", BootIndex: 1}},
		NICs:      []NIC{{ID: "nic0", Tap: "cvm1n0", MAC: "52:54:00:AB:CD:01"}},
	}
}

func TestArgsGolden(t *testing.T) {
	cases := map[string]func(m *Machine){
		"bios-tcg": func(m *Machine) {},
		"uefi-kvm": func(m *Machine) {
			m.Accel = "kvm"
			m.Firmware = Firmware{Type: "uefi", Code: "/usr/share/OVMF/OVMF_CODE_4M.fd", Vars: "/var/lib/cairn/vm1/OVMF_VARS.fd"}
		},
		// The variable store on a volume: the second flash chip by node name.
		"uefi-volume": func(m *Machine) {
			m.Firmware = Firmware{Type: "uefi", Code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
				VarsSource: "nbd+unix:///vol-1?socket=/run/cairn/volumes/vol-1.sock", VarsSize: 540672}
		},
		"hotplug": func(m *Machine) {
			m.MaxVCPUs = 8
			m.MaxMemoryMiB = 4096
		},
		"cdrom": func(m *Machine) {
			m.Disks = append(m.Disks,
				Disk{ID: "install", Path: "/var/lib/cairn/images/debian,12.iso", Media: "cdrom", BootIndex: 2},
				Disk{ID: "data", Source: "nbd://10.0.0.2:10809/vol-7", Format: "raw", Cache: "writeback"},
				Disk{ID: "seed", Path: "/run/cairn/seed/vm1.img", ReadOnly: true})
		},
		// An overlay on a cached base image, after a read-only disk: the
		// base is a descriptor too, and the chain is explicit.
		"backing": func(m *Machine) {
			m.Disks = []Disk{{ID: "seed", Path: "/var/lib/cairn/vms/vm1/seed.iso", ReadOnly: true},
				{ID: "root", Path: "/var/lib/cairn/vms/vm1/root.qcow2", Format: "qcow2", BootIndex: 1,
					Backing: "/var/lib/cairn/images/cache/img,1.qcow2"}}
		},
		"no-hotplug-slots": func(m *Machine) {
			m.HotplugSlots = -1
		},
		"two-nics": func(m *Machine) {
			m.NICs = append(m.NICs, NIC{ID: "nic1", Tap: "cvm1n1", MAC: "52:54:00:ab:cd:02"})
		},
		// A user-mode NIC reached through a loopback port (benchmarks).
		"forward": func(m *Machine) {
			m.Forward = &Forward{HostPort: 18080, GuestPort: 8080, MAC: "52:54:00:AB:CD:09"}
		},
		"serial-log": func(m *Machine) {
			m.SerialLog = "/var/lib/cairn/vm1/serial.log"
		},
		"confined": func(m *Machine) {
			m.Confine = Confinement{UID: 0x70000123, GID: 0x70000123, Sandbox: sandboxFull}
		},
		"direct-boot": func(m *Machine) {
			m.Disks = nil
			m.NICs = nil
			m.Kernel, m.Initrd, m.Append = "/boot/vmlinuz", "/tmp/initrd.cpio", "console=ttyS0 quiet"
		},
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			m := goldenMachine()
			change(&m)
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", name+".golden"), formatArgs(m.Args()))
		})
	}
}

// formatArgs puts each option and its value on a line, so a golden diff
// shows which option changed.
func formatArgs(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 && strings.HasPrefix(a, "-") {
			b.WriteByte('\n')
		} else if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a)
	}
	b.WriteByte('\n')
	return b.String()
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}
