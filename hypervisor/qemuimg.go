package hypervisor

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
)

// qemu-img parses whatever a user uploads or a URL serves, and a crafted
// image can make it allocate without bound or spin (CVE-2015-5162). Like
// OpenStack (oslo.concurrency's prlimit around qemu-img info: 1 GiB of
// address space, 30 s of CPU), every qemu-img here runs under rlimits, set
// by util-linux prlimit before it execs qemu-img so they hold from its
// first instruction. Go's exec has no pre-exec hook to set them itself.
const qemuImgAddressSpace = 1 << 30

// qemuImgCPU is the CPU-time limit of a qemu-img subcommand: OpenStack's 30 s
// for the ones that only read headers; for those that copy data, which run
// only on images info and check have passed, a bound on a runaway rather
// than on real work: converting a large raw image legitimately takes many
// minutes of CPU (zero detection reads every byte).
func qemuImgCPU(sub string) int {
	switch sub {
	case "info", "check", "measure":
		return 30
	}
	return 6 * 3600
}

// qemuImgArgv is the argv that runs qemu-img (through prefix) with args
// under its limits. prlimit runs the way qemu-img does: from qemu-img's
// own directory through the same loader when it is there (the appliance's
// system image ships it beside qemu-img), else from PATH. Without prlimit
// qemu-img does not run at all.
func qemuImgArgv(prefix []string, args ...string) ([]string, error) {
	if len(prefix) == 0 || len(args) == 0 {
		return nil, fmt.Errorf("qemu-img: empty command")
	}
	bin := prefix[len(prefix)-1]
	var pr []string
	if filepath.IsAbs(bin) && fileExists(filepath.Join(filepath.Dir(bin), "prlimit")) {
		pr = append(append([]string{}, prefix[:len(prefix)-1]...), filepath.Join(filepath.Dir(bin), "prlimit"))
	} else {
		p, err := exec.LookPath("prlimit")
		if err != nil {
			return nil, fmt.Errorf("qemu-img %s: prlimit (util-linux) is needed to limit it: %w", args[0], err)
		}
		pr = []string{p}
	}
	argv := append(pr, "--as="+strconv.Itoa(qemuImgAddressSpace), "--cpu="+strconv.Itoa(qemuImgCPU(args[0])), "--")
	argv = append(append(argv, prefix...), args...)
	return argv, nil
}

// qemuImgCommand is exec.CommandContext for qemuImgArgv.
func qemuImgCommand(ctx context.Context, prefix []string, args ...string) (*exec.Cmd, error) {
	argv, err := qemuImgArgv(prefix, args...)
	if err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, argv[0], argv[1:]...), nil
}
