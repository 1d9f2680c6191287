//go:build linux

package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Network work a test asks for in the guest's user-data, one line each:
//
//	# cairn-guest probe HOST:PORT       (TCP)
//	# cairn-guest probe udp HOST:PORT
//	# cairn-guest probe ping HOST
//
// (comments in a #cloud-config, so real cloud-init ignores them). HOST may
// be a name: it resolves through the DNS servers and domain of the DHCP
// lease (net.go writes them to /etc/resolv.conf). Every two seconds the
// guest connects to each TCP target and reads the first line it sends,
// sends each UDP target a datagram and reads the one that comes back, and
// pings each ping target once; it prints the outcome whenever it changes:
//
//	cairn-guest: probe 10.51.0.2:8080 ok hostname=viewer1 ip=10.51.0.2
//	cairn-guest: probe udp 10.51.0.2:8080 ok hostname=viewer1 ip=10.51.0.2
//	cairn-guest: probe ping 10.51.0.2 ok
//	cairn-guest: probe 203.0.113.1:80 fail connect
//
// so a test sees what the guest can reach, and from when, on its serial
// log. The guest itself answers TCP and UDP on port 8080 (main.go) and,
// as any Linux, pings.

// probeTargets returns the targets user-data names: "HOST:PORT",
// "udp HOST:PORT" or "ping HOST".
func probeTargets(userData []byte) []string {
	var out []string
	for _, line := range strings.Split(string(userData), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		switch {
		case len(f) == 3 && f[0] == "cairn-guest" && f[1] == "probe":
			out = append(out, f[2])
		case len(f) == 4 && f[0] == "cairn-guest" && f[1] == "probe" && (f[2] == "udp" || f[2] == "ping"):
			out = append(out, f[2]+" "+f[3])
		}
	}
	return out
}

// probeLoop probes the targets for ever.
func probeLoop(con *console, targets []string) {
	last := map[string]string{}
	for {
		for _, t := range targets {
			if got := probeOnce(t); got != last[t] {
				last[t] = got
				con.Printf("probe %s %s", t, got)
			}
		}
		time.Sleep(2 * time.Second)
	}
}

const probeTimeout = 1500 * time.Millisecond

func probeOnce(target string) string {
	if addr, ok := strings.CutPrefix(target, "udp "); ok {
		return probeUDP(addr)
	}
	if host, ok := strings.CutPrefix(target, "ping "); ok {
		return probePing(host)
	}
	c, err := net.DialTimeout("tcp", target, probeTimeout)
	if err != nil {
		return "fail connect"
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(probeTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "fail read"
	}
	return "ok " + strings.TrimSpace(line)
}

// probeUDP sends one datagram and waits for the answer.
func probeUDP(target string) string {
	c, err := net.DialTimeout("udp", target, probeTimeout)
	if err != nil {
		return "fail resolve"
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	if _, err := c.Write([]byte("cairn-guest probe\n")); err != nil {
		return "fail send"
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return "fail read"
	}
	return "ok " + strings.TrimSpace(string(buf[:n]))
}

// probePing sends one ICMP or ICMPv6 echo request and waits for the reply.
func probePing(host string) string {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return "fail resolve"
	}
	ip := ips[0].IP
	network, proto, req, rep := "ip4:icmp", 1, icmp.Type(ipv4.ICMPTypeEcho), icmp.Type(ipv4.ICMPTypeEchoReply)
	if ip.To4() == nil {
		network, proto, req, rep = "ip6:ipv6-icmp", 58, ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, "")
	if err != nil {
		return "fail socket"
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	m := icmp.Message{Type: req, Body: &icmp.Echo{ID: id, Seq: 1, Data: []byte("cairn-guest")}}
	b, err := m.Marshal(nil)
	if err != nil {
		return "fail socket"
	}
	if _, err := c.WriteTo(b, &net.IPAddr{IP: ip}); err != nil {
		return "fail send"
	}
	_ = c.SetReadDeadline(time.Now().Add(probeTimeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return "fail timeout"
		}
		r, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || r.Type != rep {
			continue
		}
		if e, ok := r.Body.(*icmp.Echo); ok && e.ID == id && from.String() == ip.String() {
			return "ok"
		}
	}
}
