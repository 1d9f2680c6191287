package browser_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// The typical flow end to end, on three real nodes with real QEMU: a user
// logs in, creates a VM from an image and a flavor, watches it reach
// running with its address, and opens the console, where the guest's
// screen draws. The node serving the UI runs no VMs, so the VM lands on
// another and its console comes through the cluster's relay.
func TestCreateVMAndOpenConsole(t *testing.T) {
	axeSource(t) // fetched before the cluster, not midway
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"},
		NodeExtra: func(n *harness.Node) []string {
			if n.Index == 1 {
				return []string{"--vms=false"}
			}
			return nil
		}})
	api := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, api, 3, 0)
	cairntest.WaitHealthyDisks(t, api, 6, 0)
	if err := api.Call("POST", "/api/v1/flavors", map[string]any{"name": "tiny", "vcpus": 1, "ram_mib": 256, "disk_gib": 1}, 201, nil); err != nil {
		t.Fatal(err)
	}
	pr, err := api.CreateProject("radiology")
	if err != nil {
		t.Fatal(err)
	}
	var img struct{ ID string }
	uploadGuest(t, api, &img)

	base := "https://" + c.Node(1).IP + ":8443"
	ctx := newBrowser(t, c)
	logConsole(t, ctx)
	var flavor string
	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nav-vms")),
		chromedp.Click(chromedp.CSS("#nav-vms")),
		chromedp.WaitVisible(chromedp.CSS("#vm-new")),
		chromedp.Click(chromedp.CSS("#vm-new")),
		chromedp.WaitVisible(chromedp.CSS("#vm-form")),
		chromedp.SendKeys(chromedp.CSS("#vm-name"), "xray-viewer"),
		chromedp.SetValue(chromedp.CSS("#vm-image"), img.ID),
	); err != nil {
		screenshot(t, ctx, "e2e-form-failed")
		t.Fatalf("open the create form: %v", err)
	}
	flavor, err = chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#vm-flavor option")].find(o => o.textContent.startsWith("tiny")).value`))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := count(ctx, "select#vm-project"); n == 1 {
		if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#vm-project"), pr.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#vm-flavor"), flavor),
		chromedp.Click(chromedp.CSS("#vm-create")),
		chromedp.WaitVisible(chromedp.CSS("#vm-status")),
	); err != nil {
		screenshot(t, ctx, "e2e-create-failed")
		t.Fatalf("create the VM: %v", err)
	}
	// The page refreshes itself until the VM runs and shows its address.
	testutil.WaitFor(t, 3*time.Minute, "the VM running with its address on the page", func() error {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("vm-status").dataset.state`))
		if err != nil {
			return err
		}
		ips, _ := textOf(ctx, "#vm-ips")
		if st != "running" || !strings.HasPrefix(strings.TrimSpace(ips), "10.213.") {
			return fmt.Errorf("state %q, addresses %q", st, ips)
		}
		return nil
	})
	screenshot(t, ctx, "e2e-vm-running")
	// The state banner went with the state; the one-time message says only
	// what is still true.
	if n, _ := count(ctx, "#vm-starting"); n != 0 {
		t.Error("a running VM's page still says it is starting")
	}
	if msg, _ := textOf(ctx, ".flash"); strings.Contains(msg, "starts on a node") {
		t.Errorf("a running VM's page says %q", msg)
	}
	if node, _ := textOf(ctx, "#vm-node"); strings.TrimSpace(node) == c.Node(1).Name {
		t.Fatalf("the VM runs on %s, which runs no VMs", node)
	}
	// This machine's guests run by software emulation: the page says so
	// and links to how to switch the hardware on.
	if accel, _ := textOf(ctx, "#vm-accel"); strings.TrimSpace(accel) == "tcg" {
		if msg, _ := textOf(ctx, "#vm-tcg"); !strings.Contains(msg, "Software emulation, much slower") {
			t.Fatalf("a tcg VM's page says %q", msg)
		}
	} else if n, _ := count(ctx, "#vm-tcg"); n != 0 {
		t.Fatalf("a VM with %q warned of software emulation", accel)
	}

	vmUsageInBrowser(t, ctx)

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#vm-console-link")),
		chromedp.WaitReady(chromedp.CSS("#novnc-screen")),
	); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "the console connected", func() error {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("console-status").dataset.state`))
		if err != nil || st != "connected" {
			return fmt.Errorf("console state %q %v", st, err)
		}
		return nil
	})
	// The guest's text console draws: the canvas holds more than one colour.
	testutil.WaitFor(t, 30*time.Second, "the guest's screen on the canvas", func() error {
		colours, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(() => {
			const c = document.querySelector("#novnc-screen canvas");
			if (!c || c.width === 0) return 0;
			const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
			const seen = new Set();
			for (let i = 0; i < d.length && seen.size < 16; i += 4 * 97) seen.add(d[i] << 16 | d[i+1] << 8 | d[i+2]);
			return seen.size;
		})()`))
		if err != nil || colours < 2 {
			return fmt.Errorf("%d colours on the canvas %v", colours, err)
		}
		return nil
	})
	screenshot(t, ctx, "e2e-console")

	// The serial console opens with what the guest printed lately, as the
	// server wrote it into the page before any live output: its last line
	// is in the VM's serial log.
	recent, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.getElementById("console-serial-link").href).then(r => r.text()).then(html =>
		new DOMParser().parseFromString(html, "text/html").getElementById("serial-output").textContent)`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(recent), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	vmPath, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`new URL(document.getElementById("console-serial-link").href).pathname`))
	var log []byte
	req, _ := http.NewRequest("GET", api.URL(strings.TrimSuffix(strings.Replace(vmPath, "/vms/", "/api/v1/vms/", 1), "/serial")+"/serial-log"), nil)
	req.Header.Set("Authorization", "Bearer "+api.Token())
	if res, err := api.HTTP.Do(req); err == nil {
		defer res.Body.Close()
		log, _ = io.ReadAll(res.Body)
	}
	if len(lines) < 3 || last == "" || !strings.Contains(string(log), last) {
		t.Fatalf("the serial console opened with %d lines, the last %q; the VM's serial log (%d bytes) ends %q", len(lines), last, len(log), log[max(0, len(log)-300):])
	}
	t.Logf("the serial console opens with %d lines, the last %q", len(lines), last)
	vmListInBrowser(t, ctx, base)
}

