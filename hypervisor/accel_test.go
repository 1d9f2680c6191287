package hypervisor

import (
	"os"
	"testing"
)

func TestAccel(t *testing.T) {
	want := "kvm"
	if _, err := os.Stat("/sys/module/kvm_pvm"); err == nil {
		want = "tcg"
	} else if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		want = "tcg"
	} else {
		f.Close()
	}
	if got := Accel(); got != want {
		t.Fatalf("Accel() = %q on this machine, want %q", got, want)
	}
}
