# Cairn. `make run` and `make test` do all the setup on a fresh Debian 12
# machine as root (Debian packages with apt-get, Go from the Go module proxy).

SHELL := /bin/bash
GOFLAGS ?= -mod=mod
export GOFLAGS
BIN := bin/cairn
DEV_DATA ?= data/dev
# A count, not a duration: a -fuzztime duration can fail a clean run with a bare
# "context deadline exceeded" (a race in Go's fuzz coordinator, golang/go#75804,
# fixed in Go 1.27). 100000 runs take 7-10 s per target here.
FUZZTIME ?= 100000x

# Fuzz targets run briefly by `make test`: package:Target[:runs[:minimize]].
# The S3 targets that sign with real clients' signers or run a whole
# in-process pool per input are slower than the decoders, so they get fewer
# runs, as does the image probe (real qemu-img per input), and the gateway
# and image ones minimize nothing (each new input would cost
# seconds of minimizing against a three-node pool).
FUZZ := ./consensus:FuzzDecodeCommand ./consensus:FuzzRestoreSnapshot ./appliance/api:FuzzDecodeRequest \
	./storage/s3:FuzzSignatureParse:30000x ./storage/s3:FuzzSignatureClients:20000x \
	./storage/s3:FuzzAWSChunked:1000x ./storage/s3:FuzzXMLBodies:150x:0x \
	./hypervisor:FuzzImageProbe:300x:0x ./hypervisor/cloudinit:FuzzSeed:50000x \
	./storage/nbd:FuzzRequestDecoder:100000x ./storage/nbd:FuzzOptions:120000x \
	./storage/volume:FuzzReplicaRequest:100000x

.PHONY: all build run image guest-image image-cluster cluster test test-go test-cluster test-idle qa-prebuild fuzz vet generate bench-consensus bench-storage bench-image bench-compute bench-volumes bench-network bench-ha bench-federation clean

all: build

build:
	@GO=$$(qa/scripts/deps.sh run) && $$GO build -o $(BIN) ./appliance/cmd/cairn

## run: a one-node appliance (the embedded default) with its data in $(DEV_DATA)
# Each VM's QEMU runs as a user of its own and opens its disk by path, so
# the data dir must be reachable by other users: a checkout under /root
# (0700) is not, and then the data goes to /var/lib/cairn/dev instead.
run: build
	@test -s image-build/out/guest.qcow2 || $(MAKE) --no-print-directory guest-image
	@dir=$(DEV_DATA); mkdir -p $$dir; \
	if ! setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$$dir" 2>/dev/null; then \
		echo "run: $$dir is under a directory other users cannot pass through (VMs run as users of their own); using /var/lib/cairn/dev"; \
		dir=/var/lib/cairn/dev; mkdir -p $$dir; fi; \
	echo ./$(BIN) agent --dev --data-dir $$dir --sample-image image-build/out/guest.qcow2; \
	exec ./$(BIN) agent --dev --data-dir $$dir --sample-image image-build/out/guest.qcow2

## image: the appliance's boot files in image-build/out (Debian's kernel, a u-root userland with cairn as init)
image:
	@GO=$$(qa/scripts/deps.sh image) && image-build/build.sh $$GO

## guest-image: the test guest image-build/out/guest.qcow2 (BIOS/UEFI disk; init reads its cloud-init seed, DHCP, port 8080)
guest-image:
	@GO=$$(qa/scripts/deps.sh image) && image-build/guest.sh $$GO

## image-cluster: three appliance boxes in QEMU on a private bridge (after make image); Ctrl-C removes them
image-cluster: image
	@image-build/cluster.sh

## cluster: three local nodes on 127.0.0.11-13, for trying the cluster by hand
cluster: build
	qa/scripts/cluster.sh $(BIN)

## test: everything, as CI runs it (root: network namespaces, nftables, chromium)
test:
	@GO=$$(qa/scripts/deps.sh test) && PATH=$$(dirname $$GO):$$PATH $(MAKE) --no-print-directory vet test-go

vet:
	go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# The packages where goroutines share state (Raft, the shard servers, the VM
# workers) run under the race detector.
RACE_PKGS := ./consensus/... ./storage/... ./hypervisor/...

