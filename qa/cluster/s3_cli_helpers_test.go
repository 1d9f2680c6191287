package cluster_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/minio/minio-go/v7"
)

// s3CLIs runs the S3 command-line clients Debian 12 ships (awscli 2.9,
// s3cmd 2.3, rclone 1.60), as the real processes people run, each against
// its own node. Nothing comes from the machine's environment: the machine
// may set AWS_CA_BUNDLE, proxies or another aws earlier on PATH, and CI
// machines have none of that.
type s3CLIs struct {
	t          *testing.T
	dir        string // HOME and the clients' configuration files
	ca         string // the cluster CA, which every client is told to trust
	ak, sk     string
	aws, s3cmd *harness.Node
	rclone     *harness.Node
}

var s3CLIPaths = map[string]string{"aws": "/usr/bin/aws", "s3cmd": "/usr/bin/s3cmd", "rclone": "/usr/bin/rclone"}

// newS3CLIs writes each client's configuration for the key ak: awscli talks
// to node 1, s3cmd to node 2 and rclone to node 3.
func newS3CLIs(t *testing.T, c *harness.Cluster, ak, sk string) *s3CLIs {
	t.Helper()
	for name, path := range s3CLIPaths {
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s is not installed (%v): run qa/scripts/deps.sh test (Debian's awscli, s3cmd and rclone)", name, err)
		}
	}
	x := &s3CLIs{t: t, dir: t.TempDir(), ca: filepath.Join(c.Node(1).DataDir, "ca.crt"), ak: ak, sk: sk,
		aws: c.Node(1), s3cmd: c.Node(2), rclone: c.Node(3)}
	x.write("aws-config", "[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
	// One request at a time, over one connection, without retries.
	x.write("aws-config-serial", "[default]\nregion = us-east-1\nmax_attempts = 1\ns3 =\n    addressing_style = path\n    max_concurrent_requests = 1\n")
	for _, v2 := range []bool{false, true} {
		x.write(fmt.Sprintf("s3cfg-v2-%v", v2), fmt.Sprintf(`[default]
access_key = %s
secret_key = %s
host_base = %s:8447
host_bucket = %[3]s:8447
bucket_location = us-east-1
use_https = True
check_ssl_certificate = True
check_ssl_hostname = True
ca_certs_file = %s
signature_v2 = %v
progress_meter = False
`, ak, sk, x.s3cmd.IP, x.ca, pyBool(v2)))
	}
	x.write("rclone.conf", fmt.Sprintf(`[cairn]
type = s3
provider = Other
access_key_id = %s
secret_access_key = %s
endpoint = https://%s:8447
region = us-east-1
force_path_style = true
`, ak, sk, x.rclone.IP))
	return x
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func (x *s3CLIs) write(name, content string) {
	if err := os.WriteFile(filepath.Join(x.dir, name), []byte(content), 0o600); err != nil {
		x.t.Fatal(err)
	}
}

// command builds the argv and environment of one client run.
func (x *s3CLIs) command(client string, args ...string) ([]string, []string) {
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + x.dir, "LC_ALL=C.UTF-8", "TZ=UTC"}
	argv := []string{s3CLIPaths[client]}
	switch client {
	case "aws", "aws-serial":
		config := "aws-config"
		argv = []string{s3CLIPaths["aws"], "--endpoint-url", "https://" + x.aws.IP + ":8447"}
		if client == "aws-serial" {
			config = "aws-config-serial"
			argv = append(argv, "--cli-read-timeout", "10")
		}
		env = append(env, "AWS_ACCESS_KEY_ID="+x.ak, "AWS_SECRET_ACCESS_KEY="+x.sk, "AWS_DEFAULT_REGION=us-east-1",
			"AWS_CA_BUNDLE="+x.ca, "AWS_CONFIG_FILE="+filepath.Join(x.dir, config),
			"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(x.dir, "no-credentials"), "AWS_PAGER=")
	case "s3cmd", "s3cmd-v2":
		argv = []string{s3CLIPaths["s3cmd"], "-c", filepath.Join(x.dir, fmt.Sprintf("s3cfg-v2-%v", client == "s3cmd-v2"))}
	case "rclone":
		// rclone 1.60's --ca-cert fails (LoadCustomCABundleError) when
		// AWS_CA_BUNDLE is set too; this environment has none.
		argv = append(argv, "--config", filepath.Join(x.dir, "rclone.conf"), "--ca-cert", x.ca)
	}
	return append(argv, args...), env
}

// run runs a client and returns its stdout, stderr and error.
func (x *s3CLIs) run(client string, args ...string) (string, string, error) {
	argv, env := x.command(client, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = env, x.dir, &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// reproduce is the command line that reruns a client by hand.
func (x *s3CLIs) reproduce(client string, args ...string) string {
	argv, env := x.command(client, args...)
	return "env -i " + strings.Join(env, " ") + " " + strings.Join(quoteAll(argv), " ")
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		if s == "" || strings.ContainsAny(s, " '\"$\\*?[]{}()&;|<>#~=!") {
			s = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
		out[i] = s
	}
	return out
}

// with is x reporting to t, for a subtest.
func (x *s3CLIs) with(t *testing.T) *s3CLIs {
	y := *x
	y.t = t
	return &y
}

// ok runs a client that must succeed and returns its stdout.
func (x *s3CLIs) ok(client string, args ...string) string {
	x.t.Helper()
	out, _ := x.okBoth(client, args...)
	return out
}

// okBoth runs a client that must succeed and returns its stdout and stderr.
func (x *s3CLIs) okBoth(client string, args ...string) (string, string) {
	x.t.Helper()
	start := time.Now()
	out, errOut, err := x.run(client, args...)
	if err != nil {
		x.t.Fatalf("%s: %v\n%s\nstdout:\n%s\nstderr:\n%s", client, err, x.reproduce(client, args...), out, errOut)
	}
	if d := time.Since(start); d > 5*time.Second {
		x.t.Logf("%s %s took %s", client, strings.Join(args, " "), d.Round(time.Millisecond))
	}
	return out, errOut
}

// fails runs a client that must fail with the S3 error code want (shown in
// its stderr) and returns the stderr.
func (x *s3CLIs) fails(want, client string, args ...string) string {
	x.t.Helper()
	out, errOut, err := x.run(client, args...)
	if err == nil || !strings.Contains(errOut, want) {
		x.t.Fatalf("%s succeeded or failed otherwise (%v), want %s\n%s\nstdout:\n%s\nstderr:\n%s", client, err, want, x.reproduce(client, args...), out, errOut)
	}
	return errOut
}

// makeTree writes a directory tree of random files with names that trip
// encoders (spaces, +, non-ASCII), an empty file and one large enough for
// awscli and s3cmd to upload in parts.
func makeTree(t *testing.T, dir string, seed uint64) {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, 1))
	files := map[string]int{
		"README": 1200, "empty": 0, "with space.txt": 333, "a+b=c.bin": 4096, "ünïcödé/名前.txt": 77,
		"scans/2024/01/a.dcm": 300 << 10, "scans/2024/01/b.dcm": 1 << 20, "scans/2024/02/c.dcm": 5000,
		"scans/big.dcm": 17 << 20,
	}
	for name, size := range files {
		writeRandom(t, filepath.Join(dir, name), size, rnd)
	}
}

func writeRandom(t *testing.T, path string, size int, rnd *rand.Rand) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// treeSums is the SHA-256 of every file under dir, by slash path.
func treeSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sums[filepath.ToSlash(rel)] = fileSum(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// bucketSums reads every object under prefix through c and returns their
// SHA-256, by key without the prefix.
func bucketSums(t *testing.T, c *minio.Client, bucket, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	sums := map[string]string{}
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s/%s: %v", bucket, prefix, o.Err)
		}
		obj, err := c.GetObject(ctx, bucket, o.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, obj)
		obj.Close()
		if err != nil || n != o.Size {
			t.Fatalf("read %s/%s: %d of %d bytes, %v", bucket, o.Key, n, o.Size, err)
		}
		sums[strings.TrimPrefix(o.Key, prefix)] = hex.EncodeToString(h.Sum(nil))
	}
	return sums
}

// sameSums fails t, naming the differences, unless got and want are equal.
func sameSums(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	var diff []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		switch g, ok := got[k]; {
		case !ok:
			diff = append(diff, "missing "+k)
		case g != want[k]:
			diff = append(diff, "different "+k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			diff = append(diff, "extra "+k)
		}
	}
	t.Fatalf("%s: %s", what, strings.Join(diff, ", "))
}
