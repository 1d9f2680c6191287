package agent

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseFlagsPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cairn.json")
	if err := os.WriteFile(file, []byte(`{"name":"box1","bind":"10.1.2.3","expect":3,"join":["10.1.2.4","10.1.2.5"],"dead-server-grace":60000000000}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseFlags([]string{"--config", file, "--expect", "5", "--data-dir", dir})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "box1" || cfg.Bind != "10.1.2.3" || cfg.Advertise != "10.1.2.3" {
		t.Errorf("file values not applied: %+v", cfg)
	}
	if cfg.Expect != 5 {
		t.Errorf("a flag must win over the file: expect %d", cfg.Expect)
	}
	if len(cfg.Join) != 2 || cfg.DeadServerGrace != time.Minute {
		t.Errorf("join %v, grace %v", cfg.Join, cfg.DeadServerGrace)
	}
	if cfg.GCInterval != time.Hour || cfg.GCGrace != time.Hour || cfg.MultipartExpiry != 7*24*time.Hour {
		t.Errorf("garbage collection defaults: %v %v %v", cfg.GCInterval, cfg.GCGrace, cfg.MultipartExpiry)
	}
	if cfg.APIPort != 8443 || cfg.S3Port != 8447 || cfg.RPCPort != 8444 || cfg.GossipPort != 8445 {
		t.Errorf("defaults lost: %+v", cfg)
	}
	if cc := cfg.consensusConfig(); cc.Tags["api"] != "https://10.1.2.3:8443/" || cc.Expect != 5 {
		t.Errorf("consensus config: %+v", cc)
	}
}

func TestParseFlagsErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(bad, []byte(`{"expct": 3}`), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", bad, "--bind", "127.0.0.1"}, "unknown field"},
		{[]string{"--bind", "not-an-ip"}, "not an IP"},
		{[]string{"--bind", "127.0.0.1", "--expect", "0"}, "at least 1"},
		{[]string{"--bind", "127.0.0.1", "extra"}, "unexpected arguments"},
		{[]string{"--bind", "127.0.0.1", "--gc-grace", "1m"}, "at least 10m"},
		{[]string{"--bind", "127.0.0.1", "--multipart-expiry", "0s"}, "must be positive"},
		{[]string{"--bind", "127.0.0.1", "--http-body-timeout", "0s"}, "must be positive"},
		{[]string{"--bind", "127.0.0.1", "--data-reserve-percent", "80"}, "0-50"},
		{[]string{"--bind", "192.168.1.5", "--name", "n1", "--vip", "192.168.1.10"}, "prefix length"},
		{[]string{"--bind", "192.168.1.5", "--name", "n1", "--vip", "192.168.2.10/24"}, "another address of --bind's network"},
		{[]string{"--bind", "192.168.1.5", "--name", "n1", "--vip", "192.168.1.5/24"}, "another address of --bind's network"},
		{[]string{"--bind", "192.168.1.5", "--name", "n1", "--vip", "192.168.1.0/24"}, "prefix length"},
		{[]string{"--bind", "192.168.1.5", "--name", "n1", "--vip", "fd00::10/64"}, "IPv4"},
	} {
		_, err := ParseFlags(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

func TestDevDefaults(t *testing.T) {
	cfg, err := ParseFlags([]string{"--dev", "--expect", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bind != "127.0.0.1" || cfg.Expect != 1 || cfg.DiscoveryPort != 0 || !strings.HasSuffix(cfg.DataDir, "/data") {
		t.Fatalf("--dev: %+v", cfg)
	}
}

// Every flag has its Config field and JSON key, so a config file can set it
// and the same flag on the command line wins over the file.
func TestEveryFlagHasAConfigKey(t *testing.T) {
	keys := map[string]bool{}
	ct := reflect.TypeOf(Config{})
	for i := range ct.NumField() {
		key, _, _ := strings.Cut(ct.Field(i).Tag.Get("json"), ",")
		keys[key] = true
	}
	var cfg Config
	var configFile, join string
	agentFlags(&cfg, &configFile, &join).VisitAll(func(f *flag.Flag) {
		if f.Name != "config" && !keys[f.Name] {
			t.Errorf("flag --%s has no config key", f.Name)
		}
	})

	// One flag the old hand-written merge forgot: the command line wins.
	dir := t.TempDir()
	file := filepath.Join(dir, "cairn.json")
	if err := os.WriteFile(file, []byte(`{"name":"box1","bind":"10.1.2.3","scrub-interval":3600000000000,"heal-interval":60000000000}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ParseFlags([]string{"--config", file, "--scrub-interval", "1s", "--data-dir", dir})
	if err != nil {
		t.Fatal(err)
	}
	if got.ScrubInterval != time.Second || got.HealInterval != time.Minute {
		t.Errorf("scrub interval %v (flag: 1s), heal interval %v (file: 1m)", got.ScrubInterval, got.HealInterval)
	}
}