# The real-process clusters of qa/cluster wait on guests and timers about
# half the time. While they run, a second lane fills those cores at nice 19
# (it gets little while qa/cluster wants both): the appliance image's boots,
# then the fuzz runs. Neither has a bound a slow run can break, except two
# image tests that run after the lanes, alone: the watchdog test (a 3 s
# timeout inside a guest) and the VLAN test (a guest inside the box, both
# emulated, which starved beside qa/cluster). So do the browser tests,
# which a busy core starves. The unit and race tests, whose timing bounds
# (Raft elections, fsync waits) a busy core stretches, run before the lanes.
# The real-process suites run one package at a time within a lane.
QA_ALONE := ^(TestWatchdogResetsHungBox|TestVLANNetworkReachesTaggedPeer)$$
test-go: qa-prebuild
	go test -count=1 -timeout 25m $$(go list ./... | grep -v -e '/qa/' -e '/consensus' -e '/storage' -e '/hypervisor')
	CGO_ENABLED=1 go test -race -count=1 -timeout 25m $(RACE_PKGS)
	@$(MAKE) --no-print-directory -j2 test-cluster test-idle
	go test -count=1 -timeout 15m -p 1 $$(go list ./qa/... | grep -v -e '/qa/cluster$$' -e '/qa/image$$')
	go test -count=1 -timeout 30m -run '$(QA_ALONE)' ./qa/image

test-cluster:
	go test -count=1 -timeout 45m ./qa/cluster

test-idle:
	nice -n 19 go test -count=1 -timeout 45m -skip '$(QA_ALONE)' ./qa/image
	@nice -n 19 $(MAKE) --no-print-directory fuzz

# What both lanes' test processes would otherwise build at once: the cairn
# binary (its build is also atomic, see qa/harness) and the test guest.
qa-prebuild:
	go build -o qa/.bin/cairn ./appliance/cmd/cairn
	@test -s image-build/out/guest.qcow2 || image-build/guest.sh $$(command -v go)

# New inputs are minimized for at most 2 s: by default the fuzzer spends up
# to a minute minimizing each one, and within a 10 s run that was most of it
# (no executions while it minimized).
fuzz:
	@for t in $(FUZZ); do IFS=: read -r pkg fn runs min <<< "$$t"; runs=$${runs:-$(FUZZTIME)}; \
		echo "fuzz $$pkg $$fn, $$runs"; \
		go test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $$runs -fuzzminimizetime $${min:-2s} $$pkg || exit 1; done

## generate: regenerate templ components (the generated files are committed)
generate:
	go tool templ generate -path ui

## bench-consensus: Cairn vs etcd on this machine (writes/s, p50/p99, failover, RSS)
bench-consensus:
	@GO=$$(qa/scripts/deps.sh bench) && $$GO run ./qa/bench/consensus $(BENCH_ARGS)

## bench-image: image size, build time, power-on to ready beside a trivial init on the same kernel
bench-image:
	@GO=$$(qa/scripts/deps.sh test) && PATH=$$(dirname $$GO):$$PATH $$GO run ./qa/bench/image $(BENCH_ARGS)

## bench-storage: 4 KiB PUT/GET objects/s beside Cairn's own Raft write rate, and S3 PUT/GET MiB/s beside raw disk speed and the GET bound, on 3 nodes
bench-storage:
	@GO=$$(qa/scripts/deps.sh run) && $$GO run ./qa/bench/storage $(BENCH_ARGS)

## bench-compute: API create to the guest's first serial line beside bare QEMU; 30 VMs at once on one node
bench-compute:
	@GO=$$(qa/scripts/deps.sh image) && PATH=$$(dirname $$GO):$$PATH $$GO run ./qa/bench/compute $(BENCH_ARGS)

## bench-volumes: a 3-replica volume over NBD beside a local raw file (fio: 4 KiB random QD1/QD32, 1 MiB sequential), and resync after a replica's outage
bench-volumes:
	@GO=$$(qa/scripts/deps.sh bench) && PATH=$$(dirname $$GO):$$PATH $$GO run ./qa/bench/volumes $(BENCH_ARGS)

## bench-network: guest-to-guest TCP over a project network's VXLAN segment between two boxes (namespaces) beside a plain bridge
bench-network:
	@GO=$$(qa/scripts/deps.sh bench) && PATH=$$(dirname $$GO):$$PATH $$GO run ./qa/bench/network $(BENCH_ARGS)

## bench-ha: live migration on 3 nodes beside a bare QEMU-to-QEMU migration over the same TLS (downtime, total time, the guest's TCP gap); HA restarts (a box killed) beside a bare QEMU restart; a drain of 10 VMs
bench-ha:
	@GO=$$(qa/scripts/deps.sh bench) && PATH=$$(dirname $$GO):$$PATH $$GO run ./qa/bench/ha $(BENCH_ARGS)

## bench-federation: a hub with 1,000 simulated sites (real enrolment, TLS, sessions, 50-VM inventories): memory per site beside the hub with none, CPU per heartbeat, change to hub, bulk operation, reconnect storm after a hub restart
bench-federation:
	@GO=$$(qa/scripts/deps.sh bench) && $$GO run ./qa/bench/federation $(BENCH_ARGS)

clean:
	rm -rf bin data qa/.bin qa/artifacts
