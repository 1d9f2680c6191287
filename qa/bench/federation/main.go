// Command bench-federation measures a hub with many sites (issue 20): a
// real `cairn hub` process, and N simulated sites in this process that
// speak the real protocol (enrolment with a token, mutual TLS, a yamux
// session dialled out, inventory pushes of a site with 50 VMs, heartbeats,
// intent steps answered). It reports, beside the same hub with no site:
//
//   - the hub's resident memory with N sites, and per site;
//   - the hub's CPU per heartbeat while the sites only heartbeat;
//   - an inventory change at a site until the hub's API shows it;
//   - a bulk operation (an intent on every site) until every site answered;
//   - the reconnect storm when the hub restarts: every site back, and the
//     hub's CPU over that time.
//
// Targets: 1,000 sites on one hub node under 2 GiB resident; changes
// visible within 5 s; every site back within 60 s of a hub restart. Run
// it as `make bench-federation` (BENCH_ARGS=-sites=N).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cairnhq/cairn/qa/bench/benchrun"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("bench-federation: ")
	sites := flag.Int("sites", 1000, "simulated sites")
	probes := flag.Int("probes", 20, "inventory changes timed")
	verbose := flag.Bool("v", false, "show the harness's log lines")
	flag.Parse()
	r := benchrun.New("federation", *verbose)
	defer r.RunCleanups()
	if err := run(r, *sites, *probes); err != nil {
		r.Fatalf("%v", err)
	}
}

