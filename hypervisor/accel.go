package hypervisor

import "os"

// Accel picks QEMU's accelerator for --accel auto: "kvm" when /dev/kvm opens
// and is real KVM, "tcg" otherwise. A PVM host module (/sys/module/kvm_pvm,
// as on this project's CI machines) opens /dev/kvm too, but stock guest
// kernels hang under it, so it counts as no KVM.
func Accel() string {
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		return "tcg"
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	return "kvm"
}
