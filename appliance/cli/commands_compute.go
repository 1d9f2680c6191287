package cli

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
)

// computeCommands are the vm, image and host nouns; merged into commands.
var computeCommands = map[string]command{
	"vm list": {usage: "[--project PROJECT]", help: "VMs you can see", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		project := fs.String("project", "", "only this project's VMs")
		return func(e *env, args []string) error {
			path := "/api/v1/vms"
			if *project != "" {
				path += "?project=" + url.QueryEscape(*project)
			}
			var vms []hypervisor.VM
			if err := get(e, path, &vms); err != nil {
				return err
			}
			return e.print(vms, []string{"NAME", "STATE", "NODE", "IP", "VCPUS", "RAM MIB", "ID"}, func(i int) []string {
				v := vms[i]
				return []string{v.Name, stateOf(&v), v.Node, strings.Join(v.IPs(), ","), itoa(v.Spec.VCPUs), itoa(v.Spec.RAMMiB), v.ID}
			}, len(vms))
		}
	}},
	"vm create": {usage: "NAME --image IMAGE --flavor FLAVOR [--project P] [--boot-volume-gib N] [--boot-snapshot SNAP | --boot-source VOL | --local-disk] [--network NET]... [--ssh-key FILE] [--user-data FILE] [--data-disk GIB]... [--group G] [--no-ha] [--ha-priority N] [--stopped]",
		help: "create a VM; it is placed, booted and given an address", flags: func(fs *flag.FlagSet) func(*env, []string) error {
			var req hypervisor.VMCreate
			fs.StringVar(&req.Image, "image", "", "image name or ID")
			fs.StringVar(&req.Flavor, "flavor", "", "flavor name or ID")
			fs.StringVar(&req.Project, "project", "", "project (default: your only project)")
			fs.StringVar(&req.Hostname, "hostname", "", "guest host name (default: from the name)")
			fs.StringVar(&req.Group, "group", "", "anti-affinity group: VMs of one group run on different nodes")
			fs.BoolVar(&req.Stopped, "stopped", false, "create without starting")
			fs.BoolVar(&req.HAOff, "no-ha", false, "do not restart it on another node if its node dies (a VM booted from a volume is by default)")
			fs.IntVar(&req.HAPriority, "ha-priority", 0, "restart priority, -100 to 100, higher first (cluster admin)")
			fs.BoolVar(&req.LocalDisk, "local-disk", false, "keep the boot disk on the VM's node: scratch space, lost if the node is")
			fs.Int64Var(&req.BootVolumeGiB, "boot-volume-gib", 0, "size of the boot volume (default: the flavor's disk)")
			fs.StringVar(&req.BootSnapshot, "boot-snapshot", "", "the boot volume starts as this volume snapshot (copy-on-write) instead of the image")
			fs.StringVar(&req.BootSource, "boot-source", "", "the boot volume starts as a clone of this volume as it is now (copy-on-write)")
			keyFile := fs.String("ssh-key", "", "file of OpenSSH public keys for the guest")
			userData := fs.String("user-data", "", "cloud-init user-data file")
			fs.Var((*stringList)(&req.Networks), "network", "a network for a NIC, in order (repeatable; default: the default network)")
			fs.Var((*stringList)(&req.SecurityGroups), "security-group", "a security group for the NICs on project networks (repeatable; default: the project's default group)")
			var disks gibList
			fs.Var(&disks, "data-disk", "add a blank local scratch disk of this many GiB (repeatable; lost if the node is: use volumes for data)")
			return func(e *env, args []string) error {
				if err := needArgs(args, 1, "a VM name"); err != nil {
					return err
				}
				if req.Image == "" || req.Flavor == "" {
					return usageError("--image and --flavor are required")
				}
				req.Name, req.DataDisks = args[0], disks
				if *keyFile != "" {
					b, err := os.ReadFile(*keyFile)
					if err != nil {
						return err
					}
					for _, l := range strings.Split(string(b), "\n") {
						if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
							req.SSHKeys = append(req.SSHKeys, l)
						}
					}
				}
				if *userData != "" {
					b, err := os.ReadFile(*userData)
					if err != nil {
						return err
					}
					req.UserData = string(b)
				}
				var vm hypervisor.VM
				if err := send(e, "POST", "/api/v1/vms", req, &vm); err != nil {
					return err
				}
				return printVM(e, &vm)
			}
		}},
	"vm show": {usage: "VM", help: "a VM's state, node and addresses", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one VM"); err != nil {
			return err
		}
		var vm hypervisor.VM
		if err := get(e, "/api/v1/vms/"+url.PathEscape(args[0]), &vm); err != nil {
			return err
		}
		return printVM(e, &vm)
	})},
	"vm events": {usage: "VM", help: "a VM's history", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one VM"); err != nil {
			return err
		}
		var evs []hypervisor.Event
		if err := get(e, "/api/v1/vms/"+url.PathEscape(args[0])+"/events", &evs); err != nil {
			return err
		}
		return e.print(evs, []string{"TIME", "KIND", "BY", "MESSAGE"}, func(i int) []string {
			by := evs[i].User
			if by == "" {
				by = evs[i].Node
			}
			return []string{evs[i].Time.Format("2006-01-02 15:04:05"), evs[i].Kind, by, evs[i].Message}
		}, len(evs))
	})},
	"vm start":      vmOp(hypervisor.OpStart, "start a stopped VM"),
	"vm stop":       vmOp(hypervisor.OpStop, "shut a VM down (ACPI, forced after a timeout)"),
	"vm force-stop": vmOp(hypervisor.OpForceStop, "power a VM off at once"),
	"vm reboot":     vmOp(hypervisor.OpReboot, "reset a running VM"),
	"vm pause":      vmOp(hypervisor.OpPause, "pause a VM"),
	"vm resume":     vmOp(hypervisor.OpResume, "resume a paused VM"),
	"vm delete": {usage: "VM", help: "delete a VM and everything made for it", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one VM"); err != nil {
			return err
		}
		var vm hypervisor.VM
		if err := send(e, "DELETE", "/api/v1/vms/"+url.PathEscape(args[0]), nil, &vm); err != nil {
			return err
		}
		return printVM(e, &vm)
	})},
	"vm resize": {usage: "VM FLAVOR", help: "move a VM to another flavor", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a VM and a flavor"); err != nil {
			return err
		}
		var vm hypervisor.VM
		if err := send(e, "POST", "/api/v1/vms/"+url.PathEscape(args[0])+"/resize", map[string]string{"flavor": args[1]}, &vm); err != nil {
			return err
		}
		return printVM(e, &vm)
	})},
	"vm migrate": {usage: "VM [--to NODE] [--post-copy] [--wait] | --cancel VM", help: "move a VM whose disks are volumes to another node: a running VM live, a stopped one as it is (cluster admin); --wait follows a live migration to its end", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		to := fs.String("to", "", "the node to move it to (default: where the scheduler would place it)")
		postCopy := fs.Bool("post-copy", false, "let a live migration go post-copy after one pass over the guest's memory: it then ends whatever the guest does, but a failure of either node or the network meanwhile restarts the VM from its disks (each node needs sysctl vm.unprivileged_userfaultfd=1)")
		cancel := fs.Bool("cancel", false, "stop a live migration before its switchover: the VM runs on where it was")
		wait := fs.Bool("wait", false, "wait until a live migration has ended, showing its progress")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a VM"); err != nil {
				return err
			}
			path := "/api/v1/vms/" + url.PathEscape(args[0]) + "/migrate"
			var vm hypervisor.VM
			if *cancel {
				if *to != "" || *wait || *postCopy {
					return errors.New("--cancel takes no --to, --post-copy or --wait")
				}
				if err := send(e, "POST", path+"/cancel", nil, &vm); err != nil {
					return err
				}
				return printVM(e, &vm)
			}
			body := map[string]any{"node": *to}
			if *postCopy {
				body["post_copy"] = true // (older nodes refuse the field)
			}
			if err := send(e, "POST", path, body, &vm); err != nil {
				return err
			}
			if *wait && vm.Migration != nil {
				return waitMigration(e, &vm)
			}
			return printVM(e, &vm)
		}
	}},
	"vm ha": {usage: "VM [--on | --off] [--priority N]", help: "switch a VM's high availability (restarted on another node when its node dies) on or off, or set its restart priority (cluster admin)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		on := fs.Bool("on", false, "restart it elsewhere if its node dies")
		off := fs.Bool("off", false, "leave it with its node if that dies")
		prio := fs.Int("priority", 0, "restart priority, -100 to 100: higher restarts first")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "a VM"); err != nil {
				return err
			}
			body := map[string]any{}
			switch {
			case *on && *off:
				return usageError("--on or --off, not both")
			case *on || *off:
				body["enabled"] = *on
			}
			fs.Visit(func(f *flag.Flag) {
				if f.Name == "priority" {
					body["priority"] = *prio
				}
			})
			if len(body) == 0 {
				return usageError("say --on, --off or --priority N")
			}
			var vm hypervisor.VM
			if err := send(e, "PUT", "/api/v1/vms/"+url.PathEscape(args[0])+"/ha", body, &vm); err != nil {
				return err
			}
			return printVM(e, &vm)
		}
	}},
	"vm convert-disk": {usage: "VM", help: "move a stopped VM's local boot disk, and a UEFI VM's settings, onto replicated volumes (done before it next starts)", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "a VM"); err != nil {
			return err
		}
		var vm hypervisor.VM
		if err := send(e, "POST", "/api/v1/vms/"+url.PathEscape(args[0])+"/convert-disk", nil, &vm); err != nil {
			return err
		}
		return printVM(e, &vm)
	})},
	"vm rename": {usage: "VM NEW-NAME", help: "rename a VM", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 2, "a VM and its new name"); err != nil {
			return err
		}
		var vm hypervisor.VM
		if err := send(e, "PATCH", "/api/v1/vms/"+url.PathEscape(args[0]), map[string]string{"name": args[1]}, &vm); err != nil {
			return err
		}
		return printVM(e, &vm)
	})},
	"image list": {usage: "[--search TEXT]", help: "images you can see", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		q := fs.String("search", "", "only images whose name, OS or description contains this")
		return func(e *env, args []string) error {
			var imgs []hypervisor.Image
			if err := get(e, "/api/v1/images?q="+url.QueryEscape(*q), &imgs); err != nil {
				return err
			}
			return e.print(imgs, []string{"NAME", "FORMAT", "SIZE MIB", "VIRTUAL GIB", "VISIBILITY", "OS", "ID"}, func(i int) []string {
				m := imgs[i]
				return []string{m.Name, m.Format, fmt.Sprintf("%.1f", float64(m.Size)/(1<<20)), gib(uint64(m.VirtualSize)), m.Visibility, strings.TrimSpace(m.OSType + " " + m.OSVersion), m.ID}
			}, len(imgs))
		}
	}},
	"image show": {usage: "IMAGE", help: "one image", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one image"); err != nil {
			return err
		}
		var img hypervisor.Image
		if err := get(e, "/api/v1/images/"+url.PathEscape(args[0]), &img); err != nil {
			return err
		}
		return printImage(e, &img)
	})},
	"image upload": {usage: "NAME FILE [--project P] [--visibility private|project|public] [--os-type T] [--min-disk GIB] [--min-ram MIB] [--firmware bios|uefi]",
		help: "upload a qcow2, raw or ISO image", flags: func(fs *flag.FlagSet) func(*env, []string) error {
			q := imageFlags(fs)
			return func(e *env, args []string) error {
				if err := needArgs(args, 2, "an image name and a file"); err != nil {
					return err
				}
				v := q()
				v.Set("name", args[0])
				var img hypervisor.Image
				if err := uploadFile(e, args[1], "/api/v1/images/upload?"+v.Encode(), &img); err != nil {
					return err
				}
				return printImage(e, &img)
			}
		}},
	"image import": {usage: "NAME URL [--project P] [--visibility ...]", help: "import an image from an http(s) URL on your network", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		q := imageFlags(fs)
		return func(e *env, args []string) error {
			if err := needArgs(args, 2, "an image name and a URL"); err != nil {
				return err
			}
			v := q()
			body := map[string]any{"name": args[0], "url": args[1]}
			for k := range v {
				body[k] = v.Get(k)
			}
			for _, k := range []string{"min_disk_gib", "min_ram_mib"} {
				if s, ok := body[k].(string); ok {
					var n int64
					if _, err := fmt.Sscan(s, &n); err != nil {
						return usageError(k + " must be a number")
					}
					body[k] = n
				}
			}
			var img hypervisor.Image
			if err := send(e, "POST", "/api/v1/images/import", body, &img); err != nil {
				return err
			}
			return printImage(e, &img)
		}
	}},
	"image delete": {usage: "IMAGE", help: "delete an image (VMs made from it keep running)", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one image"); err != nil {
			return err
		}
		return send(e, "DELETE", "/api/v1/images/"+url.PathEscape(args[0]), nil, nil)
	})},
	"host list": {help: "nodes' VM capacity and allocation", flags: noFlags(func(e *env, args []string) error {
		var hs []hypervisor.HostView
		if err := get(e, "/api/v1/hosts", &hs); err != nil {
			return err
		}
		return e.print(hs, []string{"NODE", "ACCEL", "VMS", "VCPUS USED/TOTAL", "RAM MIB USED/TOTAL", "SCHEDULING", "ERROR"}, func(i int) []string {
			h := hs[i]
			sched := "on"
			if h.Cordon != nil {
				sched = "cordoned " + h.Cordon.At.Format("2006-01-02 15:04") + " by " + h.Cordon.By
				if h.Cordon.Reason != "" {
					sched += ": " + h.Cordon.Reason
				}
				if d := h.Cordon.Drain; d != nil {
					sched += "; " + drainLine(d)
				}
			}
			return []string{h.Name, h.Accel, fmt.Sprint(h.VMs), fmt.Sprintf("%d/%d", h.UsedVCPUs, h.VCPUs), fmt.Sprintf("%d/%d", h.UsedRAMMiB, h.RAMMiB), sched, h.Error}
		}, len(hs))
	})},
	"node cordon": {usage: "NODE [--reason TEXT]", help: "keep new VMs off a node, for maintenance; its VMs keep running (cluster admin)", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		reason := fs.String("reason", "", "why, for the other admins (one line)")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one node"); err != nil {
				return err
			}
			var c hypervisor.Cordon
			if err := send(e, "POST", "/api/v1/hosts/"+url.PathEscape(args[0])+"/cordon", map[string]string{"reason": *reason}, &c); err != nil {
				return err
			}
			return e.printKV(c, [][2]string{{"node", c.Node}, {"cordoned", c.At.Format(time.RFC3339)}, {"by", c.By}, {"reason", c.Reason}})
		}
	}},
	"node drain": {usage: "NODE [--restart] [--convert-disks] [--wait]", help: "cordon a node and move its VMs away, running ones live (cluster admin); refused if the others have no room or the cluster would lose its quorum without it", flags: func(fs *flag.FlagSet) func(*env, []string) error {
		restart := fs.Bool("restart", false, "stop, move and start again a VM that cannot move live (its guest restarts)")
		convert := fs.Bool("convert-disks", false, "stop a VM with a local boot disk, move its disk onto a replicated volume, then move and start it again (its guest restarts)")
		wait := fs.Bool("wait", false, "wait until the drain is done, showing its progress")
		return func(e *env, args []string) error {
			if err := needArgs(args, 1, "one node"); err != nil {
				return err
			}
			body := map[string]bool{"restart": *restart}
			if *convert {
				body["convert"] = true // older nodes refuse the field
			}
			var c hypervisor.Cordon
			if err := send(e, "POST", "/api/v1/hosts/"+url.PathEscape(args[0])+"/drain", body, &c); err != nil {
				return err
			}
			for last := ""; *wait && c.Drain != nil && c.Drain.State == hypervisor.DrainDraining; {
				time.Sleep(time.Second)
				var hs []hypervisor.HostView
				if err := get(e, "/api/v1/hosts", &hs); err != nil {
					return err
				}
				c.Drain = nil
				for _, h := range hs {
					if h.Name == c.Node && h.Cordon != nil {
						c = *h.Cordon
					}
				}
				if c.Drain == nil {
					return fmt.Errorf("node %s was uncordoned: its drain ended", c.Node)
				}
				if line := drainLine(c.Drain); line != last {
					fmt.Fprintln(os.Stderr, line)
					last = line
				}
			}
			d := c.Drain
			return e.printKV(c, [][2]string{{"node", c.Node}, {"drain", d.State}, {"moved", fmt.Sprint(d.Moved)}, {"restarted", fmt.Sprint(d.Restarted)}, {"converted", fmt.Sprint(d.Converted)}, {"left", d.Message}})
		}
	}},
	"node uncordon": {usage: "NODE", help: "let the scheduler place VMs on a node again, ending its drain (cluster admin)", flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one node"); err != nil {
			return err
		}
		return send(e, "POST", "/api/v1/hosts/"+url.PathEscape(args[0])+"/uncordon", nil, nil)
	})},
}

