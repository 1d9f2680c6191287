#!/usr/bin/env bash
# Builds the appliance's boot files from Debian packages and this repository:
#   out/vmlinuz            Debian's kernel (packages.lock)
#   out/initramfs.cpio.zst  a u-root userland whose /init is cairn, with the
#                          kernel modules of modules.list and mke2fs
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

# 1. The pinned kernel package, from Debian's archive through apt.
kpkg=$(grep -v '^#' "$here/packages.lock" | grep '^linux-image-' | head -1)
kname=${kpkg%%=*}
kver=${kname#linux-image-}
deb=$(ls "$cache/${kname}_"*.deb 2>/dev/null | head -1 || true)
if [[ -z $deb ]]; then
	echo "image: fetching $kpkg with apt" >&2
	(cd "$cache" && apt-get download -qq "$kpkg" 2>/dev/null) || {
		apt-get update -qq
		(cd "$cache" && apt-get download -qq "$kpkg")
	}
	deb=$(ls "$cache/${kname}_"*.deb | head -1)
fi
kroot=$cache/kernel
rm -rf "$kroot"
mkdir -p "$kroot"
dpkg-deb -x "$deb" "$kroot"
depmod -b "$kroot" "$kver"

# 2. The modules of modules.list with their dependencies, in load order.
stage=$cache/stage
rm -rf "$stage"
mkdir -p "$stage/lib/modules"
: >"$stage/lib/modules/cairn.load"
grep -v '^#' "$here/modules.list" | while read -r m; do
	[[ -n $m ]] || continue
	modprobe -d "$kroot" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r path; do
	rel=${path#"$kroot"/}
	mkdir -p "$stage/$(dirname "$rel")"
	cp "$path" "$stage/$rel"
	echo "/$rel" >>"$stage/lib/modules/cairn.load"
done
cp "$kroot/boot/vmlinuz-$kver" "$out/vmlinuz"

# 3. The image's boot config: the site's join token. Boxes booted from this
# image find and admit only each other. Kept in site.token (not in git) so
# that rebuilding gives the same image; delete it for a new site.
token_file=$here/site.token
[[ -s $token_file ]] || (umask 077 && head -c 20 /dev/urandom | base32 | tr -d '=\n' >"$token_file")
mkdir -p "$stage/etc/cairn"
printf '{"token": "%s"}\n' "$(cat "$token_file")" >"$stage/etc/cairn/boot.json"

# 4. cairn, static and reproducible.
CGO_ENABLED=0 "$GO" build -C "$repo" -trimpath -ldflags "-s -w -buildid=" -o "$cache/cairn" ./appliance/cmd/cairn

# 5. The initramfs: u-root's tools for the debug shell, cairn as /init.
mke2fs=$(command -v mke2fs || echo /sbin/mke2fs)
(cd "$repo" && "$GO" tool u-root -o "$cache/initramfs.cpio" -initcmd=/bin/cairn -uinitcmd="" -defaultsh="" \
	-files "$cache/cairn:bin/cairn" -files "$stage/lib/modules:lib/modules" -files "$stage/etc/cairn:etc/cairn" -files "$mke2fs:sbin/mke2fs" \
	github.com/u-root/u-root/cmds/core/gosh github.com/u-root/u-root/cmds/core/ls \
	github.com/u-root/u-root/cmds/core/cat github.com/u-root/u-root/cmds/core/dmesg \
	github.com/u-root/u-root/cmds/core/ip github.com/u-root/u-root/cmds/core/ps \
	github.com/u-root/u-root/cmds/core/mount 2>&1 | grep -v '^.*INFO' >&2 || true)
[[ -s $cache/initramfs.cpio ]] || { echo "image: u-root made no initramfs" >&2; exit 1; }
# zstd: a box unpacks it ~0.5 s sooner than gzip -9 under TCG, at about the
# same size; zstd writes no name or time into the frame.
zstd -3 -q -f --no-progress "$cache/initramfs.cpio" -o "$out/initramfs.cpio.zst"
rm -f "$out/initramfs.cpio.gz"
ls -l "$out" >&2
