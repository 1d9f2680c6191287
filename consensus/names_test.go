package consensus

import (
	"strings"
	"testing"
	"time"
)

// Two nodes started under one name (on one host both default to its
// hostname) can never form a cluster: they must say so and name the fix.
func TestDuplicateNodeNameIsReported(t *testing.T) {
	tc := &testCluster{t: t}
	a := newTestConfig(t, 1, 2, "twin-token")
	b := newTestConfig(t, 2, 2, "twin-token")
	a.Name, b.Name = "twin", "twin"
	b.Join = []string{a.BindAddr + ":18445"}
	na, nb := tc.start(a), tc.start(b)
	for _, nd := range []*Node{na, nb} {
		select {
		case err := <-nd.Failed():
			if !strings.Contains(err.Error(), `"twin"`) || !strings.Contains(err.Error(), "--name") {
				t.Fatalf("error %q does not name the node and the --name fix", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("a node sharing its name with another never reported it")
		}
	}
}
