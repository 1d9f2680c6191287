package qemu

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	cases := map[string]struct {
		change func(m *Machine)
		want   string // part of the error; "" = valid
	}{
		"golden":            {func(m *Machine) {}, ""},
		"uuid name":         {func(m *Machine) { m.Name = "0f0c3c2e-5a54-4b7e-9a3c-6e0d2f1a9b10" }, ""},
		"name with slash":   {func(m *Machine) { m.Name = "../etc" }, "name"},
		"name with comma":   {func(m *Machine) { m.Name = "a,b" }, "name"},
		"empty name":        {func(m *Machine) { m.Name = "" }, "name"},
		"bad uuid":          {func(m *Machine) { m.UUID = "nope" }, "uuid"},
		"no vcpus":          {func(m *Machine) { m.VCPUs = 0 }, "vcpus 0"},
		"max below vcpus":   {func(m *Machine) { m.MaxVCPUs = 1 }, "max vcpus"},
		"no memory":         {func(m *Machine) { m.MemoryMiB = 0 }, "memory 0"},
		"maxmem below":      {func(m *Machine) { m.MaxMemoryMiB = 512 }, "max memory"},
		"accel":             {func(m *Machine) { m.Accel = "hvf" }, "accel"},
		"firmware":          {func(m *Machine) { m.Firmware.Type = "coreboot" }, "firmware"},
		"uefi without vars": {func(m *Machine) { m.Firmware = Firmware{Type: "uefi", Code: "/c"} }, "uefi"},
		"uefi two vars": {func(m *Machine) {
			m.Firmware = Firmware{Type: "uefi", Code: "/c", Vars: "/v", VarsSource: "nbd+unix:///e?socket=/s", VarsSize: 4096}
		}, "either"},
		"uefi vars no size": {func(m *Machine) {
			m.Firmware = Firmware{Type: "uefi", Code: "/c", VarsSource: "nbd+unix:///e?socket=/s"}
		}, "vars size"},
		"uefi vars no socket": {func(m *Machine) {
			m.Firmware = Firmware{Type: "uefi", Code: "/c", VarsSource: "nbd+unix:///e", VarsSize: 4096}
		}, "socket"},
		"uefi vars node id":  {func(m *Machine) { m.Disks[0].ID = varsNodeID }, "reserved"},
		"no dir":             {func(m *Machine) { m.Dir = "" }, "run directory"},
		"long dir":           {func(m *Machine) { m.Dir = "/" + strings.Repeat("d", 100) }, "socket path"},
		"initrd no kernel":   {func(m *Machine) { m.Initrd = "/i" }, "without a kernel"},
		"disk id digit":      {func(m *Machine) { m.Disks[0].ID = "0root" }, "id"},
		"disk no path":       {func(m *Machine) { m.Disks[0].Path = "" }, "exactly one"},
		"disk path and src":  {func(m *Machine) { m.Disks[0].Source = "nbd://h/e" }, "exactly one"},
		"disk bad scheme":    {func(m *Machine) { m.Disks[0] = Disk{ID: "d", Source: "iscsi://h/e"} }, "scheme"},
		"disk nbd unix":      {func(m *Machine) { m.Disks[0] = Disk{ID: "d", Source: "nbd+unix:///e?socket=/s"} }, ""},
		"disk nbd no socket": {func(m *Machine) { m.Disks[0] = Disk{ID: "d", Source: "nbd+unix:///e"} }, "socket"},
		"disk format":        {func(m *Machine) { m.Disks[0].Format = "vmdk" }, "format"},
		"disk media":         {func(m *Machine) { m.Disks[0].Media = "floppy" }, "media"},
		"duplicate ids":      {func(m *Machine) { m.NICs[0].ID = "root" }, "duplicate"},
		"port id":            {func(m *Machine) { m.Disks[0].ID = "hp-port7" }, "reserved"},
		"agent channel id":   {func(m *Machine) { m.Disks[0].ID = guestAgentBus }, "reserved"},
		"port id, no ports":  {func(m *Machine) { m.Disks[0].ID = "hp-port0"; m.HotplugSlots = -1 }, ""},
		"nic no tap":         {func(m *Machine) { m.NICs[0].Tap = "" }, "tap"},
		"nic long tap":       {func(m *Machine) { m.NICs[0].Tap = "a23456789012345x" }, "tap"},
		"nic no mac":         {func(m *Machine) { m.NICs[0].MAC = "" }, "mac"},
		"nic multicast":      {func(m *Machine) { m.NICs[0].MAC = "01:00:5e:00:00:01" }, "multicast"},
		"forward":            {func(m *Machine) { m.Forward = &Forward{HostPort: 18080, GuestPort: 8080, MAC: "52:54:00:ab:cd:09"} }, ""},
		"forward no mac":     {func(m *Machine) { m.Forward = &Forward{HostPort: 18080, GuestPort: 8080} }, "forward: mac"},
		"forward port 0":     {func(m *Machine) { m.Forward = &Forward{GuestPort: 8080, MAC: "52:54:00:ab:cd:09"} }, "TCP ports"},
		"forward big port":   {func(m *Machine) { m.Forward = &Forward{HostPort: 1, GuestPort: 65536, MAC: "52:54:00:ab:cd:09"} }, "TCP ports"},
		"forward id taken": {func(m *Machine) {
			m.NICs[0].ID = "forward"
			m.Forward = &Forward{HostPort: 18080, GuestPort: 8080, MAC: "52:54:00:ab:cd:09"}
		}, "has its id"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			m := goldenMachine()
			c.change(&m)
			err := m.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("valid machine rejected: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("accepted; want an error about %q", c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// TestBackingValidated: a backing file belongs to a local qcow2 overlay
// and is named by an absolute path.
func TestBackingValidated(t *testing.T) {
	for name, d := range map[string]Disk{
		"raw overlay":   {ID: "root", Path: "/d/root.raw", Format: "raw", Backing: "/c/base.qcow2"},
		"network disk":  {ID: "root", Source: "nbd://10.0.0.2/vol", Format: "qcow2", Backing: "/c/base.qcow2"},
		"relative path": {ID: "root", Path: "/d/root.qcow2", Format: "qcow2", Backing: "base.qcow2"},
	} {
		m := goldenMachine()
		m.Disks = []Disk{d}
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
