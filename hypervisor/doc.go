// Package hypervisor is Cairn's compute (Nova's and Glance's role):
//
//   - VM and image records in the replicated state, with typed commands in
//     the range 256-383 (state.go). Creating a VM charges the project's
//     quota (identity.Charge) and allocates its ports (netfabric.AllocatePort)
//     in the same FSM transaction, so a refusal leaves nothing behind.
//   - The leader's scheduler (scheduler.go): filter nodes that are alive,
//     not cordoned (cordon.go), have room under the admin's overcommit
//     ratios and hold no VM of the same anti-affinity group; weigh by free
//     RAM so VMs spread. The FSM re-checks the fit when a placement commits.
//   - Migration: a stopped VM whose disks are all volumes changes nodes in
//     one command, its volumes and ports with it (migrate.go); a running
//     one moves live (live.go, live_worker.go): QEMU streams its memory
//     over TLS to a QEMU waiting on the target, whose volumes are served
//     on standby sockets until the switchover hands their writer epoch
//     over; the source, its guest paused, commits the switch once the
//     target's agent has said it is ready (live_rpc.go), so a VM is never
//     given to a node that cannot serve it. With the admin's opt-in a
//     migration goes post-copy after its first pass: the guest runs on the
//     target while it fetches the rest of the memory from the source.
//     Under TCG the source pauses the guest for the whole copy (QEMU 7.2
//     loses a running guest's writes there), and the target resumes it.
//     A UEFI VM's settings are on a volume of their own (uefi_vars.go),
//     QEMU's second flash chip, so they move as its disks do.
//   - High availability (ha.go, ha_node.go): every node holds a lease in
//     the replicated state, renewed every second; a node that cannot renew
//     kills its HA VMs before anyone can judge the lease lost, and the
//     leader restarts the VMs of a lost lease elsewhere, their volumes
//     handed over at a new writer epoch that fences the old node.
//   - The per-node agent (node.go, worker.go): one worker per local VM
//     converges QEMU (package qemu) to the desired state, reports status and
//     events, re-attaches to running VMs after a restart and removes what no
//     VM owns at start-up. For a volume snapshot it freezes a running
//     guest's file systems through its guest agent (quiesce.go,
//     NodeAgent.QuiesceVM); snapshots of one VM's volumes share a freeze.
//   - Images (images.go, cache.go): uploads and URL imports are checked
//     (format by magic number, qemu-img check, no backing files), raw is
//     converted to qcow2, and the bytes go to the object store's system
//     bucket ".images". Each node caches the images its VMs boot from; a boot
//     disk is a qcow2 overlay on the cached copy (volumes.go), behind the
//     Volumes interface that replicated block volumes will implement.
//   - Access (access.go): the one place that says who sees a VM's
//     cloud-init, who sees and changes an image, and which images a VM of a
//     project may boot from.
//   - cloud-init NoCloud seeds (package cloudinit) and consoles (console.go):
//     short-lived HMAC tickets, VNC and serial WebSockets relayed from the
//     VM's node over the cluster's mutual TLS.
//
// Only appliance imports it; it imports consensus, identity, storage and
// netfabric.
package hypervisor
