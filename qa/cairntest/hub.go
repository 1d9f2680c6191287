package cairntest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
)

// StartHub runs a one-node federation hub (cairn hub) on a bridge of its
// own, its admin logged in; sites join it at HubURL.
func StartHub(t *testing.T) (*harness.Cluster, *Client) { return StartHubN(t, 1) }

// StartHubN runs a hub of n nodes, formed as a site's nodes form their
// cluster, and returns it with a hub admin's client of its first node.
func StartHubN(t *testing.T, n int) (*harness.Cluster, *Client) {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "hub-password")
	if err := os.WriteFile(pw, []byte(AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hub := harness.New(t, harness.Options{N: n, Binary: harness.BuildCairn(t), Args: func(nd *harness.Node) []string {
		args := []string{"hub", "--name", "hub" + fmt.Sprint(nd.Index), "--data-dir", nd.DataDir, "--bind", nd.IP,
			"--expect", fmt.Sprint(n), "--join-token", "qa-hub-token", "--discovery-port", "0", "--admin-password-file", pw, "--log-level", "info"}
		var peers []string
		for _, p := range nd.Cluster().Nodes {
			if p != nd {
				peers = append(peers, p.IP)
			}
		}
		if len(peers) > 0 {
			args = append(args, "--join", strings.Join(peers, ","))
		}
		return args
	}})
	return hub, Admin(t, hub.Node(1))
}

// HubURL is where sites join the hub and keep their sessions.
func HubURL(hub *harness.Cluster) string { return "https://" + hub.Node(1).IP + ":8450" }

// UploadHubImage uploads the guest image to the hub as name, through its
// API, and returns the image's SHA-256.
func UploadHubImage(t *testing.T, ha *Client, name string) string {
	t.Helper()
	f, err := os.Open(harness.GuestImage(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, _ := http.NewRequest("POST", ha.URL("/api/v1/federation/images?name="+url.QueryEscape(name)), f)
	req.Header.Set("Authorization", "Bearer "+ha.Token())
	hc := *ha.HTTP
	hc.Timeout = 2 * time.Minute
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var im struct {
		SHA256 string `json:"sha256"`
	}
	if res.StatusCode != http.StatusCreated || json.Unmarshal(body, &im) != nil {
		t.Fatalf("upload the image to the hub: %d %s", res.StatusCode, body)
	}
	return im.SHA256
}
