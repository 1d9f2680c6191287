package cli

import (
	"fmt"
	"strconv"

	"github.com/cairnhq/cairn/hypervisor"
)

func init() {
	commands["cluster capacity"] = command{help: "vCPUs, memory and storage in use and in all, per node, and whether the cluster can lose a node (N+1; cluster admin)",
		flags: noFlags(clusterCapacity)}
}

func clusterCapacity(e *env, args []string) error {
	var c hypervisor.Capacity
	if err := get(e, "/api/v1/capacity", &c); err != nil {
		return err
	}
	if e.output == "json" {
		return e.printKV(c, nil)
	}
	fmt.Fprintf(e.stdout, "vCPUs: %d of %d in use (cpu ratio %s)   memory: %s of %s GiB in use (ram ratio %s, %d MiB reserved per node)\n",
		c.UsedVCPUs, c.VCPUs, ratio(c.CPURatio), gib(uint64(c.UsedRAMMiB)<<20), gib(uint64(c.RAMMiB)<<20), ratio(c.RAMRatio), c.ReservedRAMMiB)
	if st := c.Storage; st.Disks > 0 {
		fmt.Fprintf(e.stdout, "storage: %s of %s GiB free on %d disks in %d nodes; free for objects (%s): %s GiB, for volumes (%d copies): %s GiB\n",
			gib(st.RawFree), gib(st.RawBytes), st.Disks, st.Nodes, st.Layout, gib(st.ObjectsFree), st.Copies, gib(st.VolumesFree))
	}
	if c.NPlusOne {
		fmt.Fprintln(e.stdout, "N+1: yes, the cluster can lose any one node and restart its VMs elsewhere, and keeps every byte")
	} else {
		fmt.Fprintln(e.stdout, "N+1: NO")
		for _, r := range c.Reasons {
			fmt.Fprintf(e.stdout, "  - %s\n", r.Text)
		}
	}
	fmt.Fprintln(e.stdout)
	return e.print(c.Nodes, []string{"NODE", "VCPUS", "MEMORY GiB", "VMS", "ACCEL", "DISK GiB FREE", "STATE"}, func(i int) []string {
		n := c.Nodes[i]
		state := "ok"
		switch {
		case n.StorageOnly:
			state = "storage only"
		case n.Error != "":
			state = "error: " + n.Error
		case !n.Available:
			state = "not reporting"
		case n.Cordoned:
			state = "cordoned"
		}
		return []string{n.Node, fmt.Sprintf("%d/%d", n.UsedVCPUs, n.VCPUs), gib(uint64(n.UsedRAMMiB)<<20) + "/" + gib(uint64(n.RAMMiB)<<20),
			strconv.Itoa(n.VMs), n.Accel, gib(n.DiskFree) + "/" + gib(n.DiskBytes), state}
	}, len(c.Nodes))
}

func ratio(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }
