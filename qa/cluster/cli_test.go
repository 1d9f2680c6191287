package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/minio/minio-go/v7"
)

// cli runs the cairn binary as a client with a private config file.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

func (c *cli) run(stdin string, args ...string) (string, error) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	out, err := c.run(stdin, args...)
	if err != nil {
		c.t.Fatalf("cairn %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// adminCLI is the cairn CLI logged in as the cluster admin through node n.
func adminCLI(t *testing.T, n *harness.Node) *cli {
	t.Helper()
	admin := &cli{t: t, bin: harness.BuildCairn(t), env: []string{"CAIRN_CONFIG=" + filepath.Join(t.TempDir(), "admin.json"),
		"CAIRN_ENDPOINT=https://" + n.IP + ":8443", "CAIRN_CA_CERT=" + filepath.Join(n.DataDir, "ca.crt")}}
	admin.ok(cairntest.AdminPassword+"\n", "login", "--username", "admin", "--password-stdin")
	return admin
}

// The CLI contract: login with --password-stdin prints and saves a token;
// cluster status -o json shows the leader and every node's role and health;
// the nouns work with tables and JSON; endpoint and token come from flags,
// the environment or the saved config.
func TestCLI(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	bin := harness.BuildCairn(t)
	n1 := c.Node(1)
	ca := filepath.Join(n1.DataDir, "ca.crt")
	cfg := filepath.Join(t.TempDir(), "config.json")
	x := &cli{t: t, bin: bin, env: []string{"CAIRN_CONFIG=" + cfg, "CAIRN_ENDPOINT=", "CAIRN_TOKEN=", "CAIRN_CA_CERT="}}

	if out, err := x.run("wrong-password\n", "login", "--endpoint", "https://"+n1.IP+":8443", "--ca-cert", ca, "--username", "admin", "--password-stdin"); err == nil {
		t.Fatalf("login with a wrong password succeeded: %s", out)
	}
	tok := strings.TrimSpace(x.ok(cairntest.AdminPassword+"\n", "login", "--endpoint", "https://"+n1.IP+":8443", "--ca-cert", ca,
		"--username", "admin", "--password-stdin"))
	if !strings.HasPrefix(tok, "cairn_") {
		t.Fatalf("login printed %q, want a token", tok)
	}

	// Saved config: no flags needed now.
	var st struct {
		Leader string `json:"leader"`
		Nodes  []struct {
			Name    string `json:"name"`
			Address string `json:"address"`
			Role    string `json:"role"`
			Healthy bool   `json:"healthy"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(x.ok("", "cluster", "status", "-o", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Leader == "" || len(st.Nodes) != 3 {
		t.Fatalf("cluster status: %+v", st)
	}
	for _, n := range st.Nodes {
		if n.Role != "voter" || !n.Healthy || n.Address == "" {
			t.Fatalf("node in cluster status: %+v", n)
		}
	}
	if out := x.ok("", "node", "list"); !strings.Contains(out, "NAME") || strings.Count(out, "voter") != 3 {
		t.Fatalf("node list table:\n%s", out)
	}
	// Capacity: the nodes' reports once they have made them, and the
	// verdict in words.
	testutil.WaitFor(t, 30*time.Second, "three nodes in cluster capacity", func() error {
		out := x.ok("", "cluster", "capacity")
		if strings.Count(out, "\nnode") != 3 || !strings.Contains(out, "N+1: yes") || !strings.Contains(out, "vCPUs: 0 of ") {
			return fmt.Errorf("cluster capacity:\n%s", out)
		}
		return nil
	})

	x.ok("", "project", "create", "oncology", "--description", "Oncology ward")
	x.ok("", "flavor", "create", "m1.tiny", "--vcpus", "1", "--ram-mib", "512", "--disk-gib", "5")
	x.ok("night-shift-9471\n", "user", "create", "nurse", "--password-stdin")
	x.ok("", "project", "add-member", "oncology", "nurse", "member")
	x.ok("", "quota", "set", "oncology", "--instances", "3", "--vcpus", "6")
	var q struct {
		Limits struct {
			Instances int64 `json:"instances"`
			VCPUs     int64 `json:"vcpus"`
		} `json:"limits"`
	}
	if err := json.Unmarshal([]byte(x.ok("", "quota", "show", "oncology", "-o", "json")), &q); err != nil || q.Limits.Instances != 3 || q.Limits.VCPUs != 6 {
		t.Fatalf("quota after set: %+v %v", q, err)
	}
	if out := x.ok("", "project", "members", "oncology"); !strings.Contains(out, "nurse") || !strings.Contains(out, "member") {
		t.Fatalf("members:\n%s", out)
	}
	if out := x.ok("", "audit", "list", "--action", "project."); !strings.Contains(out, "project.create") || !strings.Contains(out, "project.member.set") {
		t.Fatalf("audit list:\n%s", out)
	}
	apiTok := strings.TrimSpace(x.ok("", "token", "create", "backup-job"))
	if promTok := strings.TrimSpace(x.ok("", "metrics", "token", "create", "prometheus")); !strings.HasPrefix(promTok, "cairn_") {
		t.Fatalf("metrics token create printed %q", promTok)
	}
	if out := x.ok("", "token", "list"); !strings.Contains(out, "metrics") {
		t.Fatalf("token list lacks the metrics token:\n%s", out)
	}

	// Flags and environment beat the saved config: the nurse's API token via
	// the environment, against another node, may not create projects.
	nurse := &cli{t: t, bin: bin, env: []string{"CAIRN_CONFIG=" + filepath.Join(t.TempDir(), "none.json"),
		"CAIRN_ENDPOINT=https://" + c.Node(3).IP + ":8443", "CAIRN_CA_CERT=" + ca}}
	nurseTok := strings.TrimSpace(nurse.ok("night-shift-9471\n", "login", "--username", "nurse", "--password-stdin"))
	nurse.env = append(nurse.env, "CAIRN_TOKEN="+nurseTok)
	if out, err := nurse.run("", "project", "create", "sneaky"); err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("a member created a project: %v\n%s", err, out)
	}
	if out := nurse.ok("", "project", "list", "-o", "json"); !strings.Contains(out, "oncology") {
		t.Fatalf("the nurse does not see her project:\n%s", out)
	}
	// S3: the nurse (in one project) makes herself an access key, finds the
	// S3 endpoint in cluster status, and the key works there with a real S3
	// client: a bucket she creates lands in her project.
	var cred struct {
		AccessKey string `json:"access_key"`
		SecretKey string `json:"secret_key"`
		Project   string `json:"project_id"`
	}
	if err := json.Unmarshal([]byte(nurse.ok("", "s3", "credentials", "create", "-o", "json")), &cred); err != nil {
		t.Fatal(err)
	}
	var tags struct {
		Nodes []struct {
			Name string            `json:"name"`
			Tags map[string]string `json:"tags"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(nurse.ok("", "cluster", "status", "-o", "json")), &tags); err != nil {
		t.Fatal(err)
	}
	var s3URL string
	for _, n := range tags.Nodes {
		if n.Name == "node3" {
			s3URL = n.Tags["s3"]
		}
	}
	if want := "https://" + c.Node(3).IP + ":8447"; s3URL != want || cred.AccessKey == "" || cred.SecretKey == "" {
		t.Fatalf("s3 endpoint %q (want %q), credentials %+v", s3URL, want, cred)
	}
	if out := x.ok("", "project", "list", "-o", "json"); !strings.Contains(out, cred.Project) {
		t.Fatalf("credentials for project %q, not one of:\n%s", cred.Project, out)
	}
	s3c := s3Client(t, c.Node(3), cred.AccessKey, cred.SecretKey)
	if err := s3c.MakeBucket(context.Background(), "oncology-scans", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make a bucket with the CLI's credentials: %v", err)
	}
	// The key acts as its user in its project, as she is now: removed from
	// the project, she no longer sees its bucket; added back, she does.
	sees := func() error {
		if ok, err := s3c.BucketExists(context.Background(), "oncology-scans"); !ok || err != nil {
			return fmt.Errorf("bucket not seen (%v)", err)
		}
		return nil
	}
	if err := sees(); err != nil {
		t.Fatal(err)
	}
	x.ok("", "project", "remove-member", "oncology", "nurse")
	testutil.WaitFor(t, 5*time.Second, "the key refused once its user left the project", func() error {
		if sees() == nil {
			return errors.New("still accepted")
		}
		return nil
	})
	x.ok("", "project", "add-member", "oncology", "nurse", "member")
	testutil.WaitFor(t, 5*time.Second, "the key accepted once its user is back", sees)
	if out := nurse.ok("", "s3", "credentials", "list"); !strings.Contains(out, cred.AccessKey) {
		t.Fatalf("credentials list:\n%s", out)
	}
	nurse.ok("", "s3", "credentials", "delete", cred.AccessKey)
	testutil.WaitFor(t, 5*time.Second, "the deleted key refused", func() error {
		if _, err := s3c.ListBuckets(context.Background()); err == nil {
			return errors.New("still accepted")
		}
		return nil
	})

	// The admin's API token works from the environment; revoking it ends it.
	byToken := &cli{t: t, bin: bin, env: append(nurse.env[:3:3], "CAIRN_TOKEN="+apiTok)}
	byToken.ok("", "flavor", "list")
	if out, err := x.run("", "flavor", "list", "--token", "cairn_0000000000000000_bogus"); err == nil {
		t.Fatalf("a bogus --token was accepted:\n%s", out)
	}
	id := strings.Split(strings.TrimPrefix(apiTok, "cairn_"), "_")[0]
	x.ok("", "token", "revoke", id)
	// Revocation is immediate on the node that served it and reaches the
	// others with the next replication round (tens of milliseconds).
	byToken1 := &cli{t: t, bin: bin, env: append([]string{"CAIRN_ENDPOINT=https://" + n1.IP + ":8443"}, byToken.env[2:]...)}
	if out, err := byToken1.run("", "flavor", "list"); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("a revoked token still works on the revoking node: %v\n%s", err, out)
	}
	testutil.WaitFor(t, time.Second, "the revoked token refused on another node", func() error {
		if out, err := byToken.run("", "flavor", "list"); err == nil || !strings.Contains(out, "401") {
			return fmt.Errorf("still accepted: %v %s", err, out)
		}
		return nil
	})
	// Storage pool: a disk offered on node2 is opened and reported by node2.
	diskDir := t.TempDir()
	var d struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(x.ok("", "disk", "add", "node2", diskDir, "-o", "json")), &d); err != nil || d.ID == "" {
		t.Fatalf("disk add: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "node2 to report the disk healthy", func() error {
		var ds []struct {
			ID, Node, Health string
			TotalBytes       uint64 `json:"total_bytes"`
		}
		if err := json.Unmarshal([]byte(x.ok("", "disk", "list", "-o", "json")), &ds); err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].Health != "ok" || ds[0].Node != "node2" || ds[0].TotalBytes == 0 {
			return fmt.Errorf("disks: %+v", ds)
		}
		return nil
	})
	if out, err := x.run("", "disk", "remove", d.ID); err == nil || !strings.Contains(out, "drain it") {
		t.Fatalf("removing an active disk: %v\n%s", err, out)
	}
	x.ok("", "disk", "drain", d.ID)
	x.ok("", "disk", "remove", d.ID)
	if out := x.ok("", "disk", "list"); strings.Contains(out, d.ID) {
		t.Fatalf("removed disk still listed:\n%s", out)
	}

	// Bad usage is a clear error, not a crash.
	if out, err := x.run("", "project", "create"); err == nil || !strings.Contains(out, "usage:") {
		t.Fatalf("missing argument: %v\n%s", err, out)
	}
	if out, err := x.run("", "frobnicate"); err == nil || !strings.Contains(out, "unknown command") {
		t.Fatalf("unknown command: %v\n%s", err, out)
	}
}
