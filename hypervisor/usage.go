package hypervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor/qemu"
)

// Usage graphs: every node samples the VMs it runs every UsageStep (CPU
// time and resident memory from /proc, disk bytes from QEMU, network
// bytes from the taps) and keeps, in memory, an hour of those steps and a
// day of five-minute means. Nothing leaves the node until a page asks
// (UsageReader); a VM that moves starts a new history on its new node.
const (
	UsageStep       = 10 * time.Second
	usageHourPoints = int(time.Hour / UsageStep)
	usageDayStep    = 5 * time.Minute
	usageDayPoints  = int(24 * time.Hour / usageDayStep)
)

// Usage spans.
const (
	SpanHour = "hour"
	SpanDay  = "day"
)

// UsagePoint is a VM's use of its resources over one step, ending At.
type UsagePoint struct {
	At time.Time `json:"at"`
	// CPU is how busy the VM's vCPUs were, in percent of all of them
	// (QEMU's own I/O threads count too, so it can pass 100 a little).
	CPU       float64 `json:"cpu_percent"`
	Memory    int64   `json:"memory_bytes"` // QEMU's resident memory
	DiskRead  float64 `json:"disk_read_bps"`
	DiskWrite float64 `json:"disk_write_bps"`
	NetIn     float64 `json:"net_in_bps"` // received by the guest
	NetOut    float64 `json:"net_out_bps"`
}

// UsageHistory is a VM's usage over a span, oldest first, as the node it
// runs on sampled it.
type UsageHistory struct {
	VM          string       `json:"vm"`
	Node        string       `json:"node"`
	Span        string       `json:"span"`
	StepSeconds int          `json:"step_seconds"`
	VCPUs       int64        `json:"vcpus"`
	RAMMiB      int64        `json:"ram_mib"`
	Points      []UsagePoint `json:"points"`
}

// usageSample is one reading of a VM's counters.
type usageSample struct {
	qemu.Counters
	NetIn, NetOut int64
	// NetUnknown: a tap of the VM was not read; its network rates are
	// taken as none for the steps on either side.
	NetUnknown bool
	VCPUs      int64
}

// usageSeries is one VM's history on this node.
type usageSeries struct {
	last *usageSample
	hour []UsagePoint
	day  []UsagePoint
	// acc sums the steps of the five minutes in progress.
	acc struct {
		bucket time.Time
		sum    UsagePoint
		n      int
	}
}

func (s *usageSeries) add(x usageSample) {
	prev := s.last
	s.last = &x
	if prev == nil || prev.PID != x.PID || !x.At.After(prev.At) {
		return // a new QEMU: its counters start again
	}
	dt := x.At.Sub(prev.At).Seconds()
	rate := func(a, b int64) float64 {
		if b < a {
			return 0 // a tap made again, say
		}
		return float64(b-a) / dt
	}
	netRate := func(a, b int64) float64 {
		if x.NetUnknown || prev.NetUnknown {
			return 0
		}
		return rate(a, b)
	}
	p := UsagePoint{
		At:        x.At,
		CPU:       100 * max(0, (x.CPU-prev.CPU).Seconds()) / (dt * float64(max(1, x.VCPUs))),
		Memory:    x.Memory,
		DiskRead:  rate(prev.DiskRead, x.DiskRead),
		DiskWrite: rate(prev.DiskWritten, x.DiskWritten),
		NetIn:     netRate(prev.NetIn, x.NetIn),
		NetOut:    netRate(prev.NetOut, x.NetOut),
	}
	s.hour = appendCapped(s.hour, p, usageHourPoints)
	bucket := p.At.Truncate(usageDayStep)
	if s.acc.n > 0 && !bucket.Equal(s.acc.bucket) {
		s.day = appendCapped(s.day, s.mean(), usageDayPoints)
		s.acc.n, s.acc.sum = 0, UsagePoint{}
	}
	s.acc.bucket = bucket
	s.acc.n++
	a := &s.acc.sum
	a.CPU += p.CPU
	a.Memory += p.Memory
	a.DiskRead += p.DiskRead
	a.DiskWrite += p.DiskWrite
	a.NetIn += p.NetIn
	a.NetOut += p.NetOut
}

