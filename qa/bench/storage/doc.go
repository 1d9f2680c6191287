// Command storage (`make bench-storage`, or `go run ./qa/bench/storage`)
// measures Cairn's object storage on this machine and prints a markdown report
// with PASS or MISS per target. It is a measurement, not a test: a missed
// target is reported, and the exit status is non-zero only when something
// could not be measured at all.
//
// It starts, through qa/harness, three `cairn agent` nodes in network
// namespaces, each offering two directory disks (disks/d1, disks/d2 under its
// data dir), so objects are erasure-coded 4+2. It then measures, in one run:
//
//   - the raw sequential write (write + fsync) and read (after dropping
//     the page cache) speed of the filesystem holding those disks, the median
//     of three rounds with their spread, and their CPU cost; the write is
//     measured again before each 64 MiB PUT phase, and beside it the
//     device's own speed (O_DIRECT);
//   - reedsolomon's in-process encode speed for 4+2 on 1 MiB stripes;
//   - an HTTPS ceiling: a Go HTTPS server on loopback, with the S3 port's
//     TLS (tlsbatch), serving the largest object from memory, with its CPU
//     cost;
//   - small objects: 4 KiB PUT and GET objects/s and p50/p99 at 1, 32 and
//     128 closed-loop clients, against Cairn's own Raft write measured on the
//     same cluster in rounds alternating with them: bench-consensus's
//     workload (benchrun.ProjectWrites), each client PATCHing a project of
//     its own;
//   - S3 PUT and GET MiB/s through minio-go for 1 MiB and 64 MiB objects at
//     1, 8 and 32 concurrent clients spread over the three nodes, each phase
//     bounded by time (-round) and bytes (-budget); the page cache is dropped
//     before each GET phase and the objects deleted after it;
//   - the CPU seconds per GiB (per operation for small objects) the nodes and
//     the clients spent in each phase, and how busy the rest of the machine
//     was meanwhile;
//   - each node's resident memory (VmRSS), sampled during the load and read
//     again after it idled.
//
// Targets: 4 KiB PUT at least 0.5× and 4 KiB GET at least 1.0× the Raft
// write rate at every concurrency; 64 MiB PUT (best over the concurrencies)
// at least 80% of the raw write; 64 MiB GET at least 80% of the most any GET
// could do on these cores (one disk read and one TLS hop per byte at the
// ceiling's cost, plus the hop between nodes that half of every 4+2 object
// must take); every node's peak resident memory under load below -rss-limit.
//
// This VM returns freed memory to its host, so a write into memory freed a
// moment ago is several times faster than one into memory the host must
// fault in again: the raw write and the PUT phases start only after a pause
// of 10 s in which the benchmark frees nothing (settle). The VM is also
// shared: each phase first waits, up to -quiet-wait, for the rest of the
// machine to go quiet.
//
// -quick measures fewer sizes and concurrencies in shorter rounds. The
// markdown goes to stdout (and to -out); progress goes to stderr. It needs root
// for the namespaces and for dropping the page cache.
package main
