#!/usr/bin/env bash
# Builds the appliance from Debian packages and this repository:
#   out/vmlinuz             Debian's kernel (packages.lock)
#   out/initramfs.cpio.zst  a u-root userland whose /init is cairn, with the
#                           kernel modules of modules.list, mke2fs and sgdisk
#   out/cairn.img           a UEFI disk image: GPT with one EFI system
#                           partition holding systemd-boot and two system
#                           slots (A and B, each a kernel, an initramfs and a
#                           system image with QEMU); the first boot adds the
#                           data partition
# The same inputs give the same bytes: files carry no timestamps or owners
# (u-root writes a reproducible cpio), zstd stores no name or time, and Go
# builds with -trimpath and no build ID. Usage: build.sh GO (as root: apt-get);
# OUT=DIR writes the boot files elsewhere than out/.
set -euo pipefail
GO=${1:-go}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${OUT:-$here/out}
cache=$here/cache
mkdir -p "$out" "$cache"

# fetch PACKAGE prints the path of the pinned .deb of PACKAGE, downloading
# it from Debian's archive through apt the first time.
fetch() {
	local pin name deb
	pin=$(grep -v '^#' "$here/packages.lock" | grep "^$1=" | head -1)
	[[ -n $pin ]] || { echo "image: $1 is not pinned in packages.lock" >&2; exit 1; }
	name=${pin%%=*}
	deb=$(ls "$cache/${name}_"*.deb 2>/dev/null | head -1 || true)
	if [[ -z $deb ]]; then
		echo "image: fetching $pin with apt" >&2
		(cd "$cache" && apt-get download -qq "$pin" 2>/dev/null) || {
			apt-get update -qq
			(cd "$cache" && apt-get download -qq "$pin")
		}
		deb=$(ls "$cache/${name}_"*.deb | head -1)
	fi
	echo "$deb"
}

