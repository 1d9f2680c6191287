// Command compute (`make bench-compute`, or `go run ./qa/bench/compute`)
// measures how fast Cairn turns an API call into a booted VM, on this
// machine, beside the limit: the same QEMU command line launched by hand.
// It prints a markdown report with PASS or MISS per target. It is a
// measurement, not a test: a missed target is reported, and the exit status
// is non-zero only when something could not be measured at all.
//
// It starts, through qa/harness, one `cairn agent` in a network namespace
// with two directory disks (the object store holds the images), uploads the
// test guest (image-build/out/guest.qcow2) and then measures:
//
//   - boot: from the API create call to the guest's first serial line, and
//     to its "cairn-guest: hostname=" line (after DHCP), alternating Cairn
//     VMs with bare launches of the same guest: Cairn's own QEMU command line
//     (package hypervisor/qemu) on a qcow2 overlay and a cloud-init seed, with
//     QEMU's user network in place of the tap. Both are timed by polling the
//     serial log QEMU writes itself (every 2 ms), so the two are measured the
//     same way. A first VM before the series pays the image cache fetch and
//     is reported on its own;
//   - burst: -burst VMs created at once (concurrent POSTs) on the one node,
//     until all are running and all have printed their hostname line, then
//     deleted, checking that nothing is left.
//
// Targets: Cairn's median boot minus the bare median under 300 ms; no
// failure in the burst. -quick runs 3 boots of each kind and a 5-VM burst.
// The markdown goes to stdout (and to -out); progress goes to stderr. It
// needs root for the namespaces, and QEMU and qemu-img on PATH.
package main
