package image

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// api is a small JSON client of one box.
type api struct {
	t     *testing.T
	box   *box
	token string
}

func (a *api) call(method, path string, body, out any, want int) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+a.box.api+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	res, err := a.box.client().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %s %s", method, path, res.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

var setupCode = regexp.MustCompile(`enter the code\s+([A-Z0-9]{4}-[A-Z0-9]{4})`)

// Three boxes on one private bridge, from a cold start and with no seed
// addresses, find each other by LAN discovery and form a 3-voter cluster.
// The admin and a project are created through one box; one box is powered
// off hard, the other two keep accepting writes, and the third, powered on
// again, rejoins with its data disk intact and sees every write.
func TestThreeBoxesFormACluster(t *testing.T) {
	files := bootFiles(t)
	br := harness.NewBridge(t)
	dir := t.TempDir()
	boxes := make([]*box, 4) // 1-based
	disks := make([]string, 4)
	taps := make([]string, 4)
	// The image carries no cluster key: the three boxes get one at
	// install time, here on the kernel command line.
	key := rand.Text()
	start := func(i int) *box {
		netdev := fmt.Sprintf("tap,id=n0,ifname=%s,script=no,downscript=no", taps[i])
		cmdline := fmt.Sprintf("cairn.ip=%s/%d cairn.expect=3 cairn.token=%s", br.Addr(i), br.Subnet.Bits(), key)
		return boot(t, direct(files, disks[i], cmdline), netdev, br.Addr(i).String()+":8443", 0x10+i)
	}
	for i := 1; i <= 3; i++ {
		disks[i] = filepath.Join(dir, fmt.Sprintf("data%d.img", i))
		if err := os.Truncate(mustCreate(t, disks[i]), 2<<30); err != nil {
			t.Fatal(err)
		}
		var err error
		if taps[i], err = br.AddTap(i); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	for i := 1; i <= 3; i++ {
		boxes[i] = start(i)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := 1; i <= 3; i++ {
		wg.Go(func() { errs[i] = boxes[i].ready(4 * time.Minute) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("three boxes ready %s after power-on", time.Since(t0).Round(100*time.Millisecond))

	// The setup code on box 1's console (each box shows its own) creates the
	// admin there; every box then knows the admin.
	var code string
	testutil.WaitFor(t, time.Minute, "a setup code on box 1's console", func() error {
		m := setupCode.FindAllStringSubmatch(boxes[1].Console(), -1)
		if len(m) == 0 {
			return fmt.Errorf("none yet")
		}
		code = m[len(m)-1][1]
		return nil
	})
	if err := (&api{t: t, box: boxes[1]}).call("POST", "/api/v1/setup", map[string]string{"setup_code": code, "username": "admin", "password": "correct horse battery"}, nil, 201); err != nil {
		t.Fatal(err)
	}
	login := func(b *box) *api {
		a := &api{t: t, box: b}
		var res struct{ Token string }
		testutil.WaitFor(t, time.Minute, "admin login on "+b.api, func() error {
			return a.call("POST", "/api/v1/auth/login", map[string]string{"username": "admin", "password": "correct horse battery"}, &res, 200)
		})
		a.token = res.Token
		return a
	}
	a1, a3 := login(boxes[1]), login(boxes[3])
	testutil.WaitFor(t, time.Minute, "3 voters with a leader", func() error {
		var st struct {
			Leader string `json:"leader"`
			Voters int    `json:"voters"`
		}
		if err := a3.call("GET", "/api/v1/cluster", nil, &st, 200); err != nil {
			return err
		}
		if st.Leader == "" || st.Voters != 3 {
			return fmt.Errorf("leader %q, %d voters", st.Leader, st.Voters)
		}
		return nil
	})
	if err := a1.call("POST", "/api/v1/projects", map[string]string{"name": "radiology"}, nil, 201); err != nil {
		t.Fatal(err)
	}
	ca := boxes[3].caKey()

	// Box 3 loses power. The other two still take writes.
	_ = boxes[3].cmd.Process.Kill()
	<-boxes[3].exited
	testutil.WaitFor(t, time.Minute, "a write with box 3 off", func() error {
		return a1.call("POST", "/api/v1/projects", map[string]string{"name": "oncology"}, nil, 201)
	})
	a2 := login(boxes[2])
	if err := a2.call("POST", "/api/v1/projects", map[string]string{"name": "pharmacy"}, nil, 201); err != nil {
		t.Fatal(err)
	}

	// Powered on again, box 3 rejoins with its data and sees every write.
	boxes[3] = start(3)
	boxes[3].waitReady(time.Now(), 4*time.Minute)
	if got := boxes[3].caKey(); got != ca {
		t.Errorf("box 3 came back with CA %s, had %s", got, ca)
	}
	a3 = login(boxes[3])
	testutil.WaitFor(t, time.Minute, "box 3 to see every project", func() error {
		var ps []struct{ Name string }
		if err := a3.call("GET", "/api/v1/projects", nil, &ps, 200); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, p := range ps {
			seen[p.Name] = true
		}
		for _, want := range []string{"radiology", "oncology", "pharmacy"} {
			if !seen[want] {
				return fmt.Errorf("no %s in %+v", want, ps)
			}
		}
		return nil
	})
}
