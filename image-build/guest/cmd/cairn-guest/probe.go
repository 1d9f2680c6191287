//go:build linux

package main

import (
	"bufio"
	"net"
	"strings"
	"time"
)

// Network work a test asks for in the guest's user-data, one line each:
//
//	# cairn-guest probe HOST:PORT
//
// (a comment in a #cloud-config, so real cloud-init ignores it). HOST may
// be a name: it resolves through the DNS servers and domain of the DHCP
// lease (net.go writes them to /etc/resolv.conf).
// The guest connects to each target over TCP every two seconds, reads the
// first line the target sends, and prints the outcome whenever it changes:
//
//	cairn-guest: probe 10.51.0.2:8080 ok hostname=viewer1 ip=10.51.0.2
//	cairn-guest: probe 203.0.113.1:80 fail connect
//
// so a test sees what the guest can reach, and from when, on its serial log.

// probeTargets returns the targets user-data names.
func probeTargets(userData []byte) []string {
	var out []string
	for _, line := range strings.Split(string(userData), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if len(f) == 3 && f[0] == "cairn-guest" && f[1] == "probe" {
			out = append(out, f[2])
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

func probeOnce(target string) string {
	c, err := net.DialTimeout("tcp", target, 1500*time.Millisecond)
	if err != nil {
		return "fail connect"
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "fail read"
	}
	return "ok " + strings.TrimSpace(line)
}