// vmUsageInBrowser: the VM's page draws its usage graphs from its node's
// samples as they come (the panel refreshes itself), a busy booting guest's
// CPU above the floor; the day's span draws too.
func vmUsageInBrowser(t *testing.T, ctx context.Context) {
	t.Helper()
	const drawn = `(() => {
		const out = {};
		for (const id of ["usage-cpu", "usage-memory", "usage-disk", "usage-network"]) {
			const ys = [...document.querySelectorAll("#" + id + " polyline")]
				.flatMap(l => l.getAttribute("points").trim().split(" ").map(p => Number(p.split(",")[1])));
			out[id] = ys.length ? Math.min(...ys) : -1;
		}
		return out;
	})()`
	testutil.WaitFor(t, 90*time.Second, "the usage graphs drawn, with the CPU busy", func() error {
		top, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](drawn))
		if err != nil {
			return err
		}
		// y is 120 at zero: a line above it is use.
		if top["usage-cpu"] < 0 || top["usage-cpu"] >= 120 || top["usage-memory"] < 0 || top["usage-memory"] >= 120 || top["usage-disk"] < 0 || top["usage-network"] < 0 {
			return fmt.Errorf("highest points %v", top)
		}
		return nil
	})
	now, _ := textOf(ctx, "#usage-cpu .chart-now")
	if !strings.Contains(now, "%") {
		t.Fatalf("the CPU graph says %q", now)
	}
	screenshot(t, ctx, "e2e-vm-usage")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#usage-span-day")),
		chromedp.WaitVisible(chromedp.CSS(`#vm-usage[data-span="day"] #usage-cpu polyline`))); err != nil {
		t.Fatalf("the day's graphs: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#usage-span-hour")),
		chromedp.WaitVisible(chromedp.CSS(`#vm-usage[data-span="hour"] #usage-cpu polyline`))); err != nil {
		t.Fatalf("back to the hour's graphs: %v", err)
	}
}