func init() {
	for k, v := range computeCommands {
		commands[k] = v
	}
}

func vmOp(op, help string) command {
	return command{usage: "VM", help: help, flags: noFlags(func(e *env, args []string) error {
		if err := needArgs(args, 1, "one VM"); err != nil {
			return err
		}
		var vm hypervisor.VM
		if err := send(e, "POST", "/api/v1/vms/"+url.PathEscape(args[0])+"/"+op, nil, &vm); err != nil {
			return err
		}
		return printVM(e, &vm)
	})}
}

// imageFlags declares an image's optional attributes and returns them as
// query parameters.
func imageFlags(fs *flag.FlagSet) func() url.Values {
	names := map[string]string{"project": "project (default: your only project)", "visibility": "private, project (default) or public",
		"os-type": "e.g. linux or windows", "os-version": "e.g. debian-12", "description": "free text",
		"min-disk": "minimum disk, GiB", "min-ram": "minimum RAM, MiB", "firmware": "bios (default) or uefi"}
	vals := map[string]*string{}
	for n, h := range names {
		vals[n] = fs.String(n, "", h)
	}
	return func() url.Values {
		key := map[string]string{"os-type": "os_type", "os-version": "os_version", "min-disk": "min_disk_gib", "min-ram": "min_ram_mib"}
		v := url.Values{}
		for n, p := range vals {
			if *p == "" {
				continue
			}
			k := n
			if kk, ok := key[n]; ok {
				k = kk
			}
			v.Set(k, *p)
		}
		return v
	}
}

