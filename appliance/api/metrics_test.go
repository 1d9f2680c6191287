package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// /metrics answers a metrics token (as Prometheus sends it) or a cluster
// admin's token, and nobody else; a metrics token opens nothing else.
func TestMetricsNeedAMetricsToken(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_test_up", Help: "1"}, func() float64 { return 1 }))
	mux := http.NewServeMux()
	mux.Handle("/api/", f.server)
	mux.Handle("GET /metrics", f.server.Metrics(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	f.srv = srv

	f.call("POST", "/api/v1/users", f.admin, map[string]any{"name": "nurse", "password": "correct-horse-battery"}, 201, nil)
	nurse := f.login("nurse", "correct-horse-battery")

	if h := f.call("GET", "/metrics", "", nil, 401, nil); h.Get("WWW-Authenticate") == "" {
		t.Errorf("401 without WWW-Authenticate")
	}
	f.call("GET", "/metrics", "cairn_0123456789abcdef_nope", nil, 401, nil)
	f.call("GET", "/metrics", nurse, nil, 403, nil)
	f.call("POST", "/api/v1/metrics/tokens", nurse, map[string]any{"name": "prometheus"}, 403, nil)

	var created struct {
		Token  string
		Detail identity.Token
	}
	f.call("POST", "/api/v1/metrics/tokens", f.admin, map[string]any{"name": "prometheus"}, 201, &created)
	if created.Detail.Kind != identity.TokenMetrics || len(created.Detail.SecretHash) != 0 {
		t.Fatalf("created %+v", created.Detail)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+created.Token) // what Prometheus' authorization: {credentials} sends
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") == "" {
		t.Fatalf("metrics token: %s", res.Status)
	}
	f.call("GET", "/metrics", f.admin, nil, 200, nil)

	// The metrics token acts as nobody on the API, though an admin made it.
	f.call("GET", "/api/v1/projects", created.Token, nil, 401, nil)
	f.call("POST", "/api/v1/users", created.Token, map[string]any{"name": "eve", "password": "correct-horse-battery"}, 401, nil)

	// Revoked like any token.
	f.call("DELETE", "/api/v1/tokens/"+created.Detail.ID, f.admin, nil, 204, nil)
	f.call("GET", "/metrics", created.Token, nil, 401, nil)
}
