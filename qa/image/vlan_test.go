package image

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A VLAN provider network reaches a tagged peer on the site's network.
//
// This host's kernel has no 802.1Q devices (and no bridge VLAN
// filtering), so the box runs here as the appliance image in QEMU, whose
// Debian kernel has them, and its VM runs inside it (TCG in TCG). The
// box's second NIC is the site's network: a tap on the host, where the
// test plays a switch port in a trunk (tagTrunk): frames tagged 100 go to
// and from a namespace with a real TCP server at 10.77.0.9, frames tagged
// 200 to another at 10.77.0.10. The VM, on the project's VLAN network 100
// on eth1, gets its address from the box's DHCP over the VLAN, reaches
// the peer on VLAN 100, and not the one on 200; nothing it sends leaves
// the box untagged or on another VLAN. The peer on VLAN 100 is the site's
// router there, the network's gateway: the VM reaches an address behind
// it (the box hands the router out by DHCP and never answers for it).
func TestVLANNetworkReachesTaggedPeer(t *testing.T) {
	files := bootFiles(t)
	guest := harness.GuestImage(t)
	site := harness.NewBridge(t)
	uplink, err := site.AddTap(1)
	if err != nil {
		t.Fatal(err)
	}
	trunk := newTagTrunk(t, uplink, site.Name, map[int]string{100: "10.77.0.9", 200: "10.77.0.10"})
	// The peer on VLAN 100 is also the site's router there: behind it,
	// 192.0.2.9 (an address of its own, so it answers itself).
	if out, err := exec.Command("ip", "-n", peerNS(site.Name, 100), "addr", "add", "192.0.2.9/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	servePeer(t, peerNS(site.Name, 100), "192.0.2.9", 100)

	// QEMU comes from the slot's system image: the box boots the UEFI
	// disk image (TestUEFIDiskImage), its settings in cairn/boot.json.
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	copyFile(t, filepath.Join(files, "cairn.img"), disk)
	if err := os.Truncate(disk, 6<<30); err != nil {
		t.Fatal(err)
	}
	// The VM runs under TCG inside the box: the box's emulated CPU offers
	// virtualisation, but KVM on it would be slower still.
	cfg := filepath.Join(dir, "boot.json")
	if err := os.WriteFile(cfg, []byte(`{"expect": 1, "iface": "eth0", "agent": ["--accel=tcg"]}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mcopy", "-i", disk+"@@1M", cfg, "::cairn/boot.json").CombinedOutput(); err != nil {
		t.Fatalf("mcopy: %v\n%s", err, out)
	}
	vars := filepath.Join(dir, "vars.fd")
	copyFile(t, "/usr/share/OVMF/OVMF_VARS_4M.fd", vars)
	netdev, apiAddr := userNet(t)
	b := boot(t, uefi(disk, vars), netdev, apiAddr, 0x31,
		"-m", "2048",
		"-netdev", fmt.Sprintf("tap,id=n1,ifname=%s,script=no,downscript=no", uplink),
		"-device", "virtio-net-pci,netdev=n1,mac=52:54:00:ca:12:31")
	b.waitReady(time.Now(), 4*time.Minute)
	a := adminOf(t, b)

	call := func(method, path string, body any, want int, out any) {
		t.Helper()
		if err := a.call(method, path, body, out, want); err != nil {
			t.Fatal(err)
		}
	}
	call("POST", "/api/v1/projects", map[string]string{"name": "radiology"}, 201, nil)
	call("POST", "/api/v1/flavors", map[string]any{"name": "tiny", "vcpus": 1, "ram_mib": 256, "disk_gib": 1}, 201, nil)
	a.upload(guest, url.Values{"name": {"guest"}, "project": {"radiology"}, "os_type": {"linux"}})
	// Bad VLAN networks change nothing (a member's is refused in
	// netfabric's TestVLANNetworks).
	call("POST", "/api/v1/networks", map[string]any{"name": "pacs", "project": "radiology", "cidr": "10.77.0.0/24", "vlan": 4095, "interface": "eth1"}, 400, nil)
	call("POST", "/api/v1/networks", map[string]any{"name": "pacs", "project": "radiology", "cidr": "10.77.0.0/24", "vlan": 100}, 400, nil)
	var nw struct {
		ID   string `json:"id"`
		VLAN int    `json:"vlan"`
		MTU  int    `json:"mtu"`
	}
	// The network's gateway is the site's router at 10.77.0.9: the box hands
	// it out and never answers for it.
	call("POST", "/api/v1/networks", map[string]any{"name": "pacs", "project": "radiology", "cidr": "10.77.0.0/24", "vlan": 100, "interface": "eth1",
		"site_gateway": true, "gateway": "10.77.0.9", "dns": []string{"10.77.0.9"}, "pools": []map[string]string{{"start": "10.77.0.100", "end": "10.77.0.199"}}}, 201, &nw)
	if nw.VLAN != 100 || nw.MTU != 1500 {
		t.Fatalf("network %+v", nw)
	}
	// The site's machines on the VLAN may reach the VM's port 8080.
	call("POST", "/api/v1/security-groups", map[string]any{"name": "site-in", "project": "radiology",
		"rules": []map[string]any{{"direction": "ingress", "protocol": "tcp", "port_min": 8080, "remote_cidr": "10.77.0.0/24"}}}, 201, nil)
	call("POST", "/api/v1/vms", map[string]any{"name": "viewer", "project": "radiology", "image": "guest", "flavor": "tiny", "local_disk": true,
		"networks": []string{"pacs"}, "security_groups": []string{"default", "site-in"},
		"user_data": "#cloud-config\n# cairn-guest probe 10.77.0.9:7000\n# cairn-guest probe 10.77.0.10:7000\n# cairn-guest probe 192.0.2.9:7000\n"}, 201, nil)

	var vm struct {
		Status struct {
			State string `json:"state"`
			Error string `json:"error"`
		} `json:"status"`
		NICs []struct {
			IP  string `json:"ip"`
			MAC string `json:"mac"`
		} `json:"nics"`
	}
	testutil.WaitFor(t, 4*time.Minute, "the VM running", func() error {
		// The box runs the guest under TCG inside TCG: its API may stall
		// for a while as QEMU starts; a poll that times out polls again.
		if err := a.call("GET", "/api/v1/vms/viewer", nil, &vm, 200); err != nil {
			return err
		}
		if vm.Status.State != "running" {
			return fmt.Errorf("state %s %s", vm.Status.State, vm.Status.Error)
		}
		return nil
	})
	if len(vm.NICs) != 1 || !strings.HasPrefix(vm.NICs[0].IP, "10.77.0.1") {
		t.Fatalf("NICs %+v", vm.NICs)
	}
	ip, mac := vm.NICs[0].IP, vm.NICs[0].MAC
	trunk.watch(mac)
	// Booting a VM in an emulated box is slow: minutes, not seconds.
	want := []string{
		"cairn-guest: hostname=viewer ip=" + ip,
		"cairn-guest: probe 10.77.0.9:7000 ok vlan=100 peer=" + ip,
		"cairn-guest: probe 10.77.0.10:7000 fail",
		// Through the site's router, the VM's default route from DHCP.
		"cairn-guest: probe 192.0.2.9:7000 ok vlan=100 peer=" + ip,
	}
	testutil.WaitFor(t, 12*time.Minute, "the guest's DHCP address and probes", func() error {
		log := a.serialLog("viewer")
		for _, w := range want {
			if !strings.Contains(log, w) {
				return fmt.Errorf("no %q in the guest's console yet", w)
			}
		}
		return nil
	})
	// The peer on VLAN 100 reaches the VM (through site-in).
	hello := "hostname=viewer ip=" + ip
	testutil.WaitFor(t, time.Minute, "the peer reaches the VM", func() error { return askIn(peerNS(site.Name, 100), ip+":8080", hello) })
	// A machine on the VLAN poses as the VM: its MAC and its address, in
	// gratuitous ARP a hundred times a second. The box keeps it off the
	// VM's bridge port, else the bridge would take the VM to be on the
	// site's side and send the peer's traffic for it nowhere.
	stopSpoof := trunk.spoof(100, mac, ip)
	time.Sleep(2 * time.Second)
	for i := range 5 {
		if err := askIn(peerNS(site.Name, 100), ip+":8080", hello); err != nil {
			stopSpoof()
			t.Fatalf("while a site machine posed as the VM, the peer's connection %d: %v", i, err)
		}
		time.Sleep(time.Second)
	}
	stopSpoof()
	if bad := trunk.violations(); len(bad) > 0 {
		t.Fatalf("the VM's frames left the box off its VLAN:\n%s", strings.Join(bad, "\n"))
	}
	if n := trunk.seen(100); n == 0 {
		t.Fatal("no frame of the VM's on VLAN 100")
	}
}

// adminOf creates the first admin from the setup code on b's console and
// logs in.
func adminOf(t *testing.T, b *box) *api {
	t.Helper()
	var code string
	testutil.WaitFor(t, time.Minute, "a setup code on the console", func() error {
		m := setupCode.FindAllStringSubmatch(b.Console(), -1)
		if len(m) == 0 {
			return errors.New("none yet")
		}
		code = m[len(m)-1][1]
		return nil
	})
	a := &api{t: t, box: b}
	if err := a.call("POST", "/api/v1/setup", map[string]string{"setup_code": code, "username": "admin", "password": "correct horse battery"}, nil, 201); err != nil {
		t.Fatal(err)
	}
	var res struct{ Token string }
	testutil.WaitFor(t, time.Minute, "admin login", func() error {
		return a.call("POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": "correct horse battery"}, &res, 200)
	})
	a.token = res.Token
	return a
}

// upload streams an image file to the box.
func (a *api) upload(path string, q url.Values) {
	a.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	req, _ := http.NewRequest("POST", "https://"+a.box.api+"/api/v1/images/upload?"+q.Encode(), f)
	req.Header.Set("Authorization", "Bearer "+a.token)
	c := a.box.client()
	c.Timeout = 5 * time.Minute
	res, err := c.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 201 {
		body, _ := bufio.NewReader(res.Body).ReadString(0)
		a.t.Fatalf("upload %s: %s %s", path, res.Status, body)
	}
}

// serialLog is the tail of a VM's serial console.
func (a *api) serialLog(vm string) string {
	req, _ := http.NewRequest("GET", "https://"+a.box.api+"/api/v1/vms/"+vm+"/serial-log?bytes=1048576", nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	res, err := a.box.client().Do(req)
	if err != nil {
		return ""
	}
	defer res.Body.Close()
	var sb strings.Builder
	_, _ = bufio.NewReader(res.Body).WriteTo(&sb)
	return sb.String()
}

// tagTrunk plays the switch port of a VLAN trunk on a tap: frames tagged
// with a VLAN it serves are passed, untagged, to and from a namespace of
// their own (a peer with a kernel's own TCP/IP, answering on port 7000
// with "vlan=V peer=<the caller's address>"); frames it gets back from a
// peer are sent to the tap tagged. The host has no 802.1Q devices, so the
// tags are put on and taken off here, on packet sockets.
type tagTrunk struct {
	t    *testing.T
	tap  int // packet socket on the tap
	mu   sync.Mutex
	mac  string      // the VM's MAC, once known
	bad  []string    // its frames seen untagged or on a VLAN it is not on
	byID map[int]int // frames of the VM's seen per VLAN
}

const (
	etherTypeVLAN = 0x8100
	vlanValid     = 0x10 // TP_STATUS_VLAN_VALID
	vnetHdrLen    = 10   // struct virtio_net_hdr, before every frame on the sockets
)

// onesSum is the folded one's-complement sum of b (the Internet checksum's).
func onesSum(b []byte) uint16 {
	var sum uint32
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

func newTagTrunk(t *testing.T, tap, prefix string, peers map[int]string) *tagTrunk {
	t.Helper()
	tr := &tagTrunk{t: t, byID: map[int]int{}}
	var err error
	if tr.tap, err = packetSocket(tap); err != nil {
		t.Fatal(err)
	}
	// The tap's own IPv6 would add frames of the host's to the trunk.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+tap+"/disable_ipv6", []byte("1"), 0o644)
	socks := map[int]int{}
	for vid, addr := range peers {
		ns, host := peerNS(prefix, vid), fmt.Sprintf("%sv%d", prefix, vid)
		for _, argv := range [][]string{
			{"netns", "add", ns},
			{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"link", "set", host, "up"},
			{"-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
			{"-n", ns, "link", "set", "eth0", "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v %s", strings.Join(argv, " "), err, out)
			}
		}
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+host+"/disable_ipv6", []byte("1"), 0o644)
		if socks[vid], err = packetSocket(host); err != nil {
			t.Fatal(err)
		}
		servePeer(t, ns, addr, vid)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done) // the readers see it within their receive timeout
		wg.Wait()
		_ = unix.Close(tr.tap)
		for _, s := range socks {
			_ = unix.Close(s)
		}
	})
	// From the box: a served VLAN's frames to its peer, untagged.
	wg.Go(func() {
		for {
			frame, vid, ok := readFrame(tr.tap, done)
			if !ok {
				return
			}
			tr.note(frame, vid)
			if s, served := socks[vid]; served {
				_ = unix.Send(s, append(make([]byte, vnetHdrLen), frame...), 0)
			}
		}
	})
	// From a peer: to the box, tagged.
	for vid, s := range socks {
		wg.Go(func() {
			for {
				frame, _, ok := readFrame(s, done)
				if !ok || len(frame) < 14 {
					return
				}
				tagged := make([]byte, vnetHdrLen, vnetHdrLen+len(frame)+4) // no offloads asked for
				tagged = append(tagged, frame[:12]...)
				tagged = binary.BigEndian.AppendUint16(tagged, etherTypeVLAN)
				tagged = binary.BigEndian.AppendUint16(tagged, uint16(vid))
				tagged = append(tagged, frame[12:]...)
				_ = unix.Send(tr.tap, tagged, 0)
			}
		})
	}
	return tr
}

// packetSocket opens a raw packet socket on dev, with the VLAN tags the
// kernel takes off received frames handed over beside them.
func packetSocket(dev string) (int, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return -1, err
	}
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, err
	}
	// Closing a socket does not wake a thread blocked reading it: the
	// readers wake every 200 ms to see whether the test is over.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	// A frame a kernel or QEMU left its checksum to offload comes with a
	// virtio-net header saying where the checksum goes (readFrame fills
	// it in: the peer on the other side checks it).
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// readFrame reads the next frame that came in on fd (not one sent on it),
// with its VLAN id (0: untagged) and the tag taken out; it gives up once
// done is closed.
func readFrame(fd int, done <-chan struct{}) (frame []byte, vid int, ok bool) {
	buf, oob := make([]byte, 65536), make([]byte, 256)
	for {
		select {
		case <-done:
			return nil, 0, false
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return nil, 0, false
		}
		if ll, isLL := from.(*unix.SockaddrLinklayer); isLL && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n < vnetHdrLen {
			continue
		}
		frame, vid = buf[vnetHdrLen:n:n], 0
		if hdr := buf[:vnetHdrLen]; hdr[0]&1 != 0 { // VIRTIO_NET_HDR_F_NEEDS_CSUM
			start, off := int(binary.LittleEndian.Uint16(hdr[6:])), int(binary.LittleEndian.Uint16(hdr[8:]))
			if start+off+2 > len(frame) {
				continue
			}
			binary.BigEndian.PutUint16(frame[start+off:], ^onesSum(frame[start:]))
		}
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 20 {
				status := binary.NativeEndian.Uint32(m.Data[0:4])
				if status&vlanValid != 0 {
					vid = int(binary.NativeEndian.Uint16(m.Data[16:18]) & 0xfff)
				}
			}
		}
		if vid == 0 && len(frame) >= 18 && binary.BigEndian.Uint16(frame[12:14]) == etherTypeVLAN {
			vid = int(binary.BigEndian.Uint16(frame[14:16]) & 0xfff)
			frame = append(append([]byte(nil), frame[:12]...), frame[16:]...)
		}
		return append([]byte(nil), frame...), vid, true
	}
}

// spoof sends, every 10 ms until the returned stop is called, a
// gratuitous ARP on VLAN vid from the MAC mac for the address ip, as a
// machine on the site's network posing as the VM would.
func (tr *tagTrunk) spoof(vid int, mac, ip string) (stop func()) {
	hw, err := net.ParseMAC(mac)
	a := net.ParseIP(ip).To4()
	if err != nil || a == nil {
		tr.t.Fatalf("spoof %s %s: %v", mac, ip, err)
	}
	frame := make([]byte, vnetHdrLen, vnetHdrLen+46)
	frame = append(frame, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	frame = append(frame, hw...)
	frame = binary.BigEndian.AppendUint16(frame, etherTypeVLAN)
	frame = binary.BigEndian.AppendUint16(frame, uint16(vid))
	frame = binary.BigEndian.AppendUint16(frame, 0x0806)
	frame = append(frame, 0, 1, 8, 0, 6, 4, 0, 2) // Ethernet, IPv4, reply
	frame = append(append(append(append(frame, hw...), a...), hw...), a...)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = unix.Send(tr.tap, frame, 0)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// watch starts counting the frames the VM (its MAC) sends.
func (tr *tagTrunk) watch(mac string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.mac = mac
}

func (tr *tagTrunk) note(frame []byte, vid int) {
	if len(frame) < 14 {
		return
	}
	src := net.HardwareAddr(frame[6:12]).String()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.mac == "" || src != tr.mac {
		return
	}
	tr.byID[vid]++
	if vid != 100 && len(tr.bad) < 20 {
		tr.bad = append(tr.bad, fmt.Sprintf("VLAN %d: % x", vid, frame[:min(len(frame), 42)]))
	}
}

func (tr *tagTrunk) violations() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.bad...)
}

func (tr *tagTrunk) seen(vid int) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.byID[vid]
}

// servePeer listens on addr:7000 inside namespace ns, answering each
// connection with the VLAN and the caller's address.
func servePeer(t *testing.T, ns, addr string, vid int) {
	t.Helper()
	l, err := listenIn(ns, addr+":7000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "vlan=%d peer=%s\n", vid, host)
			c.Close()
		}
	}()
}

// peerNS names the namespace of the peer on VLAN vid.
func peerNS(prefix string, vid int) string { return fmt.Sprintf("%s-n%d", prefix, vid) }

// askIn connects to addr from inside namespace ns and expects the first
// line to hold want.
func askIn(ns, addr, want string) error {
	var c net.Conn
	if err := inNamespace(ns, func() (err error) { c, err = net.DialTimeout("tcp", addr, 3*time.Second); return err }); err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(line, want) {
		return fmt.Errorf("got %q, want %q", line, want)
	}
	return nil
}

// listenIn opens a TCP listener inside a named network namespace.
func listenIn(ns, addr string) (l net.Listener, err error) {
	err = inNamespace(ns, func() error { l, err = net.Listen("tcp", addr); return err })
	return l, err
}

// inNamespace runs fn on a thread in the named network namespace: the
// sockets fn makes keep that namespace.
func inNamespace(ns string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}
