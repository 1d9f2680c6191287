package browser_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/chromedp/chromedp"
)

// netnser is a harness cluster or bridge: where the browser runs.
type netnser interface{ ClientNetns() (string, error) }

// noNetns keeps the browser in the host's namespace (no root, no bridge).
type noNetns struct{}

func (noNetns) ClientNetns() (string, error) { return "", nil }

// newBrowser starts headless chromium with a fresh profile, in the client
// namespace of the cluster or bridge the test serves its pages on: a
// browser in the host's would abort its requests whenever an address
// changes there (see harness.ClientNetns). The cluster CA is private, so
// certificate errors are ignored: this is a test browser talking only to
// servers inside the test's own namespaces.
func newBrowser(t *testing.T, on netnser) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is required (make test installs Debian's chromium): %v", err)
	}
	ns, err := on.ClientNetns()
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900),
		// Chromium keeps its singleton socket in a directory of its own under
		// TMPDIR and leaves it behind when killed: keep it in the test's.
		chromedp.Env("TMPDIR=" + t.TempDir()),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	}
	if ns != "" {
		nsenter, err := exec.LookPath("nsenter")
		if err != nil {
			t.Fatalf("nsenter is required (util-linux): %v", err)
		}
		// nsenter execs chromium in place: same process, same pipe to
		// DevTools on fds 3 and 4. This replaces chromedp's own process
		// options, so its death signal is set again here: chromium dies
		// with the test binary, however that ends.
		opts = append(opts, chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Path = nsenter
			cmd.Args = append([]string{"nsenter", "--net=/run/netns/" + ns, "--", path}, cmd.Args[1:]...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}))
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 6*time.Minute) // a cap for a hung browser; the VM flows boot guests under TCG
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func artifactDir(t *testing.T) string {
	dir := filepath.Join("..", "artifacts", "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 means PNG
	if err != nil {
		// An artifact, not a check: the assertions around it decide. (Seen
		// once: "Cannot take screenshot with 0 width" mid-swap on a loaded box.)
		t.Logf("screenshot %s: %v", name, err)
		return
	}
	path := filepath.Join(artifactDir(t), name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// count returns how many elements match a CSS selector right now.
func count(ctx context.Context, sel string) (int, error) {
	return chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// A user logs in, sees three healthy nodes, and creates a project and a flavor.
func TestLoginDashboardProjectFlavor(t *testing.T) {
	axeSource(t) // fetched before the cluster, not midway
	c := cairntest.Start(t, cairntest.Options{N: 3})
	api := cairntest.Admin(t, c.Node(1))
	cairntest.WaitShape(t, api, 3, 0)
	base := "https://" + c.Node(2).IP + ":8443"
	ctx := newBrowser(t, c)

	if err := chromedp.Do(ctx,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
		chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
		chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#nodes")),
	); err != nil {
		screenshot(t, ctx, "login-failed")
		t.Fatalf("log in: %v", err)
	}
	testutil.WaitFor(t, 30*time.Second, "three healthy nodes on the dashboard", func() error {
		healthy, err := count(ctx, `#nodes tr.node[data-healthy="true"]`)
		if err != nil {
			return err
		}
		voters, err := count(ctx, `#nodes tr.node[data-role="voter"]`)
		if err != nil {
			return err
		}
		if healthy != 3 || voters != 3 {
			return fmt.Errorf("%d healthy nodes, %d voters", healthy, voters)
		}
		return nil
	})
	screenshot(t, ctx, "dashboard")

	// The capacity card says what the API says: vCPUs and memory in use and
	// in all, every node, and whether the cluster can lose one.
	var capa struct {
		VCPUs      int64 `json:"vcpus"`
		UsedVCPUs  int64 `json:"used_vcpus"`
		RAMMiB     int64 `json:"ram_mib"`
		UsedRAMMiB int64 `json:"used_ram_mib"`
		NPlusOne   bool  `json:"n_plus_one"`
		Nodes      []struct {
			Node string `json:"node"`
		} `json:"nodes"`
	}
	testutil.WaitFor(t, 30*time.Second, "three nodes' capacity", func() error {
		if err := api.Call("GET", "/api/v1/capacity", nil, 200, &capa); err != nil {
			return err
		}
		if len(capa.Nodes) != 3 || capa.VCPUs == 0 || capa.RAMMiB == 0 {
			return fmt.Errorf("capacity %+v", capa)
		}
		return nil
	})
	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#capacity-vcpus"))); err != nil {
		t.Fatal(err)
	}
	card, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const d = (id, k) => document.getElementById(id).dataset[k];
		return {vcpus: d("capacity-vcpus", "total"), usedVCPUs: d("capacity-vcpus", "used"), ram: d("capacity-ram", "total"),
			usedRAM: d("capacity-ram", "used"), ok: d("headroom", "ok"), nodes: String(document.querySelectorAll("#capacity-nodes tr.capacity-node").length)};
	})()`))
	want := map[string]string{"vcpus": fmt.Sprint(capa.VCPUs), "usedVCPUs": fmt.Sprint(capa.UsedVCPUs), "ram": fmt.Sprint(capa.RAMMiB),
		"usedRAM": fmt.Sprint(capa.UsedRAMMiB), "ok": fmt.Sprint(capa.NPlusOne), "nodes": "3"}
	if err != nil || !maps.Equal(card, want) {
		t.Fatalf("the capacity card %v (%v), the API %v", card, err, want)
	}
	if !capa.NPlusOne {
		t.Fatalf("three empty healthy nodes are not N+1: %+v", capa)
	}
	if txt, _ := textOf(ctx, "#headroom"); !strings.Contains(txt, "can lose any one node") {
		t.Fatalf("the N+1 line: %q", txt)
	}
	screenshot(t, ctx, "dashboard-capacity")
	// The English top bar is one row at 1280 px: every item of it, the
	// Administration menu's summary included, at one height.
	spread, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(() => {
		const items = [...document.querySelectorAll("header.topbar .brand, header.topbar nav > a, #nav-admin, header.topbar .tools > *")];
		const mids = items.map(e => { const r = e.getBoundingClientRect(); return (r.top + r.bottom) / 2 });
		return Math.max(...mids) - Math.min(...mids);
	})()`))
	if err != nil || spread > 8 {
		parts, _ := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("header.topbar > *, header.topbar nav > *, header.topbar .tools > *")].map(e => (e.id || e.className || e.tagName) + ": left " + Math.round(e.getBoundingClientRect().left) + ", width " + Math.round(e.getBoundingClientRect().width) + ", top " + Math.round(e.getBoundingClientRect().top))`))
		t.Errorf("the top bar's items are %vpx apart in height (more than one row): %v; its parts: %v", spread, err, parts)
	}

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-projects")),
		chromedp.WaitVisible(chromedp.CSS("#project-form")),
		chromedp.SendKeys(chromedp.CSS("#project-name"), "cardiology"),
		chromedp.SendKeys(chromedp.CSS("#project-description"), "Cardiology ward VMs"),
		chromedp.Click(chromedp.CSS("#project-submit")),
	); err != nil {
		t.Fatalf("create project: %v", err)
	}
	// The create lands on the new project's page; the list has it.
	testutil.WaitFor(t, 15*time.Second, "the new project's page", func() error {
		at, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname`))
		if err != nil || at != "/projects/cardiology" {
			return fmt.Errorf("at %q, %v", at, err)
		}
		return nil
	})
	testutil.WaitFor(t, 15*time.Second, "the project in the list", func() error {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/projects"), chromedp.WaitVisible(chromedp.CSS("#projects"))); err != nil {
			return err
		}
		txt, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#projects")))
		if err != nil || !strings.Contains(txt, "cardiology") {
			return fmt.Errorf("projects table: %q %v", txt, err)
		}
		return nil
	})
	screenshot(t, ctx, "projects")

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-admin")),
		chromedp.Click(chromedp.CSS("#nav-flavors")),
		chromedp.WaitVisible(chromedp.CSS("#flavor-form")),
		chromedp.SendKeys(chromedp.CSS("#flavor-name"), "m1.small"),
		chromedp.SetValue(chromedp.CSS("#flavor-vcpus"), "2"),
		chromedp.SetValue(chromedp.CSS("#flavor-ram"), "2048"),
		chromedp.SetValue(chromedp.CSS("#flavor-disk"), "20"),
		chromedp.Click(chromedp.CSS("#flavor-submit")),
	); err != nil {
		t.Fatalf("create flavor: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "the flavor in the list", func() error {
		txt, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#flavors")))
		if err != nil || !strings.Contains(txt, "m1.small") {
			return fmt.Errorf("flavors table: %q %v", txt, err)
		}
		return nil
	})
	screenshot(t, ctx, "flavors")

	// What the browser did is real: another node's API sees both.
	other := api.On(c.Node(3))
	if err := other.Call("GET", "/api/v1/projects/cardiology?consistent=true", nil, 200, nil); err != nil {
		t.Fatalf("project made in the UI is not in the cluster: %v", err)
	}
	var fl struct {
		VCPUs  int64 `json:"vcpus"`
		RAMMiB int64 `json:"ram_mib"`
	}
	if err := other.Call("GET", "/api/v1/flavors/m1.small", nil, 200, &fl); err != nil || fl.VCPUs != 2 || fl.RAMMiB != 2048 {
		t.Fatalf("flavor made in the UI: %+v %v", fl, err)
	}

	usersInBrowser(t, ctx, other)

	// The main pages pass axe-core's WCAG 2.1 A and AA rules: labels,
	// names, contrast, structure.
	a11yPages(t, ctx, base, []string{"/dashboard", "/projects", "/projects/cardiology", "/vms", "/vms/new", "/volumes",
		"/networks", "/images", "/buckets", "/users", "/users/nurse", "/flavors", "/hosts", "/storage", "/audit", "/account"})

	// The same pages in Chinese.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#lang-zh")), chromedp.WaitVisible(chromedp.CSS("#nav-dashboard"))); err != nil {
		t.Fatalf("switch to Chinese: %v", err)
	}
	lang, err := chromedp.Run(ctx, chromedp.Evaluate[string]("document.documentElement.lang"))
	if err != nil || lang != "zh-CN" {
		t.Fatalf("page language after the switch: %q %v", lang, err)
	}
	screenshot(t, ctx, "flavors-zh")
	a11yPages(t, ctx, base, []string{"/dashboard", "/vms/new", "/users", "/buckets"})
}

