package harness

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// Naming. Everything the harness creates on the host is named after a cluster
// prefix "cqa" + 6 hex digits, so CleanupStale can find it and never mistakes
// anything else for it:
//
//	bridge      cqa1a2b3c       (root namespace, holds the host IP .1)
//	veth        cqa1a2b3cv2     (root namespace end of node2's link)
//	netns       cqa1a2b3c-n2    (node2; its end of the veth is eth0)
const namePrefix = "cqa"

var ownedName = regexp.MustCompile(`^(cqa[0-9a-f]{6})(v[0-9]+|-n[0-9]+)?$`)

// stateDir holds one owner file per live cluster and the lock that serialises
// subnet choice and stale clean-up between concurrent test processes.
const stateDir = "/run/cairnqa"

const netnsDir = "/run/netns"

func vethName(prefix string, i int) string  { return fmt.Sprintf("%sv%d", prefix, i) }
func netnsName(prefix string, i int) string { return fmt.Sprintf("%s-n%d", prefix, i) }

func ownerPath(prefix string) string { return filepath.Join(stateDir, prefix+".owner") }

// lockState takes the harness's host-wide lock and returns its release function.
func lockState() (func(), error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock harness state: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(stateDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock harness state: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock harness state: %w", err)
	}
	return func() { f.Close() }, nil
}

// processStart identifies this process across PID reuse: "pid starttime".
func processStart(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may contain spaces; fields after it don't.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 20 {
		return "", fmt.Errorf("parse /proc/%d/stat: too few fields", pid)
	}
	return fmt.Sprintf("%d %s", pid, fields[19]), nil
}

// reserveNetwork picks an unused cluster prefix and /24, records this process
// as their owner and creates the bridge with the host address, all under the
// host-wide lock so concurrent test processes never pick the same subnet.
func reserveNetwork() (prefix string, subnet netip.Prefix, err error) {
	unlock, err := lockState()
	if err != nil {
		return "", netip.Prefix{}, err
	}
	defer unlock()

	me, err := processStart(os.Getpid())
	if err != nil {
		return "", netip.Prefix{}, fmt.Errorf("reserve network: %w", err)
	}
	for {
		var b [3]byte
		rand.Read(b[:])
		prefix = namePrefix + hex.EncodeToString(b[:])
		f, err := os.OpenFile(ownerPath(prefix), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", netip.Prefix{}, fmt.Errorf("reserve network: %w", err)
		}
		_, err = f.WriteString(me + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", netip.Prefix{}, fmt.Errorf("reserve network: %w", err)
		}
		break
	}

	subnet, err = freeSubnet()
	if err != nil {
		return prefix, netip.Prefix{}, err
	}
	host := hostAddr(subnet)
	for _, args := range [][]string{
		{"link", "add", prefix, "type", "bridge"},
		{"addr", "add", netip.PrefixFrom(host, subnet.Bits()).String(), "dev", prefix},
		{"link", "set", prefix, "up"},
	} {
		if _, err := run("ip", args...); err != nil {
			return prefix, netip.Prefix{}, fmt.Errorf("create bridge %s: %w", prefix, err)
		}
	}
	return prefix, subnet, nil
}

// agentNetworks are subnets a node's agent uses inside its namespace: the
// default VM network (a cluster on it would have its nodes' bridge hold
// the host's address, and the nodes answer no ARP from the host).
var agentNetworks = []netip.Prefix{netip.MustParsePrefix("10.213.0.0/16")}

// freeSubnet returns a random 10.X.Y.0/24 (X in 200..250) that overlaps no
// address or route on the host and none of agentNetworks.
func freeSubnet() (netip.Prefix, error) {
	used, err := avoided()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("choose subnet: %w", err)
	}
	for range 100 {
		x, _ := rand.Int(rand.Reader, big.NewInt(51))
		y, _ := rand.Int(rand.Reader, big.NewInt(256))
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(200 + x.Int64()), byte(y.Int64()), 0}), 24)
		if !overlapsAny(p, used) {
			return p, nil
		}
	}
	return netip.Prefix{}, errors.New("choose subnet: no free /24 in 10.200.0.0-10.250.255.0")
}

// avoided is what a new cluster's subnet must not overlap: the host's
// addresses and routes, and agentNetworks.
func avoided() ([]netip.Prefix, error) {
	used, err := hostPrefixes()
	return append(used, agentNetworks...), err
}

func overlapsAny(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if p.Overlaps(u) {
			return true
		}
	}
	return false
}

