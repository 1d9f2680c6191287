package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/netfabric"
	"github.com/cairnhq/cairn/storage"
)

// Config is the whole node configuration: flags, optionally a JSON config file
// (same keys as the flags), and the defaults in DefaultConfig.
type Config struct {
	Name      string `json:"name"`
	DataDir   string `json:"data-dir"`
	Bind      string `json:"bind"`
	Advertise string `json:"advertise"`
	APIPort   int    `json:"api-port"`
	S3Port    int    `json:"s3-port"`
	// FederationPort is where a hub (cairn hub) takes its sites'
	// enrolments and sessions.
	FederationPort int `json:"federation-port"`
	// FederationNames are the DNS names and addresses sites dial a hub
	// by, beside its bind and advertised addresses (its certificate
	// names them all).
	FederationNames []string `json:"federation-names,omitempty"`
	// FederationEnrolBurst is how many enrolments a hub takes at once
	// from one address (then one more every 6 s); 0 is no limit.
	FederationEnrolBurst int           `json:"federation-enrol-burst"`
	S3Domain             string        `json:"s3-domain"`
	RPCPort              int           `json:"rpc-port"`
	GossipPort           int           `json:"gossip-port"`
	DiscoveryPort        int           `json:"discovery-port"`
	Expect               int           `json:"expect"`
	Join                 []string      `json:"join"`
	Disks                []string      `json:"disk"`
	JoinToken            string        `json:"join-token"`
	EnrolToken           string        `json:"enrol-token"`
	AdminPasswordFile    string        `json:"admin-password-file"`
	Dev                  bool          `json:"dev"`
	DeadServerGrace      time.Duration `json:"dead-server-grace"`
	HeartbeatTimeout     time.Duration `json:"raft-heartbeat-timeout"`
	ElectionTimeout      time.Duration `json:"raft-election-timeout"`
	SnapshotThreshold    uint64        `json:"raft-snapshot-threshold"`
	TrailingLogs         uint64        `json:"raft-trailing-logs"`
	RaftLogStore         string        `json:"raft-log-store"`
	RaftWALSegment       int           `json:"raft-wal-segment-size"`
	AuditRetention       int           `json:"audit-retention"`
	ScrubInterval        time.Duration `json:"scrub-interval"`
	ScrubPace            time.Duration `json:"scrub-pace"`
	VolumeScrub          time.Duration `json:"volume-scrub-interval"`
	VolumeExportPort     int           `json:"volume-export-port"`
	HealInterval         time.Duration `json:"heal-interval"`
	GCInterval           time.Duration `json:"gc-interval"`
	GCGrace              time.Duration `json:"gc-grace"`
	MultipartExpiry      time.Duration `json:"multipart-expiry"`
	DiskReport           time.Duration `json:"disk-report-interval"`
	DiskStaleAfter       time.Duration `json:"disk-stale-after"`
	LogLevel             string        `json:"log-level"`
	LogFormat            string        `json:"log-format"`
	DebugAddr            string        `json:"debug-addr"`
	VMs                  bool          `json:"vms"`
	Accel                string        `json:"accel"`
	UnsafeTCGPrecopy     bool          `json:"unsafe-tcg-precopy"`
	QEMU                 string        `json:"qemu"`
	QEMUImg              string        `json:"qemu-img"`
	OVMFCode             string        `json:"ovmf-code"`
	OVMFVars             string        `json:"ovmf-vars"`
	VMNetwork            string        `json:"vm-network"`
	VMBridge             string        `json:"vm-bridge"`
	VIP                  string        `json:"vip"`
	VIP6                 string        `json:"vip6"`
	VMStopTimeout        time.Duration `json:"vm-stop-timeout"`
	VMRunDir             string        `json:"vm-run-dir"`
	Watchdog             string        `json:"watchdog"`
	SampleImage          string        `json:"sample-image"`

	// The control plane's floor on the data dir's filesystem (see
	// storage.Reserve): the larger of the two.
	DataReserveMiB     uint64  `json:"data-reserve-mib"`
	DataReservePercent float64 `json:"data-reserve-percent"`
	// Slow clients: see timeouts.go.
	HeaderTimeout time.Duration `json:"http-header-timeout"`
	BodyTimeout   time.Duration `json:"http-body-timeout"`
	// BodyMinRate is the slowest a request body may arrive on average
	// (bytes/s) once it has taken longer than BodyTimeout: a byte now and
	// then does not keep a connection.
	BodyMinRate int64         `json:"http-body-min-rate"`
	IdleTimeout time.Duration `json:"http-idle-timeout"`
}

