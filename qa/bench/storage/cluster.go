package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// cluster is three Cairn nodes with two disks each, and one S3 client and one
// API client per node.
type cluster struct {
	c     *harness.Cluster
	s3    []*minio.Client
	api   []*http.Client
	raft  benchrun.ProjectWrites // bench-consensus's writes, the small objects' reference
	dials benchrun.Dials         // connections the S3 and API clients opened
}

// startCluster starts the nodes, waits for the six disks, creates a project
// and its S3 credentials and a bucket.
func startCluster(ctx context.Context, t harness.T, bin, bucket string, debug bool) (*cluster, error) {
	password, joinToken := rand.Text(), rand.Text()
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	c := harness.New(t, harness.Options{N: 3, Binary: bin, Args: func(n *harness.Node) []string {
		var peers []string
		for _, m := range n.Cluster().Nodes {
			if m != n {
				peers = append(peers, m.IP)
			}
		}
		args := []string{"agent", "--name", n.Name, "--data-dir", n.DataDir, "--bind", n.IP,
			"--expect", "3", "--join-token", joinToken, "--admin-password-file", pwFile,
			"--discovery-port", "0", "--join", strings.Join(peers, ","),
			"--disk", "disks/d1", "--disk", "disks/d2"}
		if debug {
			args = append(args, benchrun.DebugArgs(n)...)
		}
		return args
	}})
	cl := &cluster{c: c}

	pool := x509.NewCertPool()
	caFile := filepath.Join(c.Nodes[0].DataDir, "ca.crt")
	err := testutil.Eventually(90*time.Second, func() error {
		b, err := os.ReadFile(caFile)
		if err == nil && !pool.AppendCertsFromPEM(b) {
			err = fmt.Errorf("%s: no certificate yet", caFile)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start cairn: %w", err)
	}
	for range c.Nodes {
		cl.api = append(cl.api, benchrun.NewClient(&tls.Config{RootCAs: pool}, &cl.dials))
	}

	var token string
	err = testutil.Eventually(90*time.Second, func() error {
		var res struct{ Token string }
		err := cl.call(ctx, "POST", "/api/v1/auth/login", "", map[string]string{"username": "admin", "password": password}, &res, 200)
		token = res.Token
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("log in: %w", err)
	}
	err = testutil.Eventually(90*time.Second, func() error {
		var ds []struct{ Health string }
		if err := cl.call(ctx, "GET", "/api/v1/disks", token, nil, &ds, 200); err != nil {
			return err
		}
		ok := 0
		for _, d := range ds {
			if d.Health == "ok" {
				ok++
			}
		}
		if ok != 6 {
			return fmt.Errorf("%d of %d disks healthy, want 6", ok, len(ds))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("disks: %w", err)
	}
	if err := cl.call(ctx, "POST", "/api/v1/projects", token, map[string]string{"name": "bench"}, nil, 201); err != nil {
		return nil, fmt.Errorf("create project: %w", err)
	}
	var cred struct {
		AccessKey string `json:"access_key"`
		SecretKey string `json:"secret_key"`
	}
	if err := cl.call(ctx, "POST", "/api/v1/s3/credentials", token, map[string]string{"project": "bench"}, &cred, 201); err != nil {
		return nil, fmt.Errorf("create S3 credentials: %w", err)
	}
	for _, n := range c.Nodes {
		s3, err := minio.New(n.IP+":8447", &minio.Options{
			Creds: credentials.NewStaticV4(cred.AccessKey, cred.SecretKey, ""), Secure: true,
			Region: "us-east-1", BucketLookup: minio.BucketLookupPath,
			Transport: benchrun.NewTransport(&tls.Config{RootCAs: pool}, &cl.dials),
		})
		if err != nil {
			return nil, err
		}
		cl.s3 = append(cl.s3, s3)
	}
	err = testutil.Eventually(30*time.Second, func() error {
		return cl.s3[0].MakeBucket(ctx, bucket, minio.MakeBucketOptions{})
	})
	if err != nil {
		return nil, fmt.Errorf("make bucket: %w", err)
	}
	cl.raft = benchrun.ProjectWrites{Clients: cl.api, Token: token}
	for _, n := range c.Nodes {
		cl.raft.APIs = append(cl.raft.APIs, "https://"+n.IP+":8443")
	}
	return cl, nil
}

// call sends body as JSON to node 1's API and decodes the answer into out
// when the status is want.
func (cl *cluster) call(ctx context.Context, method, path, token string, body, out any, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return benchrun.CallJSON(ctx, cl.api[0], method, "https://"+cl.c.Nodes[0].IP+":8443"+path, token, body, out, want)
}