// vmListInBrowser: the VM list's search narrows the rows as one types; a
// ticked row stays ticked through the list's refreshes; the bulk Shut down
// asks once, naming the VM, and shuts it down.
// tickVM ticks a VM's row in the list. A click can miss while the list
// still moves (the search's answer swapped in, the count line appearing),
// so it clicks again, a few times, until the box is ticked; whether the
// tick then lasts through the refreshes is what the test asks.
func tickVM(name string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
		box := `tr.vm[data-name="` + name + `"] input[name="vm"]`
		for range 10 {
			if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(box))); err != nil {
				return chromedp.Void{}, err
			}
			time.Sleep(300 * time.Millisecond)
			ticked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector('`+box+`:checked')`))
			if err != nil {
				return chromedp.Void{}, err
			}
			if ticked {
				return chromedp.Void{}, nil
			}
		}
		return chromedp.Void{}, fmt.Errorf("the box of %s is not ticked after ten clicks", name)
	}
}

func vmListInBrowser(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	steps := []struct {
		what string
		do   chromedp.Action[chromedp.Void]
	}{
		{"open the list", chromedp.Navigate(base + "/vms")},
		{"the VM's row", chromedp.WaitVisible(chromedp.CSS(`tr.vm[data-name="xray-viewer"]`))},
		{"type a search", chromedp.SendKeys(chromedp.CSS("#vm-search"), "no-such-vm")},
		{"no row matches", chromedp.WaitVisible(chromedp.CSS("#vms-none-match"))},
		{"clear the search", func(ctx context.Context, _ *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(e => { e.value = ""; return true })(document.getElementById("vm-search"))`))
			return chromedp.Void{}, err
		}},
		{"type another", chromedp.SendKeys(chromedp.CSS("#vm-search"), "XRAY")},
		{"the VM's row again", chromedp.WaitVisible(chromedp.CSS(`tr.vm[data-name="xray-viewer"]`))},
		{"tick it", tickVM("xray-viewer")},
	}
	for _, st := range steps {
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := chromedp.Do(sctx, st.do)
		cancel()
		if err != nil {
			screenshot(t, ctx, "vm-list-failed")
			t.Fatalf("the VM list: %s: %v", st.what, err)
		}
	}
	// Two refreshes later (every 2 s) it is still ticked, and still found.
	refreshes := func() int {
		n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`performance.getEntriesByType("resource").filter(e => e.name.includes("/vms/list")).length`))
		return n
	}
	before := refreshes()
	time.Sleep(4500 * time.Millisecond)
	if n := refreshes() - before; n < 2 {
		t.Fatalf("the list refreshed %d times in 4.5 s", n)
	}
	if ticked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!document.querySelector('tr.vm[data-name="xray-viewer"] input[name="vm"]:checked')`)); err != nil || !ticked {
		screenshot(t, ctx, "vm-list-unticked")
		reqs, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`performance.getEntriesByType("resource").map(e => e.name).filter(n => n.includes("/vms/list")).slice(-3)`))
		t.Fatalf("the ticked row after the list refreshed: %v %v; the list's last requests: %v", ticked, err, reqs)
	}
	actionsCellsFillRows(t, ctx)
	placeholdersFit(t, ctx)
	screenshot(t, ctx, "vm-list")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`button[data-do="bulk-stop"]`)),
		chromedp.WaitVisible(chromedp.CSS("#bulk-form")),
	); err != nil {
		t.Fatalf("bulk shut down: %v", err)
	}
	if q, _ := textOf(ctx, "#bulk-question"); !strings.Contains(q, "Shut down these VMs (1)?") {
		t.Errorf("the bulk question: %q", q)
	}
	if names, _ := textOf(ctx, "#bulk-vms"); !strings.Contains(names, "xray-viewer") {
		t.Errorf("the bulk question names %q", names)
	}
	screenshot(t, ctx, "vm-bulk-confirm")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#bulk-submit")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	); err != nil {
		t.Fatalf("confirm the bulk shut down: %v", err)
	}
	testutil.WaitFor(t, 2*time.Minute, "the VM stopped", func() error {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('tr.vm[data-name="xray-viewer"]')||{dataset:{}}).dataset.state || ""`))
		if err != nil || st != "stopped" {
			return fmt.Errorf("state %q %v", st, err)
		}
		return nil
	})
	// The list with a VM in it, the VM's page and its serial console pass
	// axe-core's WCAG rules too.
	vmPath, err := chromedp.Run(ctx, chromedp.Evaluate[string](`new URL(document.querySelector('tr.vm[data-name="xray-viewer"] a').href).pathname`))
	if err != nil {
		t.Fatal(err)
	}
	a11yPages(t, ctx, base, []string{"/vms", vmPath, vmPath + "/serial"})

	// In Chinese: headers whole, the chosen size not cut off.
	for _, path := range []string{"/lang/zh-CN?next=/vms/new", "/images", "/vms", vmPath} {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+path), chromedp.WaitReady(chromedp.CSS("#content"))); err != nil {
			t.Fatal(err)
		}
		cjkTextWhole(t, ctx)
	}
	screenshot(t, ctx, "vm-zh")
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/lang/en?next=/vms")); err != nil {
		t.Fatal(err)
	}
	keyboardCreateVM(t, ctx, base)
}