// DefaultConfig holds every default of the node.
func DefaultConfig() Config {
	c := consensus.DefaultConfig()
	return Config{
		Name:                 c.Name,
		DataDir:              "/var/lib/cairn",
		Bind:                 "",
		APIPort:              8443,
		S3Port:               8447,
		FederationPort:       8450,
		FederationEnrolBurst: 10,
		RPCPort:              c.RPCPort,
		GossipPort:           c.GossipPort,
		DiscoveryPort:        c.DiscoveryPort,
		Expect:               1,
		DeadServerGrace:      c.DeadServerGrace,
		HeartbeatTimeout:     c.HeartbeatTimeout,
		ElectionTimeout:      c.ElectionTimeout,
		SnapshotThreshold:    c.SnapshotThreshold,
		TrailingLogs:         c.TrailingLogs,
		RaftWALSegment:       c.WALSegmentSize,
		AuditRetention:       identity.DefaultConfig().AuditRetention,
		ScrubInterval:        6 * time.Hour,
		ScrubPace:            2 * time.Millisecond,
		VolumeScrub:          7 * 24 * time.Hour,
		VolumeExportPort:     10809, // NBD's IANA port
		HealInterval:         30 * time.Second,
		GCInterval:           time.Hour,
		GCGrace:              time.Hour,
		MultipartExpiry:      7 * 24 * time.Hour,
		DiskReport:           30 * time.Second,
		DiskStaleAfter:       2 * time.Minute,
		LogLevel:             "info",
		LogFormat:            "text",
		VMs:                  true,
		Accel:                "auto",
		QEMU:                 "qemu-system-x86_64",
		QEMUImg:              "qemu-img",
		OVMFCode:             "/usr/share/OVMF/OVMF_CODE_4M.fd",
		OVMFVars:             "/usr/share/OVMF/OVMF_VARS_4M.fd",
		VMNetwork:            "10.213.0.0/16",
		VMBridge:             "cairnbr0",
		VMStopTimeout:        time.Minute,

		// The control plane's floor and the slow-client timeouts.
		DataReserveMiB:     storage.DefaultReserve.MinBytes >> 20,
		DataReservePercent: storage.DefaultReserve.Percent,
		HeaderTimeout:      10 * time.Second,
		BodyTimeout:        time.Minute,
		BodyMinRate:        1024,
		IdleTimeout:        2 * time.Minute,
	}
}

// minGCGrace bounds --gc-grace from below: a shard file is complete a moment
// before the command that references it commits (a PUT waits for all its
// shards, a slow peer or a leader election stretches that), and the sweeper
// must never take it for an orphan meanwhile.
const minGCGrace = 10 * time.Minute