// mean is the five minutes in progress, as one point at their end (or at
// the last sample, while they last: never in the future).
func (s *usageSeries) mean() UsagePoint {
	n := float64(s.acc.n)
	a := s.acc.sum
	at := s.acc.bucket.Add(usageDayStep)
	if s.last != nil && s.last.At.Before(at) {
		at = s.last.At
	}
	return UsagePoint{At: at, CPU: a.CPU / n, Memory: int64(float64(a.Memory) / n),
		DiskRead: a.DiskRead / n, DiskWrite: a.DiskWrite / n, NetIn: a.NetIn / n, NetOut: a.NetOut / n}
}

// points is the span's history up to now, oldest first.
func (s *usageSeries) points(span string, now time.Time) []UsagePoint {
	src, length := s.hour, time.Hour
	if span == SpanDay {
		src, length = s.day, 24*time.Hour
		if s.acc.n > 0 {
			src = append(src[:len(src):len(src)], s.mean())
		}
	}
	out := []UsagePoint{}
	for _, p := range src {
		if now.Sub(p.At) <= length {
			out = append(out, p)
		}
	}
	return out
}

func appendCapped(s []UsagePoint, p UsagePoint, n int) []UsagePoint {
	if len(s) >= n {
		s = append(s[:0:0], s[len(s)-n+1:]...)
	}
	return append(s, p)
}

// usageBook holds the histories of the VMs on this node.
type usageBook struct {
	mu  sync.Mutex
	vms map[string]*usageSeries
}

func (b *usageBook) add(vmID string, x usageSample) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.vms == nil {
		b.vms = map[string]*usageSeries{}
	}
	s := b.vms[vmID]
	if s == nil {
		s = &usageSeries{}
		b.vms[vmID] = s
	}
	s.add(x)
}

func (b *usageBook) drop(vmID string) {
	b.mu.Lock()
	delete(b.vms, vmID)
	b.mu.Unlock()
}

func (b *usageBook) points(vmID, span string) []UsagePoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.vms[vmID]; s != nil {
		return s.points(span, time.Now())
	}
	return []UsagePoint{}
}

// sample reads the worker's QEMU's counters into the node's usage book.
func (w *worker) sample(ctx context.Context) {
	if w.inst == nil {
		return
	}
	vm := getVM(w.n.c.Store().ReadTxn(), w.id)
	if vm == nil || vm.Node != w.n.cfg.Name {
		return
	}
	// Briefly: the worker waits meanwhile, and a wake-up (a stop, a
	// delete) must not wait long behind a slow monitor.
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := w.inst.Counters(ctx)
	if err != nil {
		return // gone meanwhile, or busy: a gap in the graph
	}
	x := usageSample{Counters: c, VCPUs: vm.Spec.VCPUs}
	if vm.Status.VCPUs > 0 {
		x.VCPUs = vm.Status.VCPUs // what QEMU has now
	}
	if len(vm.NICs) > 0 {
		taps := netDevCounters()
		for _, nic := range vm.NICs {
			c, ok := taps[w.n.cfg.Net.TapName(nic.ID)]
			if !ok {
				// Not read (or not made yet): a sum without it would
				// drop, and the next one count its whole life as one
				// step. No network for this step instead; the rest of
				// the sample stands.
				x.NetIn, x.NetOut, x.NetUnknown = 0, 0, true
				break
			}
			// The tap's received bytes are what the guest sent.
			x.NetOut += c[0]
			x.NetIn += c[1]
		}
	}
	w.n.usage.add(w.id, x)
}

// netDevCounters maps this network namespace's interfaces to their
// received and sent bytes (/proc/self/net/dev: unlike /sys/class/net, it
// is the reader's namespace, wherever sysfs was mounted).
func netDevCounters() map[string][2]int64 {
	b, err := os.ReadFile("/proc/self/net/dev")
	if err != nil {
		return nil
	}
	out := map[string][2]int64{}
	for line := range strings.Lines(string(b)) {
		name, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) < 9 {
			continue // the two header lines
		}
		rx, err1 := strconv.ParseInt(f[0], 10, 64)
		tx, err2 := strconv.ParseInt(f[8], 10, 64)
		if err1 == nil && err2 == nil {
			out[strings.TrimSpace(name)] = [2]int64{rx, tx}
		}
	}
	return out
}