// stateOf is a VM's state as people read it: the observed state, and the
// request the node is still working on.
func stateOf(v *hypervisor.VM) string {
	s := v.Status.State
	if v.Status.Error != "" {
		s += " (" + v.Status.Error + ")"
	}
	return s
}

// vmJSON is a VM as `-o json` prints it: with its addresses at the top.
type vmJSON struct {
	*hypervisor.VM
	IPs []string `json:"ips"`
}

func printVM(e *env, v *hypervisor.VM) error {
	return e.printKV(vmJSON{v, v.IPs()}, [][2]string{{"id", v.ID}, {"name", v.Name}, {"state", stateOf(v)}, {"desired", v.Desired},
		{"node", v.Node}, {"ips", strings.Join(v.IPs(), ", ")}, {"flavor", v.Spec.Flavor},
		{"size", fmt.Sprintf("%d vCPU, %d MiB, %d GiB", v.Spec.VCPUs, v.Spec.RAMMiB, v.Spec.DiskGiB)},
		{"image", v.Spec.Image}, {"boot disk", bootDisk(v)}, {"uefi settings", uefiSettings(v)}, {"accel", v.Status.Accel}, {"pending", v.Status.Pending},
		{"migration", migrationLine(v.Migration)}, {"high availability", haLine(v)}})
}

