#!/usr/bin/env bash
# Runs three Cairn nodes on 127.0.0.11-13 (loopback, so no LAN traffic), with
# their data under data/cluster, until Ctrl-C. Usage: cluster.sh path/to/cairn
set -euo pipefail
bin=$(realpath "$1")
root=$(pwd)/data/cluster
mkdir -p "$root"
token_file=$root/join-token
[[ -s $token_file ]] || head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' | sed 's/^/cairn-/' >"$token_file"
token=$(cat "$token_file")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait; echo "cluster stopped"' EXIT INT TERM
for i in 1 2 3; do
	ip=127.0.0.1$i
	peers=$(for j in 1 2 3; do if [[ $j != "$i" ]]; then printf '127.0.0.1%s,' "$j"; fi; done)
	mkdir -p "$root/node$i"
	# One host has one VM bridge: node1 runs the VMs, the others none.
	vms=true
	[[ $i == 1 ]] || vms=false
	"$bin" agent --name "node$i" --data-dir "$root/node$i" --bind "$ip" --expect 3 \
		--join "${peers%,}" --join-token "$token" --discovery-port 0 --vms="$vms" \
		--disk "$root/node$i/disks/d1" --disk "$root/node$i/disks/d2" \
		>"$root/node$i.log" 2>&1 &
	pids+=($!)
done
echo "Starting 3 nodes; logs in $root/node{1,2,3}.log"
for i in 1 2 3; do
	until grep -q "is ready" "$root/node$i.log" 2>/dev/null; do sleep 0.2; done
done
sed -n '/is ready/,/Join token/p' "$root/node1.log"
echo "The other nodes: https://127.0.0.12:8443/ and https://127.0.0.13:8443/ (same cluster CA; each node logs its own setup code)."
echo "Press Ctrl-C to stop."
wait