// ParseFlags reads `cairn agent` flags over the defaults and, if given, a
// config file; flags set on the command line win over the file.
func ParseFlags(args []string) (Config, error) {
	cfg := DefaultConfig()
	var configFile, join string
	fs := agentFlags(&cfg, &configFile, &join)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if configFile != "" {
		fileCfg := DefaultConfig()
		b, err := os.ReadFile(configFile)
		if err != nil {
			return cfg, fmt.Errorf("read config file: %w", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fileCfg); err != nil {
			return cfg, fmt.Errorf("parse config file %s: %w", configFile, err)
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		cfg = mergeConfig(fileCfg, cfg, set)
	}
	if join != "" {
		cfg.Join = strings.Split(join, ",")
	}
	return cfg, cfg.finish()
}

// agentFlags defines every flag over cfg. Each flag but --config has the
// Config field whose JSON key is the flag's name (a test holds that).
func agentFlags(cfg *Config, configFile, join *string) *flag.FlagSet {
	fs := flag.NewFlagSet("cairn agent", flag.ContinueOnError)
	fs.StringVar(configFile, "config", "", "JSON config file with the same keys as these flags")
	fs.StringVar(&cfg.Name, "name", cfg.Name, "node name, unique in the cluster")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "where the node keeps its Raft log, snapshots and credentials")
	fs.StringVar(&cfg.Bind, "bind", cfg.Bind, "IP address to listen on (default: the first non-loopback IPv4 address; 127.0.0.1 with --dev)")
	fs.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "IP address peers reach this node at (default: --bind)")
	fs.IntVar(&cfg.APIPort, "api-port", cfg.APIPort, "HTTPS port of the API and UI")
	fs.IntVar(&cfg.S3Port, "s3-port", cfg.S3Port, "HTTPS port of the S3 API")
	fs.IntVar(&cfg.FederationPort, "federation-port", cfg.FederationPort, "with cairn hub: HTTPS port where sites enrol and keep their sessions")
	fs.IntVar(&cfg.FederationEnrolBurst, "federation-enrol-burst", cfg.FederationEnrolBurst, "with cairn hub: enrolments taken at once from one address, then one every 6 s (0: no limit)")
	fs.Func("federation-names", "with cairn hub: comma-separated DNS names and addresses sites reach it by (a load balancer's, a NAT's), for its certificate", func(v string) error {
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				cfg.FederationNames = append(cfg.FederationNames, n)
			}
		}
		return nil
	})
	fs.StringVar(&cfg.S3Domain, "s3-domain", cfg.S3Domain, "DNS domain for virtual-host-style S3 addressing (BUCKET.DOMAIN); path style always works")
	fs.IntVar(&cfg.RPCPort, "rpc-port", cfg.RPCPort, "cluster port: Raft and RPC over mutual TLS")
	fs.IntVar(&cfg.GossipPort, "gossip-port", cfg.GossipPort, "gossip port (TCP and UDP, encrypted)")
	fs.IntVar(&cfg.DiscoveryPort, "discovery-port", cfg.DiscoveryPort, "UDP port of the LAN discovery beacon; 0 disables discovery")
	fs.IntVar(&cfg.Expect, "expect", cfg.Expect, "number of nodes to wait for before bootstrapping a new cluster")
	fs.Func("disk", "a directory (or mounted disk) to offer to the storage pool; repeatable (--dev: two under --data-dir)", func(v string) error {
		cfg.Disks = append(cfg.Disks, v)
		return nil
	})
	fs.StringVar(join, "join", "", "comma-separated gossip addresses of other nodes (IP or IP:PORT)")
	fs.StringVar(&cfg.JoinToken, "join-token", cfg.JoinToken, "cluster key: nodes with the same one find each other; it admits only the first --expect voters (generated when empty)")
	fs.StringVar(&cfg.EnrolToken, "enrol-token", cfg.EnrolToken, "one-time enrolment token that admits this node to a formed cluster (cairn node enrol-token create); without one, the node waits for an admin's approval")
	fs.StringVar(&cfg.AdminPasswordFile, "admin-password-file", cfg.AdminPasswordFile, "create the cluster admin 'admin' with the password in this file")
	fs.BoolVar(&cfg.Dev, "dev", cfg.Dev, "one-node development cluster on 127.0.0.1 with data in --data-dir")
	fs.DurationVar(&cfg.DeadServerGrace, "dead-server-grace", cfg.DeadServerGrace, "remove a voter that has been gone this long")
	fs.DurationVar(&cfg.HeartbeatTimeout, "raft-heartbeat-timeout", cfg.HeartbeatTimeout, "Raft heartbeat timeout")
	fs.DurationVar(&cfg.ElectionTimeout, "raft-election-timeout", cfg.ElectionTimeout, "Raft election timeout")
	fs.Uint64Var(&cfg.SnapshotThreshold, "raft-snapshot-threshold", cfg.SnapshotThreshold, "Raft log entries between snapshots")
	fs.StringVar(&cfg.RaftLogStore, "raft-log-store", cfg.RaftLogStore, "Raft log store of a new node: wal (default) or boltdb; a node keeps the one its data dir was created with")
	fs.IntVar(&cfg.RaftWALSegment, "raft-wal-segment-size", cfg.RaftWALSegment, "bytes per Raft log segment file (wal store); compaction frees whole segments")
	fs.Uint64Var(&cfg.TrailingLogs, "raft-trailing-logs", cfg.TrailingLogs, "Raft log entries kept after a snapshot (a peer further behind gets the snapshot)")
	fs.DurationVar(&cfg.ScrubInterval, "scrub-interval", cfg.ScrubInterval, "pause between two scrubs of this node's shards")
	fs.DurationVar(&cfg.ScrubPace, "scrub-pace", cfg.ScrubPace, "pause after each shard (or 1 MiB of a volume) the scrubber verifies (its speed limit)")
	fs.IntVar(&cfg.VolumeExportPort, "volume-export-port", cfg.VolumeExportPort, "port backup tools read exported volumes from (NBD over TLS with a client certificate; cairn volume export); 0: none")
	fs.DurationVar(&cfg.VolumeScrub, "volume-scrub-interval", cfg.VolumeScrub, "how often every copy of each block volume is read whole and checked (as Ceph's weekly deep scrub); 0: never")
	fs.DurationVar(&cfg.HealInterval, "heal-interval", cfg.HealInterval, "pause between the leader's heal passes")
	fs.DurationVar(&cfg.GCInterval, "gc-interval", cfg.GCInterval, "pause between two sweeps of this node's disks for orphan shards, and between the leader's passes over abandoned multipart uploads and buckets' lifecycle rules")
	fs.DurationVar(&cfg.GCGrace, "gc-grace", cfg.GCGrace, "a shard file younger than this is never deleted as an orphan (at least 10m: it covers uploads in flight)")
	fs.DurationVar(&cfg.MultipartExpiry, "multipart-expiry", cfg.MultipartExpiry, "abort multipart uploads not completed this long after they started, and delete their parts")
	fs.DurationVar(&cfg.DiskReport, "disk-report-interval", cfg.DiskReport, "how often a node reports its disks' capacity at the latest")
	fs.DurationVar(&cfg.DiskStaleAfter, "disk-stale-after", cfg.DiskStaleAfter, "a disk not reported for this long counts as gone and its shards are rebuilt elsewhere")
	fs.IntVar(&cfg.AuditRetention, "audit-retention", cfg.AuditRetention, "newest audit entries kept in the replicated state; every node archives all of them to DATA_DIR/audit/audit.jsonl")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	fs.StringVar(&cfg.DebugAddr, "debug-addr", cfg.DebugAddr, "serve Go's pprof profiles on this address (plain HTTP, unauthenticated: bind it to a loopback or management address; empty: off)")
	fs.BoolVar(&cfg.VMs, "vms", cfg.VMs, "run VMs on this node (false: a storage and control-plane node only)")
	fs.StringVar(&cfg.Accel, "accel", cfg.Accel, "VM accelerator: auto (KVM where it really works, else TCG), kvm or tcg")
	fs.BoolVar(&cfg.UnsafeTCGPrecopy, "unsafe-tcg-precopy", cfg.UnsafeTCGPrecopy, "move VMs running under TCG live with their guest running, as under KVM, instead of paused for the copy: UNSAFE, QEMU 7.2 under TCG loses a running guest's memory writes across passes; for benchmarks of the path KVM nodes take")
	fs.StringVar(&cfg.QEMU, "qemu", cfg.QEMU, "command that runs qemu-system-x86_64 (words separated by spaces)")
	fs.StringVar(&cfg.QEMUImg, "qemu-img", cfg.QEMUImg, "command that runs qemu-img (words separated by spaces)")
	fs.StringVar(&cfg.OVMFCode, "ovmf-code", cfg.OVMFCode, "UEFI firmware for VMs whose image asks for it")
	fs.StringVar(&cfg.OVMFVars, "ovmf-vars", cfg.OVMFVars, "template of a UEFI VM's variable store")
	fs.StringVar(&cfg.VMNetwork, "vm-network", cfg.VMNetwork, "IPv4 subnet of the default VM network, when the cluster creates it")
	fs.StringVar(&cfg.VMBridge, "vm-bridge", cfg.VMBridge, "Linux bridge of the default VM network on this node")
	fs.StringVar(&cfg.VIP6, "vip6", cfg.VIP6, "the cluster address's IPv6 twin, ADDR/PREFIX on --bind's interface (the same on every node; needs --vip): held with it")
	fs.StringVar(&cfg.VIP, "vip", cfg.VIP, "the cluster's own address for the UI, API and S3, ADDR/PREFIX on the --bind network (the same on every node): held by the Raft leader, moved in seconds when it fails")
	fs.DurationVar(&cfg.VMStopTimeout, "vm-stop-timeout", cfg.VMStopTimeout, "how long a stop waits for the guest's ACPI shutdown before pulling the plug")
	fs.StringVar(&cfg.Watchdog, "watchdog", cfg.Watchdog, "hardware watchdog device (/dev/watchdog) that resets this box if its agent hangs while it runs HA VMs; \"\": none")
	fs.StringVar(&cfg.VMRunDir, "vm-run-dir", cfg.VMRunDir, "QEMU sockets and pid files (default: under /run/cairn, per data dir)")
	fs.StringVar(&cfg.SampleImage, "sample-image", cfg.SampleImage, "upload this disk image as the public image "+SampleImageName+" (and sample flavors if there are none): for development appliances")
	fs.Uint64Var(&cfg.DataReserveMiB, "data-reserve-mib", cfg.DataReserveMiB, "MiB kept free for the control plane (Raft log, snapshots) on the data dir's filesystem: shards, image uploads and VM disks there stop short of it")
	fs.Float64Var(&cfg.DataReservePercent, "data-reserve-percent", cfg.DataReservePercent, "the same floor as a share of the filesystem's size, in percent; the larger of the two applies")
	fs.DurationVar(&cfg.HeaderTimeout, "http-header-timeout", cfg.HeaderTimeout, "API, UI and S3: a client must send its request headers within this")
	fs.DurationVar(&cfg.BodyTimeout, "http-body-timeout", cfg.BodyTimeout, "API, UI and S3: a request body that sends nothing for this long is cut (a slow but moving upload is not)")
	fs.Int64Var(&cfg.BodyMinRate, "http-body-min-rate", cfg.BodyMinRate, "API, UI and S3: a request body slower than this many bytes/s on average, once older than --http-body-timeout, is cut")
	fs.DurationVar(&cfg.IdleTimeout, "http-idle-timeout", cfg.IdleTimeout, "API, UI and S3: an idle keep-alive connection is closed after this")
	return fs
}