# 1. The pinned kernel package.
kname=$(grep -v '^#' "$here/packages.lock" | grep -o '^linux-image-[^=]*' | head -1)
kver=${kname#linux-image-}
deb=$(fetch "$kname")
kroot=$cache/kernel
rm -rf "$kroot"
mkdir -p "$kroot"
dpkg-deb -x "$deb" "$kroot"
depmod -b "$kroot" "$kver"

# 2. The modules of modules.list (loaded at boot, in the initramfs) and
# modules-later.list (loaded once the agent runs, for VMs: in the system
# image, which keeps the initramfs the box unpacks at every boot small),
# with their dependencies, in load order.
stage=$cache/stage
sys=$cache/system
rm -rf "$stage" "$sys"
mkdir -p "$stage/lib/modules" "$sys/lib/modules"
modules() { # LIST ROOT OUTPUT [SKIP]: copy under ROOT, list paths relative to it
	: >"$3"
	grep -v '^#' "$1" | while read -r m; do
		[[ -n $m ]] || continue
		modprobe -d "$kroot" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
	done | awk '!seen[$0]++' | while read -r path; do
		rel=${path#"$kroot"/}
		if [[ -n ${4:-} ]] && grep -qx "/$rel" "$4"; then continue; fi
		mkdir -p "$2/$(dirname "$rel")"
		cp "$path" "$2/$rel"
		echo "/$rel" >>"$3"
	done
}
modules "$here/modules.list" "$stage" "$stage/lib/modules/cairn.load"
modules "$here/modules-later.list" "$sys" "$sys/lib/modules/cairn.later" "$stage/lib/modules/cairn.load"
cp "$kroot/boot/vmlinuz-$kver" "$out/vmlinuz"

# 3. The image's boot config. By default it carries no cluster key: anyone
# who has the image must not be able to read one out of it. Each box then
# makes its own, and the boxes of a site get theirs at install time
# (cairn.token= in cairn/boot.json on the ESP or on the kernel command line;
# a formed cluster admits further boxes with an enrolment token, cairn.enrol=,
# or an admin's approval). CAIRN_SITE_TOKEN=1 bakes the site's key in instead,
# for a lab: boxes booted from this image then find each other and form a
# cluster with no set-up, and the key still admits only the first voters.
# It is kept in site.token (not in git) so rebuilding gives the same image.
mkdir -p "$stage/etc/cairn"
if [[ ${CAIRN_SITE_TOKEN:-} == 1 ]]; then
	token_file=$here/site.token
	[[ -s $token_file ]] || (umask 077 && head -c 20 /dev/urandom | base32 | tr -d '=\n' >"$token_file")
	printf '{"token": "%s"}\n' "$(cat "$token_file")" >"$stage/etc/cairn/boot.json"
else
	printf '{}\n' >"$stage/etc/cairn/boot.json"
fi

# 4. cairn, static and reproducible.
CGO_ENABLED=0 "$GO" build -C "$repo" -trimpath -ldflags "-s -w -buildid=" -o "$cache/cairn" ./appliance/cmd/cairn

# 5. The initramfs: u-root's tools for the debug shell, cairn as /init.
mke2fs=$(command -v mke2fs || echo /sbin/mke2fs)
sgdisk=$(command -v sgdisk || echo /sbin/sgdisk)
(cd "$repo" && "$GO" tool u-root -o "$cache/initramfs.cpio" -initcmd=/bin/cairn -uinitcmd="" -defaultsh="" \
	-files "$cache/cairn:bin/cairn" -files "$stage/lib/modules:lib/modules" -files "$stage/etc/cairn:etc/cairn" -files "$mke2fs:sbin/mke2fs" -files "$sgdisk:sbin/sgdisk" \
	github.com/u-root/u-root/cmds/core/gosh github.com/u-root/u-root/cmds/core/ls \
	github.com/u-root/u-root/cmds/core/cat github.com/u-root/u-root/cmds/core/dmesg \
	github.com/u-root/u-root/cmds/core/ip github.com/u-root/u-root/cmds/core/ps \
	github.com/u-root/u-root/cmds/core/mount github.com/u-root/u-root/cmds/core/kill 2>&1 | grep -v '^.*INFO' >&2 || true)
[[ -s $cache/initramfs.cpio ]] || { echo "image: u-root made no initramfs" >&2; exit 1; }
# zstd: a box unpacks it ~0.5 s sooner than gzip -9 under TCG, at about the
# same size; zstd writes no name or time into the frame.
zstd -3 -q -f --no-progress "$cache/initramfs.cpio" -o "$out/initramfs.cpio.zst"
rm -f "$out/initramfs.cpio.gz"

# 6. The system image each slot carries beside its kernel and initramfs: what
# the box needs besides the agent, mounted read-only at boot. Today QEMU, with
# its libraries (and their loader) and firmware, from the build machine's
# Debian packages.
mkdir -p "$sys/usr/bin" "$sys/lib/x86_64-linux-gnu" "$sys/usr/share"
# prlimit (util-linux) sits beside qemu-img: the agent runs every qemu-img
# under its rlimits (hypervisor/qemuimg.go) and refuses to without it.
for bin in qemu-system-x86_64 qemu-img prlimit; do
	bin=$(command -v "$bin")
	cp "$bin" "$sys/usr/bin/"
	ldd "$bin" | awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
		cp -L "$lib" "$sys/lib/x86_64-linux-gnu/"
	done
done
cp -rL /usr/share/qemu "$sys/usr/share/qemu"
# Debian's QEMU finds the BIOS (seabios) and the NICs' option ROMs (ipxe)
# outside its data directory; the box gives QEMU only -L, so they go in it.
cp -L /usr/share/seabios/*.bin "$sys/usr/share/qemu/"
cp -L /usr/lib/ipxe/qemu/*.rom "$sys/usr/share/qemu/"
# QEMU loads TCG (software emulation, for a box without working KVM) as a
# module; the box's process points QEMU_MODULE_DIR here (initd/system.go).
mkdir -p "$sys/usr/lib/x86_64-linux-gnu/qemu"
cp -L /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so "$sys/usr/lib/x86_64-linux-gnu/qemu/"
ldd /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so | awk '$2 == "=>" {print $3}' | while read -r lib; do
	cp -L "$lib" "$sys/lib/x86_64-linux-gnu/"
done
# UEFI firmware for VMs whose image asks for it (the 4M build only).
mkdir -p "$sys/usr/share/OVMF"
cp -L /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd "$sys/usr/share/OVMF/"
find "$sys" -exec touch -h -d @1577836800 {} +
mksquashfs "$sys" "$cache/system.squashfs" -noappend -all-root -no-xattrs -comp zstd \
	-mkfs-time 1577836800 -all-time 1577836800 -quiet >/dev/null

# 7. The UEFI disk image. Everything with a fixed date, volume ID and GUIDs,
# so it is as reproducible as the files it holds.
boot=$cache/boot-efi
rm -rf "$boot"
mkdir -p "$boot"
dpkg-deb -x "$(fetch systemd-boot-efi)" "$boot"
esp=$cache/esp
rm -rf "$esp" "$cache/esp.img"
mkdir -p "$esp/EFI/BOOT" "$esp/loader/entries" "$esp/cairn/a" "$esp/cairn/b"
cp "$boot/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/BOOT/BOOTX64.EFI"
for slot in a b; do
	cp "$out/vmlinuz" "$esp/cairn/$slot/vmlinuz"
	cp "$out/initramfs.cpio.zst" "$esp/cairn/$slot/initramfs.cpio.zst"
	cp "$cache/system.squashfs" "$esp/cairn/$slot/system.squashfs"
	printf 'title Cairn (slot %s)\nlinux /cairn/%s/vmlinuz\ninitrd /cairn/%s/initramfs.cpio.zst\noptions console=tty0 console=ttyS0 panic=10 cairn.slot=%s\n' \
		"${slot^^}" "$slot" "$slot" "$slot" >"$esp/loader/entries/cairn-$slot.conf"
done
# Slot A boots; an upgrade writes slot B and points the default at it.
printf 'default cairn-a.conf\ntimeout 0\nconsole-mode keep\n' >"$esp/loader/loader.conf"
find "$esp" -exec touch -h -d @1577836800 {} +
esp_mib=160
mkfs.vfat -C --invariant -i CA1A0001 -n CAIRN-ESP -F 32 "$cache/esp.img" $((esp_mib * 1024)) >/dev/null
export SOURCE_DATE_EPOCH=1577836800 # mtools stamps what it writes with this
(cd "$esp" && for d in $(find . -mindepth 1 -type d | sort); do mmd -i "$cache/esp.img" "::${d#./}"; done)
(cd "$esp" && for f in $(find . -type f | sort); do mcopy -m -i "$cache/esp.img" "$f" "::${f#./}"; done)
img=$out/cairn.img
rm -f "$img"
truncate -s $(((esp_mib + 2) * 1024 * 1024)) "$img"
sgdisk -o -U CA1A0000-0000-4000-8000-000000000000 \
	-n 1:2048:+${esp_mib}M -t 1:EF00 -c 1:cairn-esp -u 1:CA1A0000-0000-4000-8000-000000000001 "$img" >/dev/null
dd if="$cache/esp.img" of="$img" bs=1M seek=1 conv=notrunc status=none
ls -l "$out" >&2
