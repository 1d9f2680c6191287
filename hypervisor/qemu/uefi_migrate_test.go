package qemu

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/testutil"
)

// A UEFI VM's variables are a file beside its node's copy of it; the live
// stream carries the firmware's flash, and the receiving QEMU, started on
// a fresh copy of the template, writes the whole flash it received to its
// own file once it runs (QEMU's pflash post-load). So after a live move the
// target's file holds what the firmware wrote on the source: a UEFI VM
// moves live with its settings.
func TestUEFIVarsMoveLive(t *testing.T) {
	requireQEMU(t)
	t.Parallel()
	const code, template = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
	blank, err := os.ReadFile(template)
	if err != nil {
		t.Fatalf("OVMF not installed (apt-get install ovmf; make test installs it): %v", err)
	}
	ctx := context.Background()
	machine := func(vars string) Machine {
		return Machine{Name: "uefi", VCPUs: 1, MemoryMiB: 128, Accel: "tcg",
			Firmware: Firmware{Type: "uefi", Code: code, Vars: vars, VarsTemplate: template}}
	}
	srcVars, dstVars := filepath.Join(vmTempDir(t), "OVMF_VARS.fd"), filepath.Join(vmTempDir(t), "OVMF_VARS.fd")
	from, err := newTestDriver(t).Start(ctx, machine(srcVars))
	if err != nil {
		t.Fatal(err)
	}
	// The firmware's first boot writes variables (boot options and the
	// like) to the source's file.
	testutil.WaitFor(t, 3*time.Minute, "the firmware to write its variables", func() error {
		if b, _ := os.ReadFile(srcVars); len(b) != len(blank) || bytes.Equal(b, blank) {
			return errors.New("the variables are still the template's")
		}
		return nil
	})
	time.Sleep(2 * time.Second) // and to finish writing them

	mm := machine(dstVars)
	mm.Incoming = true
	to, err := newTestDriver(t).Start(ctx, mm)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := to.MigrateIncoming(ctx, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := from.Migrate(ctx, addr); err != nil {
		t.Fatal(err)
	}
	if info := waitMigration(t, from, "completed", "failed"); info.Status != "completed" {
		t.Fatalf("migration %s: %s", info.Status, info.ErrorDesc)
	}
	want, err := os.ReadFile(srcVars)
	if err != nil {
		t.Fatal(err)
	}
	if err := from.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, time.Minute, "the target's variables to be the source's", func() error {
		if st, err := to.Status(ctx); err != nil || !st.Running {
			return errors.New("the target's guest does not run yet")
		}
		got, _ := os.ReadFile(dstVars)
		switch {
		case bytes.Equal(got, blank):
			return errors.New("the target's file is still the template")
		case !bytes.Equal(got, want):
			return errors.New("the target's file differs from the source's")
		}
		return nil
	})
}
