package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// apiRecorder is a real HTTP server that answers every call with an empty
// JSON list and records what it was asked.
type apiRecorder struct {
	mu    sync.Mutex
	calls []string
}

func (a *apiRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.calls = append(a.calls, r.Method+" "+r.URL.RequestURI()+" auth="+r.Header.Get("Authorization"))
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("[]"))
}

func TestGlobalFlagsBeforeAndAfterTheCommand(t *testing.T) {
	t.Setenv("CAIRN_CONFIG", t.TempDir()+"/config.json")
	t.Setenv("CAIRN_ENDPOINT", "")
	t.Setenv("CAIRN_TOKEN", "")
	rec := &apiRecorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	cases := [][]string{
		{"--endpoint", srv.URL, "vm", "list"},
		{"--endpoint=" + srv.URL, "--token", "tok", "-o", "json", "vm", "list", "--project", "p1"},
		{"vm", "list", "--endpoint", srv.URL},
		{"-o", "json", "node", "list", "--endpoint", srv.URL},
	}
	want := []string{
		"GET /api/v1/vms auth=",
		"GET /api/v1/vms?project=p1 auth=Bearer tok",
		"GET /api/v1/vms auth=",
		"GET /api/v1/nodes auth=",
	}
	for i, args := range cases {
		var out, errOut bytes.Buffer
		if code := Main(args, strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("cairn %s: exit %d: %s", strings.Join(args, " "), code, errOut.String())
		}
		rec.mu.Lock()
		got := rec.calls[len(rec.calls)-1]
		rec.mu.Unlock()
		if got != want[i] {
			t.Errorf("cairn %s called %q, want %q", strings.Join(args, " "), got, want[i])
		}
	}
}

func TestUnknownLeadingFlagIsAUsageError(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := Main([]string{"--bogus", "x", "vm", "list"}, strings.NewReader(""), &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errOut.String(), "unknown global flag --bogus") {
		t.Errorf("stderr %q does not name the flag", errOut.String())
	}
}
