package qemu

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUnplugUnsupported is returned for a vCPU decrease: removing a CPU
// needs the guest to cooperate (ACPI eject), which q35 guests under TCG in
// particular do not reliably do, so the driver does not try.
var ErrUnplugUnsupported = errors.New("vcpu hot-unplug is not supported")

const mib = 1 << 20

// hotpluggableCPU is one entry of query-hotpluggable-cpus: a slot for a CPU,
// filled when QOMPath is set.
type hotpluggableCPU struct {
	Type       string           `json:"type"`
	VCPUsCount int              `json:"vcpus-count"`
	Props      map[string]int64 `json:"props"`
	QOMPath    string           `json:"qom-path"`
}

// VCPUs returns how many vCPUs the VM has now.
func (i *Instance) VCPUs(ctx context.Context) (int, error) {
	slots, err := i.cpuSlots(ctx, "vcpus")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range slots {
		if s.QOMPath != "" {
			n += s.VCPUsCount
		}
	}
	return n, nil
}

func (i *Instance) cpuSlots(ctx context.Context, op string) ([]hotpluggableCPU, error) {
	var slots []hotpluggableCPU
	err := i.run(ctx, op, "query-hotpluggable-cpus", nil, &slots)
	return slots, err
}

// SetVCPUs hot-plugs vCPUs until the VM has n (up to Machine.MaxVCPUs).
// The guest still has to online them (udev or
// /sys/devices/system/cpu/cpuN/online). Decreasing returns
// ErrUnplugUnsupported.
func (i *Instance) SetVCPUs(ctx context.Context, n int) error {
	slots, err := i.cpuSlots(ctx, "set vcpus")
	if err != nil {
		return err
	}
	var have, max int
	var free []hotpluggableCPU
	for _, s := range slots {
		max += s.VCPUsCount
		if s.QOMPath != "" {
			have += s.VCPUsCount
		} else {
			free = append(free, s)
		}
	}
	switch {
	case n == have:
		return nil
	case n < have:
		return fmt.Errorf("set vcpus of vm %s to %d (has %d): %w", i.name, n, have, ErrUnplugUnsupported)
	case n > max:
		return fmt.Errorf("set vcpus of vm %s to %d: above the maximum of %d", i.name, n, max)
	}
	// QEMU lists free slots last-first; fill them in topology order so the
	// guest's CPU numbers follow the sockets and cores.
	slices.SortFunc(free, func(a, b hotpluggableCPU) int {
		for _, k := range []string{"node-id", "socket-id", "die-id", "core-id", "thread-id"} {
			if c := cmp.Compare(a.Props[k], b.Props[k]); c != 0 {
				return c
			}
		}
		return 0
	})
	for _, s := range free {
		if have >= n {
			break
		}
		args := map[string]any{"driver": s.Type, "id": cpuDeviceID(s.Props)}
		for k, v := range s.Props {
			args[k] = v
		}
		if err := i.run(ctx, "set vcpus", "device_add", args, nil); err != nil {
			return fmt.Errorf("set vcpus of vm %s: %d of %d plugged: %w", i.name, have, n, err)
		}
		have += s.VCPUsCount
	}
	return nil
}

// cpuDeviceID names a hot-plugged CPU after its place in the topology, so
// the id is stable and unique however often the VM is re-attached.
func cpuDeviceID(props map[string]int64) string {
	var b strings.Builder
	b.WriteString("vcpu")
	for _, k := range []string{"socket-id", "die-id", "core-id", "thread-id"} {
		if v, ok := props[k]; ok {
			fmt.Fprintf(&b, "-%c%d", k[0], v)
		}
	}
	return b.String()
}

// MemoryChange reports how SetMemory reached its target.
type MemoryChange struct {
	// PluggedMiB is memory added now as a pc-dimm (it cannot be removed
	// again while the VM runs).
	PluggedMiB int
	// BalloonMiB is the balloon target set: the memory the guest is asked
	// to keep. A guest without the virtio-balloon driver ignores it.
	BalloonMiB int
}

// Memory is the VM's memory as QEMU sees it.
type Memory struct {
	BootMiB    int // -m size
	PluggedMiB int // hot-plugged DIMMs
	// BalloonMiB is what the guest currently has after the balloon
	// (boot + plugged when the balloon is deflated).
	BalloonMiB int
}

// Memory queries the VM's memory sizes.
func (i *Instance) Memory(ctx context.Context) (Memory, error) {
	var sum struct {
		Base    int64 `json:"base-memory"`
		Plugged int64 `json:"plugged-memory"`
	}
	if err := i.run(ctx, "memory", "query-memory-size-summary", nil, &sum); err != nil {
		return Memory{}, err
	}
	var bal struct {
		Actual int64 `json:"actual"`
	}
	if err := i.run(ctx, "memory", "query-balloon", nil, &bal); err != nil {
		return Memory{}, err
	}
	return Memory{BootMiB: int(sum.Base / mib), PluggedMiB: int(sum.Plugged / mib), BalloonMiB: int(bal.Actual / mib)}, nil
}

// SetMemory makes target MiB available to the guest. Above the boot plus
// plugged memory it hot-plugs the difference as one DIMM (needs
// Machine.MaxMemoryMiB room and a free slot; Linux onlines it only if the
// size is a multiple of its 128 MiB memory block); at or below it, it sets
// the balloon target, which the guest's balloon driver acts on. The
// balloon is set in both cases, so an earlier shrink is undone by a grow.
func (i *Instance) SetMemory(ctx context.Context, target int) (MemoryChange, error) {
	if target < 16 {
		return MemoryChange{}, fmt.Errorf("set memory of vm %s: %d MiB is too small", i.name, target)
	}
	cur, err := i.Memory(ctx)
	if err != nil {
		return MemoryChange{}, fmt.Errorf("set memory: %w", err)
	}
	var change MemoryChange
	if add := target - cur.BootMiB - cur.PluggedMiB; add > 0 {
		if err := i.plugDIMM(ctx, add); err != nil {
			return MemoryChange{}, err
		}
		change.PluggedMiB = add
	}
	if err := i.run(ctx, "set memory", "balloon", map[string]any{"value": int64(target) * mib}, nil); err != nil {
		return change, err
	}
	change.BalloonMiB = target
	return change, nil
}

// plugDIMM adds a RAM backend and a pc-dimm on it; the backend is removed
// again if the DIMM is refused (no slot, above maxmem).
func (i *Instance) plugDIMM(ctx context.Context, size int) error {
	var devs []struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := i.run(ctx, "set memory", "query-memory-devices", nil, &devs); err != nil {
		return err
	}
	used := map[string]bool{}
	for _, d := range devs {
		used[d.Data.ID] = true
	}
	n := 0
	for used[fmt.Sprintf("dimm%d", n)] {
		n++
	}
	mem, dimm := fmt.Sprintf("mem-dimm%d", n), fmt.Sprintf("dimm%d", n)
	var r reverter
	defer r.fail()
	if err := i.run(ctx, "set memory", "object-add", map[string]any{
		"qom-type": "memory-backend-ram", "id": mem, "size": int64(size) * mib,
	}, nil); err != nil {
		return err
	}
	r.add(func() {
		if err := i.run(context.WithoutCancel(ctx), "set memory", "object-del", map[string]any{"id": mem}, nil); err != nil {
			i.log.Warn("memory backend left behind", "id", mem, "err", err)
		}
	})
	if err := i.run(ctx, "set memory", "device_add", map[string]any{
		"driver": "pc-dimm", "id": dimm, "memdev": mem,
	}, nil); err != nil {
		return err
	}
	r.success()
	return nil
}
