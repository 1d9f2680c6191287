package cluster_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
)

// The register under test is one project's description. Reads are
// linearizable GETs (?consistent=true); writes are compare-and-set through
// If-Match with the version a client just read. Every write stores a unique
// value, so "the version I read" and "the value I read" name the same state
// and the model can work with values.

type regInput struct {
	Write  bool
	Expect string // value the client read before its CAS
	Value  string // value it tries to write
}

type regOutput struct {
	Value   string // read result
	OK      bool   // CAS applied
	Unknown bool   // the outcome of a CAS is unknown (timeout, 5xx)
}

var registerModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{""} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(string), input.(regInput), output.(regOutput)
		switch {
		case !in.Write:
			if out.Value == s {
				return []any{s}
			}
			return nil
		case out.Unknown:
			if s == in.Expect {
				return []any{s, in.Value}
			}
			return []any{s}
		case out.OK:
			if s == in.Expect {
				return []any{in.Value}
			}
			return nil
		default: // 412: the version had moved on
			if s != in.Expect {
				return []any{s}
			}
			return nil
		}
	},
	Equal: func(a, b any) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		if !in.Write {
			return fmt.Sprintf("read() -> %q", out.Value)
		}
		res := map[bool]string{true: "ok", false: "failed"}[out.OK]
		if out.Unknown {
			res = "unknown"
		}
		return fmt.Sprintf("cas(%q -> %q) %s", in.Expect, in.Value, res)
	},
}

// Concurrent clients read and compare-and-set one project through different
// nodes while a nemesis kills, pauses and partitions nodes. The history must
// be linearizable.
func TestLinearizableUnderFaults(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3})
	a := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, a, 3, 0)
	if _, err := a.CreateProject("register"); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var history []porcupine.Operation
	start := time.Now()
	record := func(client int, in regInput, call time.Time, out regOutput, ret time.Time) {
		mu.Lock()
		defer mu.Unlock()
		r := int64(ret.Sub(start))
		if out.Unknown {
			r = int64(time.Hour) // may take effect at any later time
		}
		history = append(history, porcupine.Operation{ClientId: client, Input: in, Call: int64(call.Sub(start)), Output: out, Return: r})
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runClient(i, a.On(c.Nodes[i%3]), stop, record)
		}()
	}
	nemesis(t, c, 20*time.Second)
	close(stop)
	wg.Wait()

	writes, oks := 0, 0
	for _, op := range history {
		if op.Input.(regInput).Write {
			writes++
			if op.Output.(regOutput).OK {
				oks++
			}
		}
	}
	t.Logf("history: %d operations, %d writes, %d applied", len(history), writes, oks)
	if oks < 10 {
		t.Fatalf("only %d successful writes: the cluster did not make progress under faults", oks)
	}
	model := registerModel.ToModel()
	res, info := porcupine.CheckOperationsVerbose(model, history, 60*time.Second)
	if res != porcupine.Ok {
		dir := filepath.Join("..", "artifacts", t.Name())
		_ = os.MkdirAll(dir, 0o755)
		path := filepath.Join(dir, "history.html")
		if f, err := os.Create(path); err == nil {
			_ = porcupine.Visualize(model, info, f)
			f.Close()
		}
		t.Fatalf("history is not linearizable (%v); visualization in %s", res, path)
	}
}

func runClient(id int, c *cairntest.Client, stop <-chan struct{}, record func(int, regInput, time.Time, regOutput, time.Time)) {
	c.HTTP.Timeout = 3 * time.Second
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		call := time.Now()
		var p cairntest.Project
		h, err := c.CallH("GET", "/api/v1/projects/register?consistent=true", nil, 200, &p)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue // a failed read observed nothing
		}
		record(id, regInput{}, call, regOutput{Value: p.Description}, time.Now())
		if rand.IntN(2) == 0 {
			continue
		}
		in := regInput{Write: true, Expect: p.Description, Value: "c" + strconv.Itoa(id) + "-" + strconv.Itoa(n)}
		call = time.Now()
		err = c.Call("PATCH", "/api/v1/projects/register", map[string]string{"description": in.Value}, 200, nil, "If-Match", h.Get("ETag"))
		var he *cairntest.HTTPError
		switch {
		case err == nil:
			record(id, in, call, regOutput{OK: true}, time.Now())
		case errors.As(err, &he) && he.Status == 412:
			record(id, in, call, regOutput{}, time.Now())
		case isDialError(err):
			// Never reached the server: nothing happened.
		default:
			record(id, in, call, regOutput{Unknown: true}, time.Now())
		}
	}
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" || strings.Contains(err.Error(), "connection refused")
}

// nemesis injects faults for d: kill and restart, pause and resume, and
// isolate a node, each aimed at the leader when one is known.
func nemesis(t *testing.T, c *harness.Cluster, d time.Duration) {
	a := cairntest.Admin(t, c.Node(1))
	pick := func() *harness.Node {
		for _, n := range c.Nodes {
			if st, err := a.On(n).Status(); err == nil && st.Leader != "" {
				if l := cairntest.NodeByName(c, st.Leader); l != nil {
					return l
				}
			}
		}
		return c.Nodes[rand.IntN(len(c.Nodes))]
	}
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		n := pick()
		switch i % 3 {
		case 0:
			t.Logf("nemesis: kill -9 %s", n.Name)
			n.Kill()
			time.Sleep(1500 * time.Millisecond)
			n.Start()
		case 1:
			t.Logf("nemesis: SIGSTOP %s", n.Name)
			n.Stop()
			time.Sleep(1500 * time.Millisecond)
			n.Cont()
		case 2:
			t.Logf("nemesis: isolate %s", n.Name)
			var rest []*harness.Node
			for _, o := range c.Nodes {
				if o != n {
					rest = append(rest, o)
				}
			}
			c.Partition([]*harness.Node{n}, rest)
			time.Sleep(2 * time.Second)
			c.Heal()
		}
		time.Sleep(1500 * time.Millisecond)
	}
}
