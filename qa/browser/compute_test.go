package browser_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/qa/testutil"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// logConsole copies the page's console messages and uncaught exceptions
// to the test log: a module that fails to load says why only there.
func logConsole(t *testing.T, ctx context.Context) {
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			t.Logf("browser console %s: %s", ev.Type, strings.Join(args, " "))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			t.Logf("browser exception at %s:%d: %s", d.URL, d.LineNumber, desc)
		case *cdplog.EventEntryAdded:
			t.Logf("browser log %s: %s %s", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL)
		}
	})
	if err != nil {
		t.Fatalf("listen to the browser: %v", err)
	}
}

// textOf returns the text of the first element matching sel, or "".
func textOf(ctx context.Context, sel string) (string, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{}).textContent||""`, sel)))
}

// waitCount waits until sel matches n elements.
func waitCount(t *testing.T, ctx context.Context, what, sel string, n int, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, func() error {
		got, err := count(ctx, sel)
		if err != nil || got != n {
			return fmt.Errorf("%d elements match %s, want %d (%v)", got, sel, n, err)
		}
		return nil
	})
}

// A user uploads an image through the file input (with its progress bar),
// creates a VM from it with the form, watches the list refresh by itself,
// opens the console (noVNC loads and dials the ticket's WebSocket; with no
// guest behind it the page reports the failure) and deletes the VM. The services are
// real; there are no hosts, so the VM waits for a node throughout.
func TestComputePagesInBrowser(t *testing.T) {
	c := startComputeUI(t)
	var on netnser = noNetns{}
	if c.Bridge != nil {
		on = c.Bridge
	}
	ctx := newBrowser(t, on)
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatalf("qemu-img is required (apt-get install qemu-utils): %v", err)
	}
	file := filepath.Join(t.TempDir(), "cirros test.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", file, "128M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	pr, fl := setupProjectFlavor(t, c)
	logConsole(t, ctx)

	// A wrong password: the name stays, and the cursor waits in the
	// password field.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(c.URL+"/login"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "root"),
		chromedp.SendKeys(chromedp.CSS("#password"), "not the password"),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#error")),
	); err != nil {
		t.Fatalf("a failed login: %v", err)
	}
	if focus, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.activeElement.id + "=" + document.getElementById("username").value`)); err != nil || focus != "password=root" {
		t.Fatalf("after a failed login the focus is on %q (%v)", focus, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.CSS("#password"), c.Password),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nav-images")),
		chromedp.Click(chromedp.CSS("#nav-images")),
		chromedp.WaitVisible(chromedp.CSS("#image-file")),
		chromedp.SetUploadFiles(chromedp.CSS("#image-file"), []string{file}),
	); err != nil {
		screenshot(t, ctx, "images-failed")
		t.Fatalf("open the images page: %v", err)
	}
	// Picking the file fills in a name made of the file's.
	if name, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("image-name").value`)); err != nil || name != "cirros-test" {
		t.Fatalf("image name after picking the file: %q %v", name, err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#image-upload"))); err != nil {
		t.Fatal(err)
	}
	waitCount(t, ctx, "the image in the list", `#images tr.image[data-name="cirros-test"]`, 1, 60*time.Second)
	screenshot(t, ctx, "images")
	// No empty progress bar before an upload; placeholders are not cut off.
	if shown, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`getComputedStyle(document.getElementById("image-progress")).display !== "none"`)); shown {
		t.Error("the images page shows a progress bar before any upload")
	}
	placeholdersFit(t, ctx)

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-vms")),
		chromedp.WaitVisible(chromedp.CSS("#vm-new")),
		chromedp.Click(chromedp.CSS("#vm-new")),
		chromedp.WaitVisible(chromedp.CSS("#vm-form")),
		chromedp.SendKeys(chromedp.CSS("#vm-name"), "web1"),
		chromedp.SetValue(chromedp.CSS("#vm-flavor"), fl),
		chromedp.Click(chromedp.CSS("#vm-create")),
		chromedp.WaitVisible(chromedp.CSS("#vm-state")),
	); err != nil {
		screenshot(t, ctx, "vm-create-failed")
		t.Fatalf("create a VM: %v", err)
	}
	state, _ := textOf(ctx, "#vm-state")
	ips, _ := textOf(ctx, "#vm-ips")
	if !strings.Contains(state, "Waiting for a node") || !strings.HasPrefix(ips, "10.213.") {
		t.Fatalf("new VM: state %q, addresses %q", state, ips)
	}
	screenshot(t, ctx, "vm")

	// Post/redirect/get: the browser is at the new VM's own address, and
	// the message that it was made shows once; a reload does not repeat it.
	vms, err := c.Compute.ListVMs(c.Root, pr)
	if err != nil || len(vms) != 1 {
		t.Fatalf("VMs: %+v %v", vms, err)
	}
	web1 := vms[0].ID
	if loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + location.search`)); err != nil || loc != "/vms/"+web1 {
		t.Fatalf("address after the create: %q %v", loc, err)
	}
	if msg, _ := textOf(ctx, "#flash"); !strings.Contains(msg, "The VM was created") {
		t.Fatalf("message after the create: %q", msg)
	}
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#vm-state"))); err != nil {
		t.Fatal(err)
	}
	if n, err := count(ctx, "#flash"); err != nil || n != 0 {
		t.Fatalf("the message after a reload: %d %v", n, err)
	}
	// Without htmx (a full page load after the redirect), the page takes
	// the message's parameters out of the address itself.
	if err := chromedp.Do(ctx, chromedp.Navigate(c.URL+"/vms/"+web1+"?done=create"), chromedp.WaitVisible(chromedp.CSS("#flash"))); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "the address without the message", func() error {
		loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + location.search`))
		if err != nil || loc != "/vms/"+web1 {
			return fmt.Errorf("address %q %v", loc, err)
		}
		return nil
	})
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#vm-state"))); err != nil {
		t.Fatal(err)
	}
	if n, err := count(ctx, "#flash"); err != nil || n != 0 {
		t.Fatalf("the message after a reload of the full page: %d %v", n, err)
	}

	// Force off asks first, naming the VM and saying what it means; saying
	// no changes nothing, saying yes switches it off.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.asked = []; window.confirm = (q) => { window.asked.push(q); return false }, true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#vm-op-force-stop"))); err != nil {
		t.Fatal(err)
	}
	asked, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.asked`))
	if err != nil || len(asked) != 1 || !strings.Contains(asked[0], "Force off VM web1?") || !strings.Contains(asked[0], "pulling the power cord") {
		t.Fatalf("the question before a force off: %q %v", asked, err)
	}
	time.Sleep(500 * time.Millisecond) // what a request would have taken
	if vm, err := c.Compute.VM(c.Root, web1); err != nil || vm.Desired != hypervisor.DesiredRunning {
		t.Fatalf("after saying no: %+v %v", vm, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.confirm = (q) => { window.asked.push(q); return true }, true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#vm-op-force-stop")), chromedp.WaitVisible(chromedp.CSS("#vm-op-start"))); err != nil {
		screenshot(t, ctx, "vm-force-off-failed")
		t.Fatalf("force off: %v", err)
	}
	if vm, err := c.Compute.VM(c.Root, web1); err != nil || vm.Desired != hypervisor.DesiredStopped {
		t.Fatalf("after saying yes: %+v %v", vm, err)
	}
	if loc, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + location.search`)); err != nil || loc != "/vms/"+web1 {
		t.Fatalf("address after the force off: %q %v", loc, err)
	}

	// The list refreshes by itself: a rename elsewhere shows without a reload.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#nav-vms")), chromedp.WaitVisible(chromedp.CSS(`#vms tr.vm[data-name="web1"]`))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compute.Rename(context.Background(), c.Root, web1, "web2", 0); err != nil {
		t.Fatal(err)
	}
	waitCount(t, ctx, "the renamed VM in the refreshed list", `#vms tr.vm[data-name="web2"]`, 1, 10*time.Second)

	// The console: noVNC's modules load, it dials the ticket's WebSocket,
	// and the page says it could not connect, since no guest is behind the
	// ticket. (noVNC takes its canvas away again on disconnect.)
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#vms tr.vm[data-name="web2"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#vm-console-link")),
		chromedp.Click(chromedp.CSS("#vm-console-link")),
		chromedp.WaitReady(chromedp.CSS("#novnc-screen")),
	); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the console to report the failed connection", func() error {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("console-status").dataset.state`))
		if err != nil || (st != "failed" && st != "disconnected") {
			return fmt.Errorf("console state %q %v", st, err)
		}
		return nil
	})
	if rfb, err := chromedp.Run(ctx, chromedp.Evaluate[string](`typeof window.cairnConsole`)); err != nil || rfb != "object" {
		t.Fatalf("noVNC's RFB object: %q %v", rfb, err)
	}
	screenshot(t, ctx, "console")

	// Delete, confirming the dialog, in Chinese.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#console-back")),
		chromedp.WaitVisible(chromedp.CSS("#vm-op-delete")),
		chromedp.Click(chromedp.CSS("#lang-zh")),
		chromedp.WaitVisible(chromedp.CSS("#vm-op-delete")),
	); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.confirm = () => true, true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#vm-op-delete")), chromedp.WaitVisible(chromedp.CSS("#vms-empty"))); err != nil {
		screenshot(t, ctx, "vm-delete-failed")
		t.Fatalf("delete the VM: %v", err)
	}
	if txt, _ := textOf(ctx, "#nav-vms"); txt != "虚拟机" {
		t.Fatalf("nav entry in Chinese: %q", txt)
	}
	screenshot(t, ctx, "vms-zh")
	if vms, _ := c.Compute.ListVMs(c.Root, ""); len(vms) != 0 {
		t.Fatalf("VMs after delete: %+v", vms)
	}
}