func run(r *benchrun.Runner, n, probes int) error {
	ctx := context.Background()
	hub, api, err := startHub(r)
	if err != nil {
		return err
	}
	node := hub.Node(1)
	hubURL := "https://" + node.IP + ":8450"
	time.Sleep(10 * time.Second) // settled, before the baseline
	rss0, err := benchrun.RSS(node.PID())
	if err != nil {
		return err
	}
	log.Printf("hub with no site: %d MiB resident", rss0>>20)

	// Enrolment: a token per site, each site enrolled with its own key.
	began := time.Now()
	fakes := make([]*site, n)
	var mu sync.Mutex
	var firstErr error
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range work {
				s, err := enrol(ctx, api, hubURL, fmt.Sprintf("site-%04d", i))
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				fakes[i] = s
				mu.Unlock()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	log.Printf("%d sites enrolled in %v", n, time.Since(began).Round(time.Millisecond))

	runCtx, stop := context.WithCancel(ctx)
	r.Cleanup(stop)
	began = time.Now()
	for _, s := range fakes {
		go s.run(runCtx)
	}
	if err := allConnected(ctx, api, n, 5*time.Minute); err != nil {
		return err
	}
	connectAll := time.Since(began)
	log.Printf("%d sites connected, their inventories on the hub, in %v", n, connectAll.Round(time.Millisecond))

	// Steady: heartbeats only.
	time.Sleep(5 * time.Second)
	cpu0, beats0 := benchrun.ProcCPU(node.PID()), heartbeats(fakes)
	window := 75 * time.Second
	time.Sleep(window)
	cpu, beats := benchrun.ProcCPU(node.PID())-cpu0, heartbeats(fakes)-beats0
	rssN, err := benchrun.RSS(node.PID())
	if err != nil {
		return err
	}
	perBeat := time.Duration(0)
	if beats > 0 {
		perBeat = cpu / time.Duration(beats)
	}
	// All the hub's CPU over the window, shared out: heartbeats are most
	// of what it does then, so this bounds their cost from above.
	log.Printf("steady, %v: %d heartbeats, hub CPU %v (%.2f of a core), %v per heartbeat at most", window, beats, cpu, cpu.Seconds()/window.Seconds(), perBeat)
	log.Printf("hub with %d sites: %d MiB resident, %d KiB per site", n, rssN>>20, (rssN-rss0)/int64(n)>>10)

	// An inventory change at a site, until the hub's API shows it.
	var seen []time.Duration
	for i := range probes {
		s := fakes[(i*7919)%n]
		name := fmt.Sprintf("probe-%d", i)
		began := time.Now()
		s.addVM(name)
		err := testutil.Eventually(30*time.Second, func() error {
			var vms []json.RawMessage
			if err := api.call(ctx, "GET", "/api/v1/federation/vms?name="+name, nil, &vms, 200); err != nil {
				return err
			}
			if len(vms) != 1 {
				return fmt.Errorf("%d found", len(vms))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("change %s: %w", name, err)
		}
		seen = append(seen, time.Since(began))
	}
	slices.Sort(seen)
	log.Printf("an inventory change on the hub: median %v, worst %v (%d changes; target 5 s)", seen[len(seen)/2].Round(time.Millisecond), seen[len(seen)-1].Round(time.Millisecond), len(seen))

	// A bulk operation on every site.
	var names []string
	for _, s := range fakes {
		names = append(names, s.name)
	}
	var in struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	began = time.Now()
	spec := map[string]any{"sites": names, "steps": []map[string]any{{"method": "POST", "path": "/api/v1/projects", "body": map[string]string{"name": "telehealth"}}}}
	if err := api.call(ctx, "POST", "/api/v1/federation/intents", spec, &in, 201); err != nil {
		return err
	}
	err = testutil.Eventually(10*time.Minute, func() error {
		if err := api.call(ctx, "GET", "/api/v1/federation/intents/"+in.ID, nil, &in, 200); err != nil {
			return err
		}
		if in.State != "done" {
			return fmt.Errorf("intent %s", in.State)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bulk operation: %w", err)
	}
	bulk := time.Since(began)
	log.Printf("a bulk operation on %d sites: done in %v (%d steps answered)", n, bulk.Round(time.Millisecond), steps(fakes))

	// The hub restarts: every site comes back by itself.
	node.Restart()
	began = time.Now()
	pid := node.PID()
	if err := waitFakes(fakes, 5*time.Minute); err != nil {
		return err
	}
	back := time.Since(began)
	storm := benchrun.ProcCPU(pid)
	if err := allConnected(ctx, api, n, 2*time.Minute); err != nil {
		return err
	}
	log.Printf("hub restarted: every site back in %v (target 60 s); hub CPU %v over that time, %.2f of a core", back.Round(time.Millisecond), storm, storm.Seconds()/back.Seconds())
	fmt.Printf("\nsites=%d rss0=%dMiB rss=%dMiB per-site=%dKiB cpu-per-heartbeat=%v change-median=%v change-worst=%v bulk=%v restart-back=%v restart-cpu-cores=%.2f\n",
		n, rss0>>20, rssN>>20, (rssN-rss0)/int64(n)>>10, perBeat, seen[len(seen)/2].Round(time.Millisecond), seen[len(seen)-1].Round(time.Millisecond),
		bulk.Round(time.Millisecond), back.Round(time.Millisecond), storm.Seconds()/back.Seconds())
	return nil
}

// hubAPI is the hub's API as its admin.
type hubAPI struct {
	url, token string
	client     *http.Client
}

func (a *hubAPI) call(ctx context.Context, method, path string, body, out any, want int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return benchrun.CallJSON(ctx, a.client, method, a.url+path, a.token, body, out, want)
}

func startHub(r *benchrun.Runner) (*harness.Cluster, *hubAPI, error) {
	password := rand.Text()
	pw := filepath.Join(r.TempDir(), "hub-password")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		return nil, nil, err
	}
	hub := harness.New(r, harness.Options{N: 1, Binary: harness.BuildCairn(r), Args: func(n *harness.Node) []string {
		return []string{"hub", "--name", "hub1", "--data-dir", n.DataDir, "--bind", n.IP, "--expect", "1", "--join-token", rand.Text(),
			"--discovery-port", "0", "--admin-password-file", pw, "--federation-enrol-burst", "0"}
	}})
	node := hub.Node(1)
	pool := x509.NewCertPool()
	err := testutil.Eventually(90*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(node.DataDir, "ca.crt"))
		if err == nil && !pool.AppendCertsFromPEM(b) {
			err = fmt.Errorf("no certificate yet")
		}
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("start the hub: %w", err)
	}
	api := &hubAPI{url: "https://" + node.IP + ":8443", client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 16}}}
	err = testutil.Eventually(90*time.Second, func() error {
		var res struct{ Token string }
		err := api.call(context.Background(), "POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": password}, &res, 200)
		api.token = res.Token
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("log in to the hub: %w", err)
	}
	return hub, api, nil
}

// allConnected waits until the hub lists n connected sites, each with its
// inventory.
func allConnected(ctx context.Context, api *hubAPI, n int, within time.Duration) error {
	return testutil.Eventually(within, func() error {
		var sites []struct {
			Connected bool `json:"connected"`
			VMs       int  `json:"vms"`
		}
		if err := api.call(ctx, "GET", "/api/v1/federation/sites", nil, &sites, 200); err != nil {
			return err
		}
		up := 0
		for _, s := range sites {
			if s.Connected && s.VMs >= 50 {
				up++
			}
		}
		if up != n {
			return fmt.Errorf("%d of %d sites connected with their inventory", up, n)
		}
		return nil
	})
}

func waitFakes(fakes []*site, within time.Duration) error {
	// Down first (the old sessions end), then all up again.
	time.Sleep(time.Second)
	return testutil.Eventually(within, func() error {
		up := 0
		for _, s := range fakes {
			if s.up.Load() {
				up++
			}
		}
		if up != len(fakes) {
			return fmt.Errorf("%d of %d sites have a session", up, len(fakes))
		}
		return nil
	})
}

func heartbeats(fakes []*site) (n int64) {
	for _, s := range fakes {
		n += s.beats.Load()
	}
	return n
}

func steps(fakes []*site) (n int64) {
	for _, s := range fakes {
		n += s.steps.Load()
	}
	return n
}

var discard = slog.New(slog.DiscardHandler)
