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
//     of three rounds with their spread, and the read's CPU cost;
//   - reedsolomon's in-process encode speed for 4+2 on 1 MiB stripes;
//   - an HTTPS ceiling: a Go HTTPS server on loopback, with the S3 port's
//     TLS (tlsbatch), serving the largest object from memory, with its CPU
//     cost;
//   - S3 PUT and GET MiB/s through minio-go for 4 KiB, 1 MiB and 64 MiB
//     objects at 1, 8 and 32 concurrent clients spread over the three nodes,
//     each phase bounded by time (-round) and bytes (-budget); the page cache
//     is dropped before each GET phase and the objects deleted after it;
//   - the CPU seconds per GiB the nodes and the clients spent in each phase;
//   - each node's resident memory (VmRSS), sampled during the load and read
//     again after it idled.
//
// Targets: 64 MiB PUT (best over the concurrencies) at least 50% of the raw
// write speed, 64 MiB GET at least 70% of the raw read speed, and every
// node's peak resident memory under load below -rss-limit. Beside the GET
// target the report says how fast these cores could serve GET at the CPU
// cost measured, whatever the disk, and how fast even an ideal server could:
// one disk read and one TLS hop per byte at the ceiling's cost, plus the hop
// between nodes that half of every 4+2 object must take.
//
// -quick measures fewer sizes and concurrencies in shorter rounds. The
// markdown goes to stdout (and to -out); progress goes to stderr. It needs root
// for the namespaces and for dropping the page cache.
package main
