// Command cairn is Cairn's one binary: `cairn agent` is the node daemon,
// `cairn hub` a federation hub's, and every other subcommand is the CLI
// client of the API.
package main

import (
	"os"

	"github.com/cairnhq/cairn/appliance/agent"
	"github.com/cairnhq/cairn/appliance/cli"
	"github.com/cairnhq/cairn/appliance/initd"
)

func main() {
	if os.Getpid() == 1 { // the appliance image's init (image-build/)
		os.Exit(initd.PID1())
	}
	if initd.IsBoxProcess() { // started by it to run the box
		os.Exit(initd.Main())
	}
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Exit(agent.Main(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "hub" {
		os.Exit(agent.HubMain(os.Args[2:]))
	}
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
