// Package image tests the appliance image (image-build/) booted in QEMU: the
// boot files built as `make image` builds them, a data disk, the management
// network by DHCP, the agent serving /readyz, a clean power-off by the power
// button, and a second boot that finds its data again. Tests stream the
// guest's serial console to the test log, print the QEMU command line to
// reproduce a run, and keep the console log under qa/artifacts on failure.
package image
