//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairnhq/cairn/hypervisor/cloudinit"
)

// findSeed looks for the NoCloud seed, an ISO9660 volume labelled cidata,
// on every block device (virtio-blk vd*, SATA/SCSI sd*, CD-ROMs sr*: the
// guest has only the drivers for virtio and AHCI), for up to wait: a CD-ROM
// on AHCI shows up a while after its driver loads. It reads the seed in
// userland, so the guest needs no isofs module.
func findSeed(wait time.Duration) (*cloudinit.Seed, string, error) {
	deadline := time.Now().Add(wait)
	for {
		devs, _ := filepath.Glob("/sys/class/block/*")
		var tried []string
		for _, sys := range devs {
			name := filepath.Base(sys)
			dev := "/dev/" + name
			tried = append(tried, name)
			if !hasSeedLabel(dev) {
				continue
			}
			s, err := cloudinit.ReadISO(dev)
			if err != nil {
				return nil, dev, err
			}
			return s, dev, nil
		}
		if time.Now().After(deadline) {
			if len(tried) == 0 {
				return nil, "", errors.New("no disks")
			}
			return nil, "", fmt.Errorf("no %s volume on %s", cloudinit.VolumeLabel, strings.Join(tried, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hasSeedLabel(dev string) bool {
	f, err := os.Open(dev)
	if err != nil {
		return false // e.g. an empty CD-ROM drive (ENOMEDIUM)
	}
	defer f.Close()
	label, err := cloudinit.ISOLabel(f)
	return err == nil && strings.EqualFold(label, cloudinit.VolumeLabel)
}