// mergeConfig takes the file's values except for flags given explicitly.
func mergeConfig(file, flags Config, set map[string]bool) Config {
	out := file
	ov, fv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(flags)
	for i := range ov.NumField() {
		if key, _, _ := strings.Cut(ov.Type().Field(i).Tag.Get("json"), ","); set[key] {
			ov.Field(i).Set(fv.Field(i))
		}
	}
	return out
}

// finish applies --dev and fills derived values, rejecting bad combinations.
func (c *Config) finish() error {
	if c.Dev {
		if c.Bind == "" {
			c.Bind = "127.0.0.1"
		}
		c.Expect = 1
		c.DiscoveryPort = 0
		if c.DataDir == DefaultConfig().DataDir {
			c.DataDir = "data"
		}
	}
	if c.Bind == "" {
		ip, err := firstLANAddr()
		if err != nil {
			return err
		}
		c.Bind = ip
	}
	if net.ParseIP(c.Bind) == nil {
		return fmt.Errorf("--bind %q is not an IP address", c.Bind)
	}
	if c.Advertise == "" {
		c.Advertise = c.Bind
	}
	if c.VIP != "" {
		vip, err := netfabric.ParseVIP(c.VIP)
		if err != nil {
			return err
		}
		bind, _ := netip.ParseAddr(c.Bind)
		if !vip.Masked().Contains(bind) || vip.Addr() == bind {
			return fmt.Errorf("--vip %s must be another address of --bind's network (%s)", c.VIP, c.Bind)
		}
	}
	if c.VIP6 != "" {
		if c.VIP == "" {
			return fmt.Errorf("--vip6 is the IPv6 twin of --vip: give --vip too")
		}
		if _, err := netfabric.ParseVIP6(c.VIP6); err != nil {
			return err
		}
	}
	if c.Expect < 1 {
		return fmt.Errorf("--expect must be at least 1, got %d", c.Expect)
	}
	if c.Name == "" {
		return errors.New("--name is required (the host has no name)")
	}
	if c.GCInterval <= 0 || c.MultipartExpiry <= 0 {
		return errors.New("--gc-interval and --multipart-expiry must be positive")
	}
	if c.HeaderTimeout <= 0 || c.BodyTimeout <= 0 || c.IdleTimeout <= 0 || c.BodyMinRate < 0 {
		return errors.New("--http-header-timeout, --http-body-timeout and --http-idle-timeout must be positive")
	}
	if c.DataReservePercent < 0 || c.DataReservePercent > 50 {
		return fmt.Errorf("--data-reserve-percent must be 0-50, got %v", c.DataReservePercent)
	}
	if c.GCGrace < minGCGrace {
		return fmt.Errorf("--gc-grace must be at least %s, got %s: shards of uploads in flight are not referenced yet", minGCGrace, c.GCGrace)
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	c.DataDir = abs
	if c.Dev && len(c.Disks) == 0 {
		c.Disks = []string{filepath.Join(c.DataDir, "disks", "d1"), filepath.Join(c.DataDir, "disks", "d2")}
	}
	switch c.Accel {
	case "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("--accel must be auto, kvm or tcg, not %q", c.Accel)
	}
	if c.VMRunDir == "" {
		// Sockets need short paths (108 bytes), and nothing here outlives a
		// reboot: /run, keyed by the data dir so a restart finds its VMs.
		sum := sha256.Sum256([]byte(c.DataDir))
		c.VMRunDir = filepath.Join("/run/cairn", hex.EncodeToString(sum[:4]))
	}
	for i, d := range c.Disks {
		if c.Disks[i], err = filepath.Abs(d); err != nil {
			return err
		}
	}
	return nil
}

func firstLANAddr() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			return ipn.IP.String(), nil
		}
	}
	return "", errors.New("no IPv4 address to bind to; pass --bind")
}

