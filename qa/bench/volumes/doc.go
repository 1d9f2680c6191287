// Command volumes (`make bench-volumes`, or `go run ./qa/bench/volumes`)
// measures Cairn's block volumes on this machine and prints a markdown
// report with PASS or MISS per target (issue 16). It is a measurement, not
// a test: a missed target is reported, and the exit status is non-zero only
// when something could not be measured at all.
//
// It starts, through qa/harness, three `cairn agent` nodes in network
// namespaces, each with one directory disk under its data dir (on the
// machine's disk, not tmpfs), creates a 10 GiB volume (three replicas, one
// per node), attaches it to node1's host and finds its NBD unix socket.
// Then, in one run:
//
//   - fio jobs against the volume (fio's nbd engine) and, as the reference,
//     the same jobs against a raw file of the same size on the same
//     filesystem (libaio, O_DIRECT; fio.go says why): 4 KiB random read and
//     write at QD1 and QD32, 1 MiB sequential read and write, each job
//     local then volume so noise falls on both; IOPS, MiB/s, p50/p99 and
//     the ratio; the write jobs also against the local file through the
//     page cache, for information (see pageCacheTarget);
//   - a round trip to a peer node (HTTPS on a kept connection), the term of
//     the QD1 write bound;
//   - resync: node3 is killed, 1 GiB written in 1 MiB writes, node3
//     restarted; the bytes the writer copied back into it
//     (cairn_volume_resync_bytes_total) and the time until every replica is
//     in sync.
//
// Targets: QD32 random write ≥ 50% and random read ≥ 70% of local IOPS;
// a QD1 durable write (write + flush) at p50 within the local write plus
// the local fdatasync plus one round trip; sequential read and write ≥ 70%
// of local MiB/s; resync copies at most 1.1× what was written.
//
// It needs root (namespaces, dropping the page cache) and fio. The report
// goes to stdout (and to -out); progress to stderr. -profile DIR writes CPU
// profiles of the nodes during the volume's QD32 and sequential jobs.
package main