// keyboardCreateVM creates a VM with the keyboard alone: Tab from the top
// of the form to each field, type, choose by typing, Enter on the button.
func keyboardCreateVM(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/vms/new"), chromedp.WaitVisible(chromedp.CSS("#vm-name"))); err != nil {
		t.Fatal(err)
	}
	focused := func() string {
		id, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement ? document.activeElement.id : ""`))
		return id
	}
	tabTo := func(id string) {
		t.Helper()
		for range 80 {
			if focused() == id {
				return
			}
			if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab)); err != nil {
				t.Fatal(err)
			}
		}
		screenshot(t, ctx, "keyboard-failed")
		t.Fatalf("Tab never reached #%s (focus is on #%s)", id, focused())
	}
	for _, step := range []struct{ field, keys string }{
		{"vm-name", "kb-viewer"},
		{"vm-image", "guest"},
		{"vm-flavor", "tiny"},
	} {
		tabTo(step.field)
		if err := chromedp.Do(ctx, chromedp.KeyEvent(step.keys)); err != nil {
			t.Fatal(err)
		}
	}
	if img, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("vm-image").selectedOptions[0].textContent`)); !strings.HasPrefix(strings.TrimSpace(img), "guest") {
		t.Fatalf("typing chose image %q", img)
	}
	if fl, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("vm-flavor").selectedOptions[0].textContent`)); !strings.HasPrefix(strings.TrimSpace(fl), "tiny") {
		t.Fatalf("typing chose size %q", fl)
	}
	tabTo("vm-create")
	if err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.CSS("#vm-status"))); err != nil {
		screenshot(t, ctx, "keyboard-create-failed")
		t.Fatalf("create with Enter: %v", err)
	}
	if title, _ := textOf(ctx, "h1"); !strings.Contains(title, "kb-viewer") {
		t.Fatalf("after Enter the page is %q", title)
	}
	screenshot(t, ctx, "keyboard-created")
}

// uploadGuest uploads the test guest through the API as a public image.
func uploadGuest(t *testing.T, api *cairntest.Client, out *struct{ ID string }) {
	t.Helper()
	f, err := os.Open(harness.GuestImage(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, _ := http.NewRequest("POST", api.URL("/api/v1/images/upload?name=guest&project=radiology&visibility=public"), f)
	req.Header.Set("Authorization", "Bearer "+api.Token())
	hc := *api.HTTP
	hc.Timeout = 2 * time.Minute
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload the guest: %s", res.Status)
	}
	if err := jsonDecode(res, out); err != nil {
		t.Fatal(err)
	}
}

func jsonDecode(res *http.Response, out any) error { return json.NewDecoder(res.Body).Decode(out) }
