#!/usr/bin/env bash
# Boots three copies of the appliance (image-build/out) in QEMU on a private
# bridge inside a network namespace of its own, until Ctrl-C; then removes
# everything it created (namespace, links, QEMU processes, data disks).
# The host reaches the boxes through a veth into that namespace, at
# 10.99.77.11-13; nothing else is routed. KVM where it works, TCG otherwise.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$here/out
[[ -s $out/vmlinuz && -s $out/initramfs.cpio.zst ]] || { echo "run make image first" >&2; exit 1; }
ns=cairn-image
net=10.99.77
work=$(mktemp -d /tmp/cairn-image-cluster.XXXXXX)
accel=tcg cpu=max # TCG's model with every feature it emulates (RDRAND among them)
if [[ -c /dev/kvm && ! -e /sys/module/kvm_pvm ]]; then accel=kvm cpu=host; fi

pids=()
cleanup() {
	trap - EXIT INT TERM HUP
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip link del cairnimg0 2>/dev/null || true
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$work"
	echo "image cluster stopped and removed"
}
trap cleanup EXIT INT TERM HUP

ip netns add "$ns"
ip -n "$ns" link add br0 type bridge
ip -n "$ns" link set br0 up
ip link add cairnimg0 type veth peer name uplink netns "$ns"
ip -n "$ns" link set uplink master br0 up
ip addr add "$net.1/24" dev cairnimg0
ip link set cairnimg0 up

# The image carries no cluster key: the three boxes get one here, as an
# installer would put it into each box's cairn/boot.json.
key=$(head -c 20 /dev/urandom | base32 | tr -d '=\n')
for i in 1 2 3; do
	ip -n "$ns" tuntap add dev "tap$i" mode tap
	ip -n "$ns" link set "tap$i" master br0 up
	truncate -s 8G "$work/data$i.img"
	cmd=(qemu-system-x86_64 -machine q35 -accel "$accel" -cpu "$cpu" -m 2048 -smp 2 -nographic -no-reboot
		-kernel "$out/vmlinuz" -initrd "$out/initramfs.cpio.zst"
		-append "console=ttyS0 panic=-1 cairn.ip=$net.1$i/24 cairn.expect=3 cairn.token=$key"
		-drive "file=$work/data$i.img,format=raw,if=virtio"
		-netdev "tap,id=n0,ifname=tap$i,script=no,downscript=no"
		-device "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:1$i")
	echo "box $i: ip netns exec $ns ${cmd[*]}" >"$work/box$i.cmd"
	ip netns exec "$ns" "${cmd[@]}" </dev/null >"$work/box$i.log" 2>&1 &
	pids+=($!)
done
echo "Booting three boxes ($accel); consoles in $work/box{1,2,3}.log"
for i in 1 2 3; do
	until curl -skf "https://$net.1$i:8443/readyz" >/dev/null 2>&1; do
		kill -0 "${pids[$((i - 1))]}" 2>/dev/null || { echo "box $i stopped; see $work/box$i.log" >&2; exit 1; }
		sleep 1
	done
done
echo
for i in 1 2 3; do echo "  box $i: https://$net.1$i:8443/"; done
code=$(grep -ao 'enter the code  [A-Z0-9-]*' "$work/box1.log" | tail -1 | awk '{print $4}')
echo "  First-time setup on box 1 with the code ${code:-(see its console)}"
echo "Press Ctrl-C to stop and remove everything."
wait
