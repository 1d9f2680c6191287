//go:build linux

package initd

import (
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"path/filepath"
)

// keyPower is the Linux input code of the power button (KEY_POWER).
const (
	evKey    = 0x01
	keyPower = 116
)

// watchPowerButton turns a press of the power button (ACPI's, as QEMU's
// system_powerdown or a short press on a real box) into a clean power-off.
func watchPowerButton(ctx context.Context, log *slog.Logger, action chan<- string) {
	devs, _ := filepath.Glob("/dev/input/event*")
	for _, dev := range devs {
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		go func() {
			<-ctx.Done()
			f.Close()
		}()
		go func() {
			// struct input_event on 64-bit Linux: a 16-byte timeval, then
			// type (u16), code (u16), value (s32).
			ev := make([]byte, 24)
			for {
				if _, err := f.Read(ev); err != nil {
					return
				}
				typ, code := binary.LittleEndian.Uint16(ev[16:]), binary.LittleEndian.Uint16(ev[18:])
				value := int32(binary.LittleEndian.Uint32(ev[20:]))
				if typ == evKey && code == keyPower && value == 1 {
					log.Info("power button pressed")
					select {
					case action <- "poweroff":
					default:
					}
				}
			}
		}()
	}
}