// usersInBrowser: the admin creates a user, disables them after a
// confirmation that names them, enables them again, and edits their full
// name on their page; another node's API sees each change.
func usersInBrowser(t *testing.T, ctx context.Context, api *cairntest.Client) {
	t.Helper()
	var user struct {
		DisplayName string `json:"display_name"`
		Disabled    bool   `json:"disabled"`
	}
	seen := func(what string, ok func() bool) {
		t.Helper()
		testutil.WaitFor(t, 15*time.Second, what, func() error {
			user.DisplayName, user.Disabled = "", false // "disabled" is left out when false
			if err := api.Call("GET", "/api/v1/users/nurse?consistent=true", nil, 200, &user); err != nil {
				return err
			}
			if !ok() {
				return fmt.Errorf("the API shows %+v", user)
			}
			return nil
		})
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#nav-admin")),
		chromedp.Click(chromedp.CSS("#nav-users")),
		chromedp.WaitVisible(chromedp.CSS("#user-form")),
		chromedp.SendKeys(chromedp.CSS("#user-name"), "nurse"),
		chromedp.SendKeys(chromedp.CSS("#user-password"), "ward-7-nights"),
		chromedp.SendKeys(chromedp.CSS("#user-password2"), "ward-7-nights"),
		chromedp.Click(chromedp.CSS("#user-submit")),
		chromedp.WaitVisible(chromedp.CSS("#user-edit-form")), // the new user's page
		chromedp.Click(chromedp.CSS("#nav-admin")),
		chromedp.Click(chromedp.CSS("#nav-users")),
		chromedp.WaitVisible(chromedp.CSS(`tr.user[data-name="nurse"][data-disabled="false"]`)),
	); err != nil {
		screenshot(t, ctx, "users-failed")
		t.Fatalf("create a user: %v", err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.confirmed = "", window.confirm = m => (window.confirmed = m, true), true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`tr.user[data-name="nurse"] button[data-do="disable-user"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr.user[data-name="nurse"][data-disabled="true"]`)),
	); err != nil {
		screenshot(t, ctx, "users-disable-failed")
		t.Fatalf("disable the user: %v", err)
	}
	if asked, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`window.confirmed || ""`)); !strings.Contains(asked, "Disable nurse?") {
		t.Errorf("the confirmation asked %q", asked)
	}
	seen("nurse disabled", func() bool { return user.Disabled })
	actionsCellsFillRows(t, ctx)
	screenshot(t, ctx, "users-disabled")
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`tr.user[data-name="nurse"] button[data-do="enable-user"]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr.user[data-name="nurse"][data-disabled="false"]`)),
		chromedp.Click(chromedp.CSS(`tr.user[data-name="nurse"] a[data-do="edit-user"]`)),
		chromedp.WaitVisible(chromedp.CSS("#user-edit-form")),
		chromedp.SetValue(chromedp.CSS("#user-edit-display"), "Wang Fang"),
		chromedp.Click(chromedp.CSS("#user-edit-submit")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	); err != nil {
		screenshot(t, ctx, "user-edit-failed")
		t.Fatalf("enable and edit the user: %v", err)
	}
	seen("nurse enabled, as Wang Fang", func() bool { return !user.Disabled && user.DisplayName == "Wang Fang" })
	screenshot(t, ctx, "user")
}
