package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// etcdSide is the reference: Debian's etcd, three members with auto-TLS on the
// client and peer ports and fsync on (etcd's default; 3.4 cannot turn it off),
// written to through its JSON gRPC gateway.
type etcdSide struct {
	c       *harness.Cluster
	clients []*http.Client
	api     string // gateway prefix, "/v3" or "/v3beta"
	sec     security
}

// startEtcd starts the members and waits until they serve and agree on a
// leader.
func startEtcd(ctx context.Context, t harness.T, bin string) (*etcdSide, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	c := harness.New(t, harness.Options{N: 3, Binary: path, Args: etcdArgs})
	// etcd's auto-TLS certificates are self-signed, new on every start:
	// there is nothing to verify them against.
	e := &etcdSide{c: c, api: "/v3"}
	for range c.Nodes {
		e.clients = append(e.clients, benchrun.NewClient(&tls.Config{InsecureSkipVerify: true}, nil))
	}
	if err := testutil.Eventually(60*time.Second, func() error { return e.healthy(ctx) }); err != nil {
		return nil, fmt.Errorf("start etcd: %w", err)
	}
	// 3.4 serves /v3; older gateways only /v3beta.
	for _, api := range []string{"/v3", "/v3beta"} {
		e.api = api
		var v uint16
		if v, err = e.put(ctx, 0, 0); err == nil {
			e.sec = security{
				client: tlsName(v) + ", --auto-tls self-signed certificate, not verified by the client",
				peer:   "TLS, --peer-auto-tls",
			}
			return e, nil
		}
	}
	return nil, fmt.Errorf("start etcd: first put: %w", err)
}

func etcdArgs(n *harness.Node) []string {
	var peers []string
	for _, m := range n.Cluster().Nodes {
		peers = append(peers, m.Name+"=https://"+m.IP+":2380")
	}
	return []string{
		"--name", n.Name,
		"--data-dir", n.DataDir,
		"--listen-client-urls", "https://" + n.IP + ":2379",
		"--advertise-client-urls", "https://" + n.IP + ":2379",
		"--listen-peer-urls", "https://" + n.IP + ":2380",
		"--initial-advertise-peer-urls", "https://" + n.IP + ":2380",
		"--initial-cluster", strings.Join(peers, ","),
		"--initial-cluster-state", "new",
		"--auto-tls", "--peer-auto-tls",
		"--logger", "zap", "--log-outputs", "stderr",
	}
}

func (e *etcdSide) name() string           { return "etcd" }
func (e *etcdSide) nodes() []*harness.Node { return e.c.Nodes }
func (e *etcdSide) security() security     { return e.sec }
func (e *etcdSide) url(i int, p string) string {
	return "https://" + e.c.Nodes[i].IP + ":2379" + e.api + p
}

func (e *etcdSide) write(ctx context.Context, i, key int) error {
	_, err := e.put(ctx, i, key)
	return err
}

func (e *etcdSide) put(ctx context.Context, i, key int) (uint16, error) {
	body := map[string]string{
		"key":   base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "bench/%d", key)),
		"value": base64.StdEncoding.EncodeToString([]byte(benchrun.WriteValue())),
	}
	return call(ctx, e.clients[i], "POST", e.url(i, "/kv/put"), "", body, nil, 200)
}

// etcdStatus is the part of a maintenance/status answer used here; the
// gateway encodes 64-bit integers as strings.
type etcdStatus struct {
	Header struct {
		MemberID string `json:"member_id"`
	} `json:"header"`
	Leader string `json:"leader"`
}

func (e *etcdSide) status(ctx context.Context, i int) (etcdStatus, error) {
	var st etcdStatus
	_, err := call(ctx, e.clients[i], "POST", e.url(i, "/maintenance/status"), "", struct{}{}, &st, 200)
	if err != nil {
		return st, fmt.Errorf("%s: status: %w", e.c.Nodes[i].Name, err)
	}
	return st, nil
}

// leader asks every member and returns the one whose own ID is the leader.
func (e *etcdSide) leader(ctx context.Context) (int, error) {
	var errs []error
	for i := range e.c.Nodes {
		st, err := e.status(ctx, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Leader != "" && st.Leader != "0" && st.Header.MemberID == st.Leader {
			return i, nil
		}
	}
	return 0, fmt.Errorf("etcd: no member is leader: %w", errors.Join(errs...))
}

func (e *etcdSide) healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	leader := ""
	for i, n := range e.c.Nodes {
		st, err := e.status(ctx, i)
		if err != nil {
			return err
		}
		if st.Leader == "" || st.Leader == "0" {
			return fmt.Errorf("%s: no leader", n.Name)
		}
		if leader != "" && st.Leader != leader {
			return fmt.Errorf("%s: leader %s, others %s", n.Name, st.Leader, leader)
		}
		leader = st.Leader
	}
	return nil
}