func (c Config) consensusConfig() consensus.Config {
	cc := consensus.DefaultConfig()
	cc.Name = c.Name
	cc.DataDir = c.DataDir
	cc.BindAddr = c.Bind
	cc.AdvertiseAddr = c.Advertise
	cc.RPCPort, cc.GossipPort, cc.DiscoveryPort = c.RPCPort, c.GossipPort, c.DiscoveryPort
	cc.Expect = c.Expect
	cc.Join = c.Join
	cc.JoinToken = c.JoinToken
	cc.EnrolToken = c.EnrolToken
	cc.DeadServerGrace = c.DeadServerGrace
	cc.HeartbeatTimeout = c.HeartbeatTimeout
	cc.ElectionTimeout = c.ElectionTimeout
	cc.SnapshotThreshold = c.SnapshotThreshold
	cc.TrailingLogs = c.TrailingLogs
	cc.LogStore = c.RaftLogStore
	cc.WALSegmentSize = c.RaftWALSegment
	cc.LeaderLeaseTimeout = min(cc.LeaderLeaseTimeout, c.HeartbeatTimeout/2)
	cc.Tags = map[string]string{"api": c.APIURL(), "s3": c.S3URL()}
	return cc
}

// reserve is the control plane's floor on the data dir's filesystem.
func (c Config) reserve() storage.Reserve {
	return storage.Reserve{Dir: c.DataDir, MinBytes: c.DataReserveMiB << 20, Percent: c.DataReservePercent}
}

// S3URL is where this node serves the S3 API.
func (c Config) S3URL() string {
	return "https://" + net.JoinHostPort(c.Advertise, fmt.Sprint(c.S3Port))
}

// VolumeExportAddr is where this node serves exported volumes ("": off).
func (c Config) VolumeExportAddr() string {
	if c.VolumeExportPort <= 0 {
		return ""
	}
	return net.JoinHostPort(c.Advertise, fmt.Sprint(c.VolumeExportPort))
}

// APIURL is where this node serves the API and UI.
func (c Config) APIURL() string {
	return "https://" + net.JoinHostPort(c.Advertise, fmt.Sprint(c.APIPort)) + "/"
}
