//go:build linux

package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
)

// Linux input event codes (linux/input-event-codes.h).
const (
	evKey    = 0x01
	keyPower = 116
)

// watchPowerButton turns a press of the ACPI power button (QEMU's
// system_powerdown) into a power-off: the kernel only reports the press, as
// an input event, and leaves the rest to userland. Like appliance/initd's.
func watchPowerButton(con *console, power chan<- string) {
	devs, _ := filepath.Glob("/dev/input/event*")
	if len(devs) == 0 {
		con.Printf("power button: no input devices; system_powerdown will not work")
	}
	for _, dev := range devs {
		f, err := os.Open(dev)
		if err != nil {
			con.Printf("power button: %v", err)
			continue
		}
		go func() {
			defer f.Close()
			// struct input_event on 64-bit Linux: a 16-byte timeval, then
			// type (u16), code (u16), value (s32).
			ev := make([]byte, 24)
			for {
				if _, err := f.Read(ev); err != nil {
					return
				}
				typ, code := binary.LittleEndian.Uint16(ev[16:]), binary.LittleEndian.Uint16(ev[18:])
				if typ == evKey && code == keyPower && binary.LittleEndian.Uint32(ev[20:]) == 1 {
					select {
					case power <- "power button: powering off":
					default:
					}
				}
			}
		}()
	}
}
