#!/usr/bin/env bash
# Installs what building and testing Cairn needs on Debian 12, as root: Debian
# packages with apt-get, and, if no Go new enough is on the machine, the Go
# toolchain from the Go module proxy (the golang.org/toolchain module).
# Idempotent: it installs only what is missing. Usage: deps.sh [test|bench|run|image]
set -euo pipefail

what=${1:-test}
go_version=$(awk '/^go /{print $2}' "$(dirname "$0")/../../go.mod")

need_pkgs=(ca-certificates curl unzip iproute2 nftables)
# make image: module lists, file systems, partitions, compression, and the
# QEMU that goes into the image's system image.
image_pkgs=(kmod e2fsprogs dosfstools mtools gdisk squashfs-tools zstd qemu-system-x86 qemu-utils)
case $what in
# gcc: the race detector; awscli, s3cmd, rclone: the S3 clients qa/cluster runs against the gateway
test) need_pkgs+=(gcc libc6-dev chromium genisoimage fonts-wqy-zenhei "${image_pkgs[@]}" ovmf awscli s3cmd rclone strace linux-image-amd64 libnbd-bin isc-dhcp-client busybox-static) ;; # strace: a disk test watches fsync; the kernel: QEMU guest tests boot it; libnbd-bin: nbdinfo and nbdcopy test the NBD server; isc-dhcp-client: dhclient -6 tests DHCPv6; busybox-static: the DNS test asks with busybox nslookup
image) need_pkgs+=("${image_pkgs[@]}") ;;
run) need_pkgs+=(qemu-system-x86 qemu-utils ovmf) ;;
bench) need_pkgs+=(etcd-server etcd-client fio) ;; # fio: bench-volumes
esac

missing=()
for p in "${need_pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $(id -u) != 0 ]]; then
		echo "deps: missing Debian packages ${missing[*]}; run as root to install them" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go: use the one on PATH or in /usr/local/go if it is new enough; otherwise
# fetch the toolchain module from the proxy into /usr/local/go-$go_version.
have_go() {
	local g=$1
	[[ -x $g ]] || return 1
	local v
	v=$("$g" env GOVERSION 2>/dev/null | sed 's/^go//') || return 1
	[[ $(printf '%s\n%s\n' "$go_version" "$v" | sort -V | head -1) == "$go_version" ]]
}
for g in "$(command -v go || true)" /usr/local/go/bin/go "/usr/local/go-$go_version/bin/go"; do
	if [[ -n $g ]] && have_go "$g"; then
		echo "$g"
		exit 0
	fi
done
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
zip="v0.0.1-go$go_version.linux-amd64.zip"
echo "deps: fetching Go $go_version from $proxy" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL "$proxy/golang.org/toolchain/@v/$zip" -o "$tmp/go.zip"
unzip -q "$tmp/go.zip" -d "$tmp"
rm -rf "/usr/local/go-$go_version"
mv "$tmp/golang.org/toolchain@v0.0.1-go$go_version.linux-amd64" "/usr/local/go-$go_version"
chmod +x /usr/local/go-$go_version/bin/* /usr/local/go-$go_version/pkg/tool/*/* 2>/dev/null || true
echo "/usr/local/go-$go_version/bin/go"