// haLine says whether and how a VM is restarted elsewhere if its node dies.
func haLine(v *hypervisor.VM) string {
	if v.HA == "on" && v.Spec.HAPriority != 0 {
		return fmt.Sprintf("on, priority %d", v.Spec.HAPriority)
	}
	return v.HA
}

// migrationLine is a live migration's progress in one line.
func migrationLine(m *hypervisor.Migration) string {
	if m == nil {
		return ""
	}
	p := m.Progress
	s := fmt.Sprintf("%s to %s, %s", m.Source, m.Target, m.Phase)
	if p.RAMTotal > 0 {
		s += fmt.Sprintf(": %d of %d MiB sent, %d MiB left, dirtied at %d MiB/s, expected pause %d ms (limit %d ms)",
			p.RAMTransferred>>20, p.RAMTotal>>20, p.RAMRemaining>>20, p.DirtyRate>>20, p.ExpectedDowntimeMS, p.DowntimeLimitMS)
	}
	return s
}

// waitMigration follows a live migration until it ends, one progress line
// a second, then prints the VM and how it ended.
func waitMigration(e *env, vm *hypervisor.VM) error {
	id := vm.Migration.ID
	last := ""
	for {
		var cur hypervisor.VM
		if err := get(e, "/api/v1/vms/"+url.PathEscape(vm.ID), &cur); err != nil {
			return err
		}
		if cur.Migration == nil || cur.Migration.ID != id {
			var events []hypervisor.Event
			ended := ""
			err := get(e, "/api/v1/vms/"+url.PathEscape(vm.ID)+"/events", &events)
			if err == nil {
				for i := len(events) - 1; i >= 0; i-- {
					if events[i].Kind == "migrate" {
						ended = events[i].Message
						fmt.Fprintln(os.Stderr, ended)
						break
					}
				}
			}
			if err := printVM(e, &cur); err != nil {
				return err
			}
			if cur.Node == vm.Migration.Source {
				if ended == "" {
					ended = "the migration ended"
				}
				return fmt.Errorf("VM %s did not move: %s", cur.Name, ended)
			}
			if err != nil {
				return fmt.Errorf("VM %s is on %s; how its move ended is unknown: %w", cur.Name, cur.Node, err)
			}
			if !strings.HasPrefix(ended, "moved live") {
				// On the target, but its stream broke after the switch:
				// booted afresh there from its volumes.
				return fmt.Errorf("VM %s is on %s but did not move live: %s", cur.Name, cur.Node, ended)
			}
			return nil
		}
		if line := migrationLine(cur.Migration); line != last {
			fmt.Fprintln(os.Stderr, line)
			last = line
		}
		time.Sleep(time.Second)
	}
}

