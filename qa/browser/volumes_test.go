package browser_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
)

// A user creates a VM whose boot disk is a 2 GiB replicated volume, makes a
// data volume on the volumes page, attaches it to the VM, and sees the VM's
// page list both, boot disk first; then snapshots the data volume, makes a
// volume from the snapshot and a clone, and deletes the snapshot. Three real nodes with two disks each
// keep three copies of every volume. No node runs VMs (the test is about
// the pages, and QEMU under TCG would only slow the shared machine down),
// so the VM waits for a node throughout; its volumes are real all the same.
func TestVolumesInBrowser(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2", "--vms=false"}})
	api := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, api, 3, 0)
	cairntest.WaitHealthyDisks(t, api, 6, 0)
	var fl struct{ ID string }
	if err := api.Call("POST", "/api/v1/flavors", map[string]any{"name": "tiny", "vcpus": 1, "ram_mib": 256, "disk_gib": 1}, 201, &fl); err != nil {
		t.Fatal(err)
	}
	pr, err := api.CreateProject("radiology")
	if err != nil {
		t.Fatal(err)
	}
	img := uploadQCOW2(t, api, "disk-image")

	base := "https://" + c.Node(1).IP + ":8443"
	ctx := newBrowser(t, c)
	logConsole(t, ctx)
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
		chromedp.SendKeys(chromedp.CSS("#vm-name"), "pacs-viewer"),
		chromedp.SetValue(chromedp.CSS("#vm-image"), img),
		chromedp.SetValue(chromedp.CSS("#vm-flavor"), fl.ID),
	); err != nil {
		screenshot(t, ctx, "volumes-vm-form-failed")
		t.Fatalf("open the create form: %v", err)
	}
	if n, _ := count(ctx, "select#vm-project"); n == 1 {
		if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#vm-project"), pr.ID)); err != nil {
			t.Fatal(err)
		}
	}
	// The replicated volume is the default choice; its size is 2 GiB.
	checked, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("vm-boot-volume").checked`))
	if err != nil || !checked {
		t.Fatalf("the replicated boot volume is not the default: %v %v", checked, err)
	}
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#vm-boot-size"), "2")); err != nil {
		t.Fatal(err)
	}
	screenshot(t, ctx, "volumes-vm-form")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#vm-create")),
		chromedp.WaitVisible(chromedp.CSS("#vm-status")),
	); err != nil {
		screenshot(t, ctx, "volumes-vm-create-failed")
		t.Fatalf("create the VM: %v", err)
	}
	if kind, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("vm-boot-disk").dataset.kind`)); err != nil || kind != "volume" {
		screenshot(t, ctx, "volumes-vm-create-failed")
		t.Fatalf("boot disk kind %q %v", kind, err)
	}
	waitCount(t, ctx, "the boot volume on the VM's page", `#vm-volumes tr.vm-volume[data-boot="true"]`, 1, 15*time.Second)
	vmID, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#vm-console-link").getAttribute("href").split("/")[2]`))
	if err != nil || !strings.HasPrefix(vmID, "vm-") {
		t.Fatalf("VM ID from the page: %q %v", vmID, err)
	}
	screenshot(t, ctx, "volumes-vm-created")

	// A data volume, made on the volumes page.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-volumes")),
		chromedp.WaitVisible(chromedp.CSS("#volume-form")),
		chromedp.SendKeys(chromedp.CSS("#volume-name"), "scans"),
		chromedp.SendKeys(chromedp.CSS("#volume-size"), "1"),
	); err != nil {
		screenshot(t, ctx, "volumes-form-failed")
		t.Fatalf("open the volumes page: %v", err)
	}
	if n, _ := count(ctx, "select#volume-project"); n == 1 {
		if err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#volume-project"), pr.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#volume-create")),
		chromedp.WaitVisible(chromedp.CSS("#volume-attach-form")),
	); err != nil {
		screenshot(t, ctx, "volumes-create-failed")
		t.Fatalf("create the volume: %v", err)
	}
	red, _ := textOf(ctx, "#volume-redundancy")
	if !strings.Contains(red, "3 copies, all up to date") || !strings.Contains(red, "in_sync") {
		t.Fatalf("redundancy of a new volume on three nodes: %q", red)
	}
	screenshot(t, ctx, "volumes-created")

	// Attach it to the VM. The page still shows the creation's message
	// until htmx swaps in the answer, so what is awaited is the change.
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS("#volume-attach-vm"), vmID),
		chromedp.Click(chromedp.CSS("#volume-attach")),
	); err != nil {
		screenshot(t, ctx, "volumes-attach-failed")
		t.Fatalf("attach the volume: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "the volume used by the VM", func() error {
		used, _ := textOf(ctx, "#volume-attached")
		flash, _ := textOf(ctx, "#flash")
		if !strings.Contains(used, "pacs-viewer") || !strings.Contains(flash, "attached") {
			return fmt.Errorf("used by %q, message %q", used, flash)
		}
		return nil
	})
	// The VM has never run, so detaching is offered; deleting is not.
	waitCount(t, ctx, "the detach button", "#volume-detach", 1, 5*time.Second)
	waitCount(t, ctx, "no delete button", "#volume-delete", 0, 5*time.Second)
	screenshot(t, ctx, "volumes-attached")

	// The VM's page lists both, the boot disk first.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#volume-attached a.volume-vm")),
		chromedp.WaitVisible(chromedp.CSS("#vm-volumes")),
	); err != nil {
		t.Fatalf("open the VM's page: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "both volumes on the VM's page", func() error {
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
			`[...document.querySelectorAll("#vm-volumes tr.vm-volume")].map(r => r.dataset.boot + ":" + r.dataset.name)`))
		if err != nil {
			return err
		}
		if len(rows) != 2 || rows[0] != "true:pacs-viewer-boot" || rows[1] != "false:scans" {
			return fmt.Errorf("volumes listed: %q", rows)
		}
		return nil
	})
	text, _ := textOf(ctx, "#vm-volumes")
	for _, want := range []string{"boot disk", "2 GiB", "1 GiB", "3 copies, all up to date"} {
		if !strings.Contains(text, want) {
			t.Errorf("the VM's volumes do not say %q: %q", want, text)
		}
	}
	screenshot(t, ctx, "volumes-vm-page")

	// What the browser did is real: another node's API sees it.
	var vols []struct {
		Name       string `json:"name"`
		SizeBytes  int64  `json:"size_bytes"`
		Replicas   []struct{ Node string }
		Attachment *struct {
			VM   string `json:"vm"`
			Boot bool   `json:"boot"`
		} `json:"attachment"`
	}
	if err := api.On(c.Node(3)).Call("GET", "/api/v1/volumes", nil, 200, &vols); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range vols {
		if v.Attachment != nil && v.Attachment.VM == vmID {
			got[v.Name] = fmt.Sprintf("%d GiB, %d replicas, boot %v", v.SizeBytes>>30, len(v.Replicas), v.Attachment.Boot)
		}
	}
	if got["pacs-viewer-boot"] != "2 GiB, 3 replicas, boot true" || got["scans"] != "1 GiB, 3 replicas, boot false" {
		t.Fatalf("the VM's volumes in the API: %q", got)
	}

	// Snapshot the data volume on its page, make a volume from the
	// snapshot and a clone of the data volume, then delete the snapshot.
	snapshotsInBrowser(t, ctx, api, base)

	// The list, in Chinese.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-volumes")),
		chromedp.WaitVisible(chromedp.CSS("#volumes")),
		chromedp.Click(chromedp.CSS("#lang-zh")),
	); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "the volume list in Chinese", func() error {
		lang, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.documentElement.lang"))
		txt, _ := textOf(ctx, "#volumes")
		if err != nil || lang != "zh-CN" || !strings.Contains(txt, "启动盘") || !strings.Contains(txt, "3 个副本，全部是最新的") {
			return fmt.Errorf("page language %q (%v), list %q", lang, err, txt)
		}
		return nil
	})
	screenshot(t, ctx, "volumes-zh")
}

// uploadQCOW2 uploads a small blank qcow2 image through the API as a
// public image of project radiology and returns its ID.
func uploadQCOW2(t *testing.T, api *cairntest.Client, name string) string {
	t.Helper()
	qemuImg, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatalf("qemu-img is required (apt-get install qemu-utils): %v", err)
	}
	file := filepath.Join(t.TempDir(), name+".qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", file, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req, _ := http.NewRequest("POST", api.URL("/api/v1/images/upload?name="+name+"&project=radiology&visibility=public"), f)
	req.Header.Set("Authorization", "Bearer "+api.Token())
	hc := *api.HTTP
	hc.Timeout = 2 * time.Minute
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("upload %s: %s", name, res.Status)
	}
	var img struct{ ID string }
	if err := jsonDecode(res, &img); err != nil {
		t.Fatal(err)
	}
	return img.ID
}
