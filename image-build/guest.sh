#!/usr/bin/env bash
# Builds the test guest, out/guest.qcow2: a disk that boots under BIOS
# (SeaBIOS, QEMU's default) and UEFI (OVMF) into Debian's kernel with a
# u-root initramfs whose /init is image-build/guest/cmd/cairn-guest (see
# image-build/guest/doc.go). The disk is GPT with one FAT partition that
# holds the kernel, the initramfs and two boot loaders:
#   BIOS: syslinux's gptmbr.bin in the MBR chains to the partition marked
#         "legacy BIOS bootable", whose boot sector and ldlinux.sys are
#         syslinux's (installed with mtools: no mount, no loop device)
#   UEFI: systemd-boot as EFI/BOOT/BOOTX64.EFI
# Everything comes from packages.lock and this repository. Fixed dates, IDs
# and GUIDs make two builds give the same bytes. Usage: guest.sh GO (as
# root: apt-get); OUT=DIR writes guest.qcow2 elsewhere than out/.
set -euo pipefail
GO=${1:-go}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
out=${OUT:-$here/out}
cache=$here/cache          # downloaded .debs, shared with build.sh
work=$cache/guest          # this script's own scratch space
mkdir -p "$out" "$cache"
rm -rf "$work"
mkdir -p "$work"
export SOURCE_DATE_EPOCH=1577836800 # mtools stamps what it writes with this

# The kernel command line: kernel and init messages on the screen (a VNC
# console must show something) and on the serial port (tests read that).
cmdline="console=tty0 console=ttyS0,115200 panic=10"
# Kernel modules, loaded in this order with their dependencies: virtio
# devices, the AHCI CD-ROM (a seed attached with -cdrom), and the ACPI power
# button with evdev (QMP system_powerdown), and virtio_console for the guest
# agent's virtio-serial port.
modules=(virtio_pci virtio_blk virtio_net virtio_rng virtio_balloon virtio_console ahci sr_mod button evdev)
# Kernel modules shipped but loaded only on demand, each listed in
# lib/modules/NAME.load: efivarfs (cairn-guest's efiboots mode) refuses to
# load in a guest booted without UEFI.
ondemand=(efivarfs)

# fetch PACKAGE prints the path of the pinned .deb of PACKAGE, downloading
# it from Debian's archive through apt the first time (as build.sh does).
fetch() {
	local pin name deb
	pin=$(grep -v '^#' "$here/packages.lock" | grep "^$1=" | head -1)
	[[ -n $pin ]] || { echo "guest: $1 is not pinned in packages.lock" >&2; exit 1; }
	name=${pin%%=*}
	deb=$(ls "$cache/${name}_"*.deb 2>/dev/null | head -1 || true)
	if [[ -z $deb ]]; then
		echo "guest: fetching $pin with apt" >&2
		(cd "$cache" && apt-get download -qq "$pin" 2>/dev/null) || {
			apt-get update -qq
			(cd "$cache" && apt-get download -qq "$pin")
		}
		deb=$(ls "$cache/${name}_"*.deb | head -1)
	fi
	echo "$deb"
}
unpack() { # PACKAGE DIR
	mkdir -p "$2"
	dpkg-deb -x "$(fetch "$1")" "$2"
}

