package cairntest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnhq/cairn/qa/harness"
)

// StartHub runs a one-node federation hub (cairn hub) on a bridge of its
// own, its admin logged in; sites join it at HubURL.
func StartHub(t *testing.T) (*harness.Cluster, *Client) {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "hub-password")
	if err := os.WriteFile(pw, []byte(AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hub := harness.New(t, harness.Options{N: 1, Binary: harness.BuildCairn(t), Args: func(n *harness.Node) []string {
		return []string{"hub", "--name", "hub" + fmt.Sprint(n.Index), "--data-dir", n.DataDir, "--bind", n.IP,
			"--expect", "1", "--join-token", "qa-hub-token", "--discovery-port", "0", "--admin-password-file", pw, "--log-level", "info"}
	}})
	return hub, Admin(t, hub.Node(1))
}

// HubURL is where sites join the hub and keep their sessions.
func HubURL(hub *harness.Cluster) string { return "https://" + hub.Node(1).IP + ":8450" }
