//go:build !linux

package initd

import "fmt"

// Main is Linux-only: the appliance image is Linux. Elsewhere cairn is only
// the CLI.
func Main() int {
	fmt.Println("cairn: the appliance init runs on Linux only")
	return 1
}