# 1. Kernel and modules, from the kernel package build.sh uses.
kname=$(grep -v '^#' "$here/packages.lock" | grep -o '^linux-image-[^=]*' | head -1)
kver=${kname#linux-image-}
kroot=$work/kernel
unpack "$kname" "$kroot"
depmod -b "$kroot" "$kver"
stage=$work/stage
mkdir -p "$stage/lib/modules"
# stage_modules LIST MODULE... copies the MODULEs and their dependencies
# into the stage and lists their paths, in load order, in lib/modules/LIST.
stage_modules() {
	local list=$1
	shift
	for m in "$@"; do
		modprobe -d "$kroot" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
	done | awk '!seen[$0]++' | while read -r path; do
		rel=${path#"$kroot"/}
		mkdir -p "$stage/$(dirname "$rel")"
		cp "$path" "$stage/$rel"
		echo "/$rel" >>"$stage/lib/modules/$list"
	done
}
stage_modules guest.load "${modules[@]}"
for m in "${ondemand[@]}"; do
	stage_modules "$m.load" "$m"
done

# 2. The initramfs: cairn-guest alone, as /init (u-root writes a
# reproducible cpio; zstd stores no name or time).
(cd "$repo" && "$GO" tool u-root -o "$work/initramfs.cpio" -initcmd=cairn-guest -uinitcmd="" -defaultsh="" \
	-files "$stage/lib/modules:lib/modules" ./image-build/guest/cmd/cairn-guest 2>&1 | grep -v 'INFO\|WARN\|Some packages\|Go to \|or use ' >&2 || true)
[[ -s $work/initramfs.cpio ]] || { echo "guest: u-root made no initramfs" >&2; exit 1; }
zstd -19 -q -f --no-progress "$work/initramfs.cpio" -o "$work/initrd.zst"

# 3. The boot partition: FAT16, with the loaders' configurations. Its
# boot sector records the partition's start (-h), which syslinux's boot
# code needs to find ldlinux.sys.
unpack syslinux "$work/syslinux"
unpack syslinux-common "$work/syslinux"
unpack systemd-boot-efi "$work/sdboot"
fat=$work/boot.img
part_start=2048 # sectors: 1 MiB
fat_mib=30
mkfs.vfat -C --invariant -i CA1A6E57 -n GUEST-BOOT -F 16 -h $part_start "$fat" $((fat_mib * 1024)) >/dev/null
"$work/syslinux/usr/bin/syslinux" --install "$fat"
printf 'SERIAL 0 115200\nDEFAULT guest\nPROMPT 0\nTIMEOUT 0\nLABEL guest\n  LINUX /vmlinuz\n  INITRD /initrd.zst\n  APPEND %s\n' \
	"$cmdline" >"$work/syslinux.cfg"
printf 'default guest.conf\ntimeout 0\nconsole-mode keep\n' >"$work/loader.conf"
printf 'title Cairn test guest\nlinux /vmlinuz\ninitrd /initrd.zst\noptions %s\n' "$cmdline" >"$work/guest.conf"
cp "$kroot/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$work/sdboot/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$work/BOOTX64.EFI"
touch -d @$SOURCE_DATE_EPOCH "$work"/{vmlinuz,initrd.zst,syslinux.cfg,BOOTX64.EFI,loader.conf,guest.conf} # mcopy -m keeps them
mmd -i "$fat" ::EFI ::EFI/BOOT ::loader ::loader/entries
mcopy -m -i "$fat" "$work/vmlinuz" ::vmlinuz
mcopy -m -i "$fat" "$work/initrd.zst" ::initrd.zst
mcopy -m -i "$fat" "$work/syslinux.cfg" ::syslinux.cfg
mcopy -m -i "$fat" "$work/BOOTX64.EFI" ::EFI/BOOT/BOOTX64.EFI
mcopy -m -i "$fat" "$work/loader.conf" ::loader/loader.conf
mcopy -m -i "$fat" "$work/guest.conf" ::loader/entries/guest.conf

# 4. The disk: GPT, partition 1 the FAT above, typed as an EFI system
# partition (UEFI) and flagged legacy BIOS bootable (attribute 2, for
# gptmbr.bin), then syslinux's GPT MBR in the first 440 bytes.
raw=$work/guest.img
truncate -s $(((fat_mib + 2) * 1024 * 1024)) "$raw"
sgdisk -o -U CA1A6E57-0000-4000-8000-000000000000 \
	-n 1:$part_start:+${fat_mib}M -t 1:EF00 -c 1:guest-boot -u 1:CA1A6E57-0000-4000-8000-000000000001 \
	-A 1:set:2 "$raw" >/dev/null
dd if="$work/syslinux/usr/lib/syslinux/mbr/gptmbr.bin" of="$raw" bs=440 count=1 conv=notrunc status=none
dd if="$fat" of="$raw" bs=512 seek=$part_start conv=notrunc status=none
rm -f "$out/guest.qcow2"
qemu-img convert -f raw -O qcow2 "$raw" "$out/guest.qcow2"
ls -l "$out/guest.qcow2" >&2
