// Package hypervisor will own QEMU/KVM processes driven over QMP, the per-node
// VM reconciler, the leader's scheduler, images, cloud-init seeds, consoles and
// live migration (issue 5). Its commands use message types 256-383 and charge
// project quotas with identity.Charge inside the FSM. Nothing is implemented yet.
package hypervisor
