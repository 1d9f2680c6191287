package harness

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"
)

// reachable reports whether the host's namespace reaches n: a TCP
// connection to a port nothing listens on is refused by n's kernel, which
// takes a working link and ARP. It tries for about three seconds; a new
// veth on the bridge answers at once.
func (n *Node) reachable() error {
	var err error
	for range 3 {
		var conn net.Conn
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(n.IP, "1"), time.Second)
		if conn != nil {
			conn.Close()
		}
		if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the host does not reach %s at %s: %w", n.Name, n.IP, err)
}

// NetReport describes how the test process reaches n, for a test that could
// not: whether it reaches n now, the bridge's addresses, ports and
// neighbours, the host's route to n, and n's own side (addresses, links,
// neighbours, listening sockets, nftables). Commands that fail say so in the report. Without root it is
// empty: the node shares the host's network.
func (n *Node) NetReport() string {
	if n.Netns == "" {
		return ""
	}
	br := n.c.name
	var b strings.Builder
	if err := n.reachable(); err != nil {
		fmt.Fprintf(&b, "%v\n", err)
	} else {
		fmt.Fprintf(&b, "the host reaches %s at %s now\n", n.Name, n.IP)
	}
	for _, argv := range [][]string{
		{"ip", "-br", "addr", "show", "dev", br},
		{"ip", "-d", "link", "show", "dev", br},
		{"bridge", "link", "show", "master", br},
		{"ip", "neigh", "show", "dev", br},
		{"ip", "route", "get", n.IP},
		{"sh", "-c", "echo neighbours $(ip neigh show | wc -l) of gc_thresh3 $(cat /proc/sys/net/ipv4/neigh/default/gc_thresh3)"},
		n.wrap([]string{"ip", "-br", "addr"}),
		n.wrap([]string{"ip", "-br", "link"}),
		n.wrap([]string{"ip", "neigh"}),
		n.wrap([]string{"ss", "-ltn"}),
		n.wrap([]string{"nft", "list", "tables"}),
	} {
		out, err := run(argv[0], argv[1:]...)
		if err != nil {
			out = err.Error() + "\n"
		}
		fmt.Fprintf(&b, "$ %s\n%s", strings.Join(argv, " "), out)
	}
	return b.String()
}
