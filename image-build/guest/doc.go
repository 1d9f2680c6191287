// Package guest holds the test guest: a tiny BIOS- and UEFI-bootable disk
// image (image-build/guest.sh, `make guest-image`) whose init,
// cmd/cairn-guest, reads its NoCloud seed with hypervisor/cloudinit, takes
// its hostname from it, gets an address by DHCP, answers on TCP port 8080
// and powers off on the ACPI power button. It also runs a minimal guest
// agent (fsfreeze over virtio-serial) and scribbles checkable records on
// disks marked for it (qa/scribble), for snapshot tests. Hypervisor tests
// boot it to see a VM come up, get its seed and network, and shut down
// cleanly, in seconds under TCG.
//
// This package holds only the guest's boot test; nothing imports it or the
// guest command.
package guest