// hostPrefixes lists every IPv4 address and route destination in the root
// namespace.
func hostPrefixes() ([]netip.Prefix, error) {
	out, err := run("ip", "-j", "-4", "addr", "show")
	if err != nil {
		return nil, err
	}
	var addrs []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := unmarshalIP(out, &addrs); err != nil {
		return nil, fmt.Errorf("parse ip addr output: %w", err)
	}
	var used []netip.Prefix
	for _, l := range addrs {
		for _, a := range l.AddrInfo {
			if p, err := netip.ParsePrefix(fmt.Sprintf("%s/%d", a.Local, a.PrefixLen)); err == nil {
				used = append(used, p.Masked())
			}
		}
	}

	out, err = run("ip", "-j", "-4", "route", "show", "table", "all")
	if err != nil {
		return nil, err
	}
	var routes []struct {
		Dst string `json:"dst"`
	}
	if err := unmarshalIP(out, &routes); err != nil {
		return nil, fmt.Errorf("parse ip route output: %w", err)
	}
	for _, r := range routes {
		if p, err := netip.ParsePrefix(r.Dst); err == nil {
			used = append(used, p.Masked())
		} else if a, err := netip.ParseAddr(r.Dst); err == nil {
			used = append(used, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return used, nil
}

// unmarshalIP decodes `ip -j` output, which is empty rather than [] when
// there is nothing to list.
func unmarshalIP(out string, v any) error {
	if strings.TrimSpace(out) == "" {
		return nil
	}
	return json.Unmarshal([]byte(out), v)
}

// hostAddr is the bridge's address in subnet: .1.
func hostAddr(subnet netip.Prefix) netip.Addr { return subnet.Addr().Next() }

// nodeAddr is node i's address in subnet: .(10+i).
func nodeAddr(subnet netip.Prefix, i int) (netip.Addr, error) {
	if i < 1 || 10+i > 254 {
		return netip.Addr{}, fmt.Errorf("node index %d out of range 1..244", i)
	}
	b := subnet.Addr().As4()
	b[3] = byte(10 + i)
	return netip.AddrFrom4(b), nil
}

// addNodeNetwork creates node i's namespace and its veth on the bridge.
func addNodeNetwork(prefix string, subnet netip.Prefix, i int, addr netip.Addr) error {
	ns, veth := netnsName(prefix, i), vethName(prefix, i)
	cidr := netip.PrefixFrom(addr, subnet.Bits()).String()
	for _, argv := range [][]string{
		{"netns", "add", ns},
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", veth, "master", prefix},
		{"link", "set", veth, "up"},
		{"-n", ns, "addr", "add", cidr, "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if _, err := run("ip", argv...); err != nil {
			return fmt.Errorf("create network of node %d: %w", i, err)
		}
	}
	return nil
}

// removeNodeNetwork kills whatever still runs in node i's namespace and deletes
// the namespace and its veth. Missing pieces are not an error.
func removeNodeNetwork(prefix string, i int) error {
	return errors.Join(
		deleteLink(vethName(prefix, i)),
		deleteNetns(netnsName(prefix, i)),
	)
}

// deleteLink deletes a link in the root namespace if it exists.
func deleteLink(name string) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := run("ip", "link", "del", name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// deleteNetns kills the processes left in namespace ns (all of them were
// started in it by the harness) and deletes it, if it exists.
func deleteNetns(ns string) error {
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := run("ip", "netns", "pids", ns)
	if err != nil {
		return fmt.Errorf("delete netns %s: %w", ns, err)
	}
	for _, f := range strings.Fields(out) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// The node's agent names its routers' namespaces after its own
	// namespace (cairn-<inode>-<router>): they go with it.
	var st syscall.Stat_t
	if syscall.Stat(filepath.Join(netnsDir, ns), &st) == nil {
		routers, _ := filepath.Glob(filepath.Join(netnsDir, fmt.Sprintf("cairn-%x-*", st.Ino)))
		for _, r := range routers {
			if _, err := run("ip", "netns", "del", filepath.Base(r)); err != nil {
				return fmt.Errorf("delete router netns %s: %w", r, err)
			}
		}
	}
	if _, err := run("ip", "netns", "del", ns); err != nil {
		return fmt.Errorf("delete netns %s: %w", ns, err)
	}
	return nil
}

// removeNetwork deletes everything named after prefix: veths, namespaces (and
// processes left in them), the bridge, and finally the owner file.
func removeNetwork(prefix string) error {
	links, namespaces, err := ownedObjects()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links[prefix] {
		if l != prefix {
			errs = append(errs, deleteLink(l))
		}
	}
	for _, ns := range namespaces[prefix] {
		errs = append(errs, deleteNetns(ns))
	}
	errs = append(errs, deleteLink(prefix))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove network %s: %w", prefix, err)
	}
	if err := os.Remove(ownerPath(prefix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove network %s: %w", prefix, err)
	}
	return nil
}

// ownedObjects lists links and namespaces named like the harness's, keyed by
// cluster prefix.
func ownedObjects() (links, namespaces map[string][]string, err error) {
	links, namespaces = map[string][]string{}, map[string][]string{}
	ifaces, err := os.ReadDir("/sys/class/net")
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	for _, e := range ifaces {
		if m := ownedName.FindStringSubmatch(e.Name()); m != nil && !strings.HasPrefix(m[2], "-n") {
			links[m[1]] = append(links[m[1]], e.Name())
		}
	}
	nss, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("list netns: %w", err)
	}
	for _, e := range nss {
		if m := ownedName.FindStringSubmatch(e.Name()); m != nil && strings.HasPrefix(m[2], "-n") {
			namespaces[m[1]] = append(namespaces[m[1]], e.Name())
		}
	}
	return links, namespaces, nil
}

// CleanupStale removes bridges, veths and namespaces (and the processes still
// running in them) that a crashed earlier run of the harness left behind. It
// only considers names of the harness's own pattern (cqa + 6 hex digits), and
// skips clusters whose owning test process is still alive, so it is safe to call
// while other test processes use the harness. New calls it once per process.
// Without root it does nothing.
func CleanupStale() error {
	if os.Geteuid() != 0 {
		return nil
	}
	unlock, err := lockState()
	if err != nil {
		return fmt.Errorf("cleanup stale: %w", err)
	}
	defer unlock()

	links, namespaces, err := ownedObjects()
	if err != nil {
		return fmt.Errorf("cleanup stale: %w", err)
	}
	prefixes := map[string]bool{}
	for p := range links {
		prefixes[p] = true
	}
	for p := range namespaces {
		prefixes[p] = true
	}
	owners, _ := filepath.Glob(filepath.Join(stateDir, namePrefix+"*.owner"))
	for _, o := range owners {
		if p := strings.TrimSuffix(filepath.Base(o), ".owner"); ownedName.MatchString(p) {
			prefixes[p] = true
		}
	}

	var errs []error
	for p := range prefixes {
		if ownerAlive(p) {
			continue
		}
		errs = append(errs, removeNetwork(p))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup stale: %w", err)
	}
	return nil
}

// ownerAlive reports whether the process that created cluster prefix still runs.
func ownerAlive(prefix string) bool {
	b, err := os.ReadFile(ownerPath(prefix))
	if err != nil {
		return false
	}
	owner := strings.TrimSpace(string(b))
	var pid int
	if _, err := fmt.Sscan(owner, &pid); err != nil {
		return false
	}
	cur, err := processStart(pid)
	return err == nil && cur == owner
}

// clientIndex is the client namespace's place on a cluster's bridge (.250),
// out of the nodes' way.
const clientIndex = 240

// ClientNetns returns a network namespace on the cluster's bridge (address
// .250) for a client program, creating it on first use, or "" without root.
// Nothing in it changes once it is made: it has one veth with one IPv4
// address, and IPv6 off. That is what a browser needs: Chromium aborts its
// requests in flight (ERR_NETWORK_CHANGED) whenever an address changes in
// its namespace, and in the host's they do all the time, as each test's
// bridge and veths gain their IPv6 link-local addresses a second or two
// after they come up. It goes with the cluster.
func (c *Cluster) ClientNetns() (string, error) {
	if c.name == "" {
		return "", nil
	}
	return addClientNetns(c.name, c.subnet)
}

// ClientNetns is Cluster.ClientNetns for a bridge: a client there reaches
// the host at HostAddr.
func (b *Bridge) ClientNetns() (string, error) { return addClientNetns(b.Name, b.Subnet) }

func addClientNetns(prefix string, subnet netip.Prefix) (ns string, err error) {
	ns = netnsName(prefix, clientIndex)
	veth := vethName(prefix, clientIndex)
	// It exists only whole: a failure below removes what it made.
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
		return ns, nil
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, removeNodeNetwork(prefix, clientIndex))
		}
	}()
	addr, err := nodeAddr(subnet, clientIndex)
	if err != nil {
		return "", err
	}
	cidr := netip.PrefixFrom(addr, subnet.Bits()).String()
	for _, argv := range [][]string{
		{"ip", "netns", "add", ns},
		// Before any interface is made or comes up: no link-local
		// address, now or later.
		{"ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"},
		{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "link", "set", veth, "master", prefix},
		{"ip", "link", "set", veth, "up"},
		{"ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
	} {
		if _, err := run(argv[0], argv[1:]...); err != nil {
			return "", fmt.Errorf("client namespace: %w", err)
		}
	}
	return ns, nil
}
