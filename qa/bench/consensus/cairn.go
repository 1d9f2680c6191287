package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// cairnSide is Cairn: three `cairn agent` nodes, written to through the API
// as an operator would, with a server certificate checked against the
// cluster CA.
type cairnSide struct {
	c       *harness.Cluster
	clients []*http.Client
	token   string
	writes  benchrun.ProjectWrites // one project per key; the benchmark write is a PATCH
	sec     security
}

// startCairn starts the nodes, logs in as admin and creates one project per
// key.
func startCairn(ctx context.Context, t harness.T, bin, logStore string, keys int, debug bool) (*cairnSide, error) {
	password, joinToken := rand.Text(), rand.Text()
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("start cairn: %w", err)
	}
	c := harness.New(t, harness.Options{N: 3, Binary: bin, Args: func(n *harness.Node) []string {
		var ips []string
		for _, m := range n.Cluster().Nodes {
			ips = append(ips, m.IP)
		}
		args := []string{"agent", "--name", n.Name, "--data-dir", n.DataDir, "--bind", n.IP,
			"--expect", "3", "--join", strings.Join(ips, ","), "--join-token", joinToken,
			"--admin-password-file", pwFile, "--discovery-port", "0", "--raft-log-store", logStore}
		if debug {
			args = append(args, benchrun.DebugArgs(n)...)
		}
		return args
	}})
	s := &cairnSide{c: c}

	// ca.crt appears once the cluster has formed; every node has the same.
	roots := x509.NewCertPool()
	caFile := filepath.Join(c.Nodes[0].DataDir, "ca.crt")
	err := testutil.Eventually(90*time.Second, func() error {
		b, err := os.ReadFile(caFile)
		if err == nil && !roots.AppendCertsFromPEM(b) {
			err = fmt.Errorf("%s: no certificate yet", caFile)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start cairn: %w", err)
	}
	for range c.Nodes {
		s.clients = append(s.clients, benchrun.NewClient(&tls.Config{RootCAs: roots}, nil))
	}

	// Some node creates the admin from the password file once it is ready.
	var version uint16
	err = testutil.Eventually(60*time.Second, func() error {
		var res struct{ Token string }
		login := map[string]string{"username": "admin", "password": password}
		v, err := call(ctx, s.clients[0], "POST", s.url(0, "/api/v1/auth/login"), "", login, &res, 200)
		s.token, version = res.Token, v
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start cairn: log in: %w", err)
	}
	s.sec = security{
		client: tlsName(version) + ", server certificate verified against the cluster CA (ca.crt)",
		peer:   "mutual TLS with the cluster CA (Raft and RPC)",
	}
	if err := testutil.Eventually(60*time.Second, func() error { return s.healthy(ctx) }); err != nil {
		return nil, fmt.Errorf("start cairn: %w", err)
	}
	s.writes = benchrun.ProjectWrites{Clients: s.clients, Token: s.token}
	for i := range c.Nodes {
		s.writes.APIs = append(s.writes.APIs, s.url(i, ""))
	}
	if err := s.writes.Create(ctx, keys, "bench"); err != nil {
		return nil, fmt.Errorf("start cairn: %w", err)
	}
	return s, nil
}

func (s *cairnSide) name() string           { return "Cairn" }
func (s *cairnSide) nodes() []*harness.Node { return s.c.Nodes }
func (s *cairnSide) security() security     { return s.sec }
func (s *cairnSide) url(i int, p string) string {
	return "https://" + s.c.Nodes[i].IP + ":8443" + p
}

// write sets the description of key's project: one Raft commit, with its
// audit record.
func (s *cairnSide) write(ctx context.Context, i, key int) error {
	return s.writes.Write(ctx, i, key)
}

// clusterStatus is the part of GET /api/v1/cluster used here.
type clusterStatus struct {
	Leader string `json:"leader"`
	Voters int    `json:"voters"`
	Nodes  []struct {
		Name    string `json:"name"`
		Healthy bool   `json:"healthy"`
	} `json:"nodes"`
}

func (s *cairnSide) status(ctx context.Context, i int) (clusterStatus, error) {
	var st clusterStatus
	_, err := call(ctx, s.clients[i], "GET", s.url(i, "/api/v1/cluster"), s.token, nil, &st, 200)
	if err != nil {
		return st, fmt.Errorf("%s: cluster status: %w", s.c.Nodes[i].Name, err)
	}
	return st, nil
}

// leader asks the nodes in turn and returns the first answer's leader.
func (s *cairnSide) leader(ctx context.Context) (int, error) {
	var errs []error
	for i := range s.c.Nodes {
		st, err := s.status(ctx, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for j, n := range s.c.Nodes {
			if n.Name == st.Leader {
				return j, nil
			}
		}
		errs = append(errs, fmt.Errorf("%s: leader %q", s.c.Nodes[i].Name, st.Leader))
	}
	return 0, fmt.Errorf("cairn: no leader: %w", errors.Join(errs...))
}

// healthy wants every node ready and reporting all three voters healthy under
// the same leader.
func (s *cairnSide) healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	leader := ""
	for i, n := range s.c.Nodes {
		if _, err := call(ctx, s.clients[i], "GET", s.url(i, "/readyz"), "", nil, nil, 200); err != nil {
			return fmt.Errorf("%s: readyz: %w", n.Name, err)
		}
		st, err := s.status(ctx, i)
		if err != nil {
			return err
		}
		if st.Leader == "" || leader != "" && st.Leader != leader {
			return fmt.Errorf("%s: leader %q, others %q", n.Name, st.Leader, leader)
		}
		leader = st.Leader
		healthy := 0
		for _, m := range st.Nodes {
			if m.Healthy {
				healthy++
			}
		}
		if st.Voters != len(s.c.Nodes) || healthy != len(s.c.Nodes) {
			return fmt.Errorf("%s: %d voters, %d healthy nodes, want %d", n.Name, st.Voters, healthy, len(s.c.Nodes))
		}
	}
	return nil
}

// profiler is a side whose nodes can be profiled while it is driven.
type profiler interface {
	// profile starts CPU profiles of every node lasting d and returns a
	// function that waits for them and writes them to dir.
	profile(ctx context.Context, d time.Duration, dir string) (wait func())
}

func (s *cairnSide) profile(ctx context.Context, d time.Duration, dir string) func() {
	return benchrun.Profile(ctx, s.c.Nodes, d, dir, "")
}
