package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/cairnhq/cairn/qa/harness"
)

// system is one side of the comparison: a 3-node cluster started by the
// harness that the benchmark writes to over HTTPS.
type system interface {
	name() string
	nodes() []*harness.Node
	// write commits one write of key's value through node i (an index into
	// nodes()) and returns once the cluster has acknowledged it.
	write(ctx context.Context, i, key int) error
	// leader returns the index of the node the cluster reports as leader.
	leader(ctx context.Context) (int, error)
	// healthy returns nil once every node serves and all agree on a leader.
	healthy(ctx context.Context) error
	// security describes how client and peer traffic is protected.
	security() security
}

// security is what a side's report says about TLS.
type security struct {
	client string // as negotiated on a real client connection
	peer   string // as configured
}

// statusError is a response with a status other than the one expected.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("status %d: %s", e.status, e.body)
}

// call sends body (if not nil) as JSON and decodes the response into out (if
// not nil) when its status is want. The body is always drained so the
// connection is reused. It returns the response's TLS version.
func call(ctx context.Context, c *http.Client, method, url, token string, body, out any, want int) (uint16, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var version uint16
	if resp.TLS != nil {
		version = resp.TLS.Version
	}
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, resp.Body)
		return version, &statusError{resp.StatusCode, strings.TrimSpace(string(b))}
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return version, fmt.Errorf("%s %s: decode: %w", method, url, err)
		}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return version, err
}

// tlsName names a TLS version as in the report, "none" for plain HTTP.
func tlsName(v uint16) string {
	if v == 0 {
		return "none"
	}
	return tls.VersionName(v)
}