// Usage is a local VM's usage over span (SpanHour or SpanDay); false if
// the VM is not placed here.
func (n *NodeAgent) Usage(vmID, span string) ([]UsagePoint, bool) {
	if !n.local(n.c.Store().ReadTxn(), vmID) {
		return nil, false
	}
	return n.usage.points(vmID, span), true
}

// usageRelayTimeout bounds the wait for another node's samples.
const usageRelayTimeout = 1500 * time.Millisecond

// UsageRPCPrefix is where a node serves its VMs' usage to its peers.
const UsageRPCPrefix = "/hypervisor/v1/usage/"

// UsageReader finds a VM's usage on whichever node runs it.
type UsageReader struct {
	s     *Service
	peers Peers
	local func(vmID, span string) ([]UsagePoint, bool)
}

// NewUsageReader returns the reader; local is this node's NodeAgent.Usage
// (nil on a node without VMs).
func NewUsageReader(s *Service, peers Peers, local func(vmID, span string) ([]UsagePoint, bool)) *UsageReader {
	if local == nil {
		local = func(string, string) ([]UsagePoint, bool) { return nil, false }
	}
	return &UsageReader{s: s, peers: peers, local: local}
}

// Usage is the usage history of a VM p may see, over span.
func (u *UsageReader) Usage(ctx context.Context, p *identity.Principal, ref, span string) (*UsageHistory, error) {
	if span != SpanHour && span != SpanDay {
		return nil, consensus.Errorf(consensus.CodeInvalid, "span must be %q or %q, not %q", SpanHour, SpanDay, span)
	}
	vm, err := u.s.VM(p, ref)
	if err != nil {
		return nil, err
	}
	step := UsageStep
	if span == SpanDay {
		step = usageDayStep
	}
	h := &UsageHistory{VM: vm.Name, Node: vm.Node, Span: span, StepSeconds: int(step / time.Second),
		VCPUs: vm.Spec.VCPUs, RAMMiB: vm.Spec.RAMMiB, Points: []UsagePoint{}}
	switch {
	case vm.Node == "":
		return h, nil
	case vm.Node == u.peers.Name():
		if pts, ok := u.local(vm.ID, span); ok {
			h.Points = pts
		}
		return h, nil
	}
	addr, ok := u.peers.PeerAddr(vm.Node)
	client := u.peers.RPCClient()
	if !ok || client == nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "node %s is not reachable", vm.Node)
	}
	// A VM's page waits for this: a node that does not answer soon (cut
	// off, its agent hung) costs the page no more than a moment.
	ctx, cancel := context.WithTimeout(ctx, usageRelayTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("https://%s%s%s?span=%s", addr, UsageRPCPrefix, url.PathEscape(vm.ID), span), nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "node %s: %v", vm.Node, err)
	}
	defer res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return h, nil // moved meanwhile: no history yet
	default:
		return nil, consensus.Errorf(consensus.CodeUnavailable, "node %s: %s", vm.Node, res.Status)
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 8<<20)).Decode(&h.Points); err != nil {
		return nil, consensus.Errorf(consensus.CodeUnavailable, "node %s: usage: %v", vm.Node, err)
	}
	return h, nil
}

// RPCHandler serves this node's VMs' usage to its peers (the cluster port
// admits only nodes with a certificate of the cluster CA; the node the
// browser reached checked the user's access).
func (u *UsageReader) RPCHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+UsageRPCPrefix+"{vm}", func(w http.ResponseWriter, r *http.Request) {
		pts, ok := u.local(r.PathValue("vm"), r.URL.Query().Get("span"))
		if !ok {
			http.Error(w, "the VM is not placed here", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(pts)
	})
	return mux
}
