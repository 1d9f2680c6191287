//go:build !linux

package watchdog

import (
	"errors"
	"os"
)

var errNotLinux = errors.New("hardware watchdogs are driven on Linux only")

func keepalive(*os.File) error { return errNotLinux }

func setTimeout(*os.File, int) (int, error) { return 0, errNotLinux }
