// Command consensus (`make bench-consensus`, or `go run ./qa/bench/consensus`)
// measures Cairn's replicated writes against etcd on this machine and prints a
// markdown report with PASS or MISS per target. It is a measurement, not a
// test: a missed target is reported, and the exit status is non-zero only when
// something could not be measured at all.
//
// It starts, through qa/harness, two 3-node clusters in network namespaces on
// the same machine: `cairn agent` (built from ./appliance/cmd/cairn unless
// -cairn names a binary) and Debian's etcd, both with TLS on client and peer
// traffic and etcd with fsync on (its default). Cairn's nodes keep their Raft
// log in -raft-log-store (wal, the default for new nodes, or boltdb). It then
// measures:
//
//   - writes/s and p50/p99 latency with 1, 16 and 64 closed-loop clients
//     (-clients), each client on its own node ((i + round) mod 3) and key: Cairn's
//     PATCH /api/v1/projects/{id} against etcd's gateway POST /v3/kv/put, in
//     short rounds alternating between the two (-round, -rounds) so a noisy
//     machine affects both alike; ratios are Cairn over etcd;
//   - each node's resident memory (VmRSS) after the clusters idled (-idle),
//     once after start and once after the load;
//   - failover (-failovers): the leader SIGKILLed, to the first write a
//     survivor acknowledges; median and worst; etcd's for reference.
//
// The markdown goes to stdout (and to -out); progress goes to stderr, with the
// harness's own log under -v. Everything it creates — namespaces, bridge,
// processes, temporary directories — is removed at exit; on a failure the node
// logs are kept in qa/artifacts/bench-consensus/.
//
// It needs root for the namespaces (without root the harness runs every node
// on 127.0.0.x instead). Nothing imports it.
package main
