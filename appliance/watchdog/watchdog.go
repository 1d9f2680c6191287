// Package watchdog drives a Linux hardware watchdog (/dev/watchdog, as
// i6300esb, iTCO_wdt or sp5100_tco provide it): a box whose agent stops
// petting it is reset by the hardware.
//
// mdlayher/watchdog opens only /dev/watchdog and cannot set the timeout,
// which the VM leases depend on (hypervisor.HATiming): hence these few
// ioctls of the kernel's watchdog API (Documentation/watchdog/watchdog-api).
package watchdog

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Device is a watchdog device, armed on its first Pet.
type Device struct {
	path    string
	timeout time.Duration
	log     *slog.Logger

	mu     sync.Mutex
	f      *os.File
	closed bool // disarmed for good: a late Pet must not arm it again
}

// New returns the watchdog at path with the given timeout (whole seconds,
// at least one); nothing is opened before the first Pet.
func New(path string, timeout time.Duration, log *slog.Logger) *Device {
	return &Device{path: path, timeout: timeout, log: log}
}

// Pet arms the watchdog on the first call, then restarts its countdown.
func (d *Device) Pet() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("watchdog %s: disarmed", d.path)
	}
	if d.f == nil {
		if err := d.open(); err != nil {
			return err
		}
	}
	if err := keepalive(d.f); err != nil {
		return fmt.Errorf("watchdog %s: keepalive: %w", d.path, err)
	}
	return nil
}

func (d *Device) open() error {
	f, err := os.OpenFile(d.path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	secs := max(int(d.timeout/time.Second), 1)
	// The driver may round it: what it answers is what holds.
	got, err := setTimeout(f, secs)
	if err != nil {
		disarm(f)
		return fmt.Errorf("watchdog %s: set the timeout to %d s: %w", d.path, secs, err)
	}
	d.f = f
	d.log.Info("watchdog armed", "device", d.path, "timeout_s", got)
	if got > secs {
		// A hung agent's box is then reset later than the VM leases
		// assume: after its VMs may have been restarted elsewhere (the
		// writer epoch still keeps them off the volumes).
		d.log.Error("the watchdog's driver took a longer timeout than asked", "device", d.path, "asked_s", secs, "took_s", got)
	}
	return nil
}

// Close disarms the watchdog (the magic close: a driver built with
// nowayout stays armed, and the box is reset unless another agent pets it
// in time).
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.f == nil {
		return nil
	}
	err := disarm(d.f)
	d.f = nil
	if err == nil {
		d.log.Info("watchdog disarmed", "device", d.path)
	}
	return err
}

func disarm(f *os.File) error {
	_, werr := f.Write([]byte("V"))
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("watchdog: magic close: %w", werr)
	}
	return cerr
}
