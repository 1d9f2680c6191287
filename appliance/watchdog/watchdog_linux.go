package watchdog

import (
	"os"

	"golang.org/x/sys/unix"
)

func keepalive(f *os.File) error { return unix.IoctlWatchdogKeepalive(int(f.Fd())) }

// setTimeout sets the timeout and returns the one the driver took.
func setTimeout(f *os.File, secs int) (int, error) {
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, secs); err != nil {
		return 0, err
	}
	got, err := unix.IoctlGetInt(int(f.Fd()), unix.WDIOC_GETTIMEOUT)
	if err != nil {
		return secs, nil
	}
	return got, nil
}
