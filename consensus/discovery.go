package consensus

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"net"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LAN discovery: every node broadcasts a small UDP beacon on the management
// network, naming its gossip address and carrying a tag derived from the join
// token. A node that hears a beacon with its own tag joins that address over
// gossip, so boxes on one switch find each other with no seed addresses.
// The tag reveals nothing about the token; gossip itself is encrypted.

const beaconMagic = "CAIRN1"

func (n *Node) beaconTag() []byte {
	m := hmac.New(sha256.New, []byte(n.clusterKey()))
	m.Write([]byte("cairn discovery beacon"))
	return m.Sum(nil)[:12]
}

func (n *Node) startDiscovery() error {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(n.ctx, "udp4", ":"+strconv.Itoa(n.cfg.DiscoveryPort))
	if err != nil {
		return err
	}
	go func() {
		<-n.ctx.Done()
		pc.Close()
	}()
	n.goRun(func(ctx context.Context) { n.listenBeacons(pc) })
	n.goRun(func(ctx context.Context) { n.sendBeacons(ctx, pc) })
	return nil
}

func (n *Node) beacon() []byte {
	addr := net.JoinHostPort(n.cfg.AdvertiseAddr, strconv.Itoa(n.cfg.GossipPort))
	return append(append([]byte(beaconMagic), n.beaconTag()...), addr...)
}

func (n *Node) sendBeacons(ctx context.Context, pc net.PacketConn) {
	dst := &net.UDPAddr{IP: broadcastAddr(n.cfg.AdvertiseAddr), Port: n.cfg.DiscoveryPort}
	for {
		if _, err := pc.WriteTo(n.beacon(), dst); err != nil {
			n.log.Debug("discovery beacon failed", "dst", dst, "err", err)
		}
		// Fast while forming, slow once the cluster has company.
		wait := time.Second
		if n.gossip.NumMembers() >= n.cfg.Expect && n.Raft() != nil {
			wait = 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (n *Node) listenBeacons(pc net.PacketConn) {
	self := net.JoinHostPort(n.cfg.AdvertiseAddr, strconv.Itoa(n.cfg.GossipPort))
	buf := make([]byte, 512)
	for {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		msg := buf[:k]
		tag := n.beaconTag() // changes once, when a node is paired
		if !bytes.HasPrefix(msg, []byte(beaconMagic)) || len(msg) < len(beaconMagic)+len(tag) {
			continue
		}
		if !hmac.Equal(msg[len(beaconMagic):len(beaconMagic)+len(tag)], tag) {
			// Another cluster on the same LAN: a node without the cluster
			// key may ask it to be paired.
			n.notePairCandidate(string(msg[len(beaconMagic)+len(tag):]))
			continue
		}
		addr := string(msg[len(beaconMagic)+len(tag):])
		if addr == self || n.knowsGossipAddr(addr) {
			continue
		}
		if _, err := n.gossip.Join([]string{addr}); err == nil {
			n.log.Info("discovered peer on the LAN", "addr", addr)
		}
	}
}

func (n *Node) knowsGossipAddr(addr string) bool {
	for _, m := range n.members() {
		if m.Addr == addr {
			return true
		}
	}
	return false
}

// broadcastAddr is the directed broadcast address of the interface holding ip,
// or the limited broadcast address when none does.
func broadcastAddr(ip string) net.IP {
	want := net.ParseIP(ip)
	ifaces, _ := net.Interfaces()
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || !ipn.IP.Equal(want) || ipn.IP.To4() == nil {
				continue
			}
			b := make(net.IP, 4)
			for i := range b {
				b[i] = ipn.IP.To4()[i] | ^ipn.Mask[len(ipn.Mask)-4+i]
			}
			return b
		}
	}
	return net.IPv4bcast
}