// bootDisk says where a VM's boot disk lives.
func bootDisk(v *hypervisor.VM) string {
	if v.Spec.BootVolume != "" {
		return "volume " + v.Spec.BootVolume
	}
	return "local to its node"
}

// uefiSettings says where a UEFI VM keeps its firmware settings ("" for
// a BIOS VM).
func uefiSettings(v *hypervisor.VM) string {
	switch {
	case v.Spec.Firmware != "uefi":
		return ""
	case v.Spec.VarsVolume == "":
		return "in a file on its node (it cannot move: convert-disk)"
	case v.Spec.VarsFrom != "":
		return "volume " + v.Spec.VarsVolume + ", filled from " + v.Spec.VarsFrom + " at its next start there"
	}
	return "volume " + v.Spec.VarsVolume
}

func printImage(e *env, m *hypervisor.Image) error {
	return e.printKV(m, [][2]string{{"id", m.ID}, {"name", m.Name}, {"format", m.Format}, {"stored as", m.DiskFormat},
		{"size", fmt.Sprint(m.Size)}, {"virtual size", fmt.Sprint(m.VirtualSize)}, {"sha256", m.SHA256},
		{"visibility", m.Visibility}, {"min disk GiB", fmt.Sprint(m.MinDiskGiB)}, {"min RAM MiB", fmt.Sprint(m.MinRAMMiB)},
		{"firmware", m.Firmware}})
}

// gibList is a repeatable flag of sizes.
type gibList []int64

func (g *gibList) String() string { return fmt.Sprint(*g) }
func (g *gibList) Set(s string) error {
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
		return fmt.Errorf("a size in GiB, like 10")
	}
	*g = append(*g, n)
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// drainLine is a drain's progress in one line.
func drainLine(d *hypervisor.Drain) string {
	s := fmt.Sprintf("drain %s: %d moved, %d restarted", d.State, d.Moved, d.Restarted)
	if d.Converted > 0 {
		s += fmt.Sprintf(", %d disks converted", d.Converted)
	}
	if d.Message != "" {
		s += "; " + d.Message
	}
	return s
}
