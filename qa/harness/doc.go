// Package harness runs multi-node tests against real processes: N copies of a
// binary (Cairn's `cairn agent`, or any program), each in its own network
// namespace with its own IP on a shared bridge, with faults to inject — kill,
// restart, freeze (SIGSTOP/SIGCONT), network partitions — and nodes to add or
// remove while the cluster runs.
//
// # What it owns
//
// As root, a cluster creates, and its t.Cleanup deletes, only objects named
// after its prefix "cqa" + 6 hex digits (Cluster.Name):
//
//   - a bridge cqaXXXXXX in the root namespace holding the host address
//     10.X.Y.1/24, where 10.X.Y.0/24 (X in 200..250) overlaps no address or route
//     on the host; the test process reaches every node at its IP directly;
//   - per node i, a namespace cqaXXXXXX-n<i> whose eth0 (10.X.Y.(10+i)/24) and lo
//     are up, joined to the bridge by the veth cqaXXXXXXv<i>; there is no default
//     route, so nodes reach only each other and the host address;
//   - inside node namespaces, the nftables table "inet cairnqa" that Partition
//     writes and Heal deletes; nothing else in the namespace is touched;
//   - /run/cairnqa/cqaXXXXXX.owner, naming the test process that owns the
//     cluster, and /run/cairnqa/lock, which serialises subnet choice between
//     concurrent test processes;
//   - the processes it started (each in its own process group, signalled as a
//     group) and a temporary directory with each node's data directory and log.
//
// Nothing else on the host is changed. CleanupStale (which New runs once per
// process) removes what a crashed run left behind: objects of the naming pattern
// whose owner process is gone, with any process still inside their namespaces.
//
// Partition cuts IPv4 between node namespaces; traffic between a node and the
// test process on the bridge address is never cut, so a test can always observe
// and drive every node. The bridge lives in the root namespace, so a host
// firewall that filters bridged or local traffic (br_netfilter is commonly
// loaded) can affect the cluster; the harness does not change it.
//
// Without root there are no namespaces: node i runs on the host and gets
// 127.0.0.(10+i); Partition and Heal fail the test saying they need root.
//
// When a test fails, the last lines of every node's log are printed and all logs
// are copied to qa/artifacts/<test name>/ under the module root. Every node start
// is logged with a command line that reproduces it by hand.
//
// Only tests and test programs (qa/..., _test.go files) may import harness.
package harness
