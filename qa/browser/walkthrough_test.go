package browser_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairnhq/cairn/qa/cairntest"
	"github.com/cairnhq/cairn/qa/harness"
	"github.com/cairnhq/cairn/qa/testutil"
)

// TestWalkthrough is a hospital branch's IT person's first day with a new
// cluster, in English and then again in Chinese, with a screenshot of
// every step (qa/artifacts/browser/walk-<lang>-NN-<step>.png):
//
//  1. set up the first admin with the code on the box's console (in
//     Chinese: switch the language);
//  2. the dashboard's capacity and N+1 line, against the API's numbers;
//  3. create a VM from the form; every power action asks first, naming
//     the VM, and Force off says what it means;
//  4. a reload after the create stays on the VM's page, without the
//     one-time message;
//  5. a taken name is said next to the field, in the page's language;
//  6. a project and a user made from their pages, the user made a member;
//  7. a bucket and an S3 key from the buckets page, the key then used by
//     minio-go;
//  8. the VM's usage graphs draw.
func TestWalkthrough(t *testing.T) {
	c := cairntest.Start(t, cairntest.Options{N: 3, Setup: true, Extra: []string{"--disk", "disks/d1", "--disk", "disks/d2"},
		NodeExtra: func(n *harness.Node) []string {
			if n.Index == 1 {
				return []string{"--vms=false"} // two boxes run VMs: the test's two cores
			}
			return nil
		}})
	base := "https://" + c.Node(1).IP + ":8443"
	ctx := newBrowser(t, c)
	logConsole(t, ctx)

	// 1. Setup, with the code from node1's console.
	code := cairntest.SetupCode(t, c.Node(1))
	testutil.WaitFor(t, 2*time.Minute, "the first admin made on the setup page", func() error {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(actx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#setup-form, #login-form, #nav-vms"))); err != nil {
			return err
		}
		if n, _ := count(ctx, "#nav-vms"); n == 1 {
			return nil
		}
		if n, _ := count(ctx, "#login-form"); n == 1 {
			// Made by an attempt before whose answer was lost: sign in.
			return chromedp.Do(actx,
				chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
				chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
				chromedp.Click(chromedp.CSS("#login-submit")),
				chromedp.WaitVisible(chromedp.CSS("#nav-vms")))
		}
		if err := chromedp.Do(actx,
			chromedp.SendKeys(chromedp.CSS("#setup-code"), code),
			chromedp.SendKeys(chromedp.CSS("#username"), "admin"),
			chromedp.SendKeys(chromedp.CSS("#password"), cairntest.AdminPassword),
			chromedp.SendKeys(chromedp.CSS("#password2"), cairntest.AdminPassword),
			chromedp.Click(chromedp.CSS("#setup-submit")),
			// The answer: signed in, or the form again with why.
			chromedp.WaitVisible(chromedp.CSS("#nav-vms, #setup-form .flash.error, .flash.error")),
		); err != nil {
			return err
		}
		if n, _ := count(ctx, "#nav-vms"); n != 1 {
			msg, _ := textOf(ctx, ".flash.error")
			return fmt.Errorf("still on the setup page: %q", msg)
		}
		return nil
	})
	screenshot(t, ctx, "walk-en-00-setup")
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

	for _, lang := range []string{"en", "zh-CN"} {
		w := &walk{t: t, ctx: ctx, api: api, base: base, lang: lang, project: pr.ID, image: img.ID}
		w.run()
	}
}

// walk is one language's pass.
type walk struct {
	t              *testing.T
	ctx            context.Context
	api            *cairntest.Client
	base, lang     string
	project, image string
	n              int
	vmPath         string
}

// words are what the checks look for, in each language.
var walkWords = map[string]map[string]string{
	"en": {"n+1": "can lose any one node", "power cord": "pulling the power cord", "taken": "already exists in this project",
		"created": "The VM was created", "holds": "still holds", "VMs": "VMs"},
	"zh-CN": {"n+1": "任意一台节点", "power cord": "拔掉电源线", "taken": "此项目中已有名为", "created": "虚拟机已创建", "holds": "仍有", "VMs": "台虚拟机"},
}

func (w *walk) word(k string) string { return walkWords[w.lang][k] }

// step saves the page as the step's screenshot; in Chinese it also wants
// no English on the page.
func (w *walk) step(name string) {
	w.t.Helper()
	w.n++
	screenshot(w.t, w.ctx, fmt.Sprintf("walk-%s-%02d-%s", w.lang[:2], w.n, name))
	if w.lang == "zh-CN" {
		w.noEnglish(name)
	}
}

// Runs of three English words, and raw error codes, are what a Chinese
// page must not show. Names, addresses and commands are data: the walk's
// names are single words, and commands sit in <code> and <pre>.
var (
	// Words have space between them: a MAC or IPv6 address
	// ("fe80::a8c:eeff:feaf") has hex letters between colons.
	englishRun = regexp.MustCompile(`[A-Za-z][A-Za-z'’]+(?:[,;:]?\s+[A-Za-z][A-Za-z'’]+){2,}`)
	errorCode  = regexp.MustCompile(`\b(invalid_argument|already_exists|not_found|quota_exceeded|precondition_failed|unauthenticated|forbidden|conflict|unavailable)\b`)
	// What the cluster's software, not Cairn, calls itself.
	productNames = []string{"QEMU guest agent"}
)

// noEnglish fails the walk if the page, as the server and its scripts made
// it, says any of its own words in English.
func (w *walk) noEnglish(step string) {
	w.t.Helper()
	text, err := chromedp.Run(w.ctx, chromedp.Evaluate[string](`(() => {
		const b = document.body.cloneNode(true);
		b.querySelectorAll("script, style, code, pre, textarea").forEach(e => e.remove());
		return b.textContent + " " + [...document.querySelectorAll("[title], [placeholder], [aria-label]")]
			.map(e => [e.title, e.placeholder, e.getAttribute("aria-label")].join(" ")).join(" ");
	})()`))
	if err != nil {
		w.t.Fatalf("zh: %s: the page's text: %v", step, err)
	}
	for _, p := range productNames {
		text = strings.ReplaceAll(text, p, " ")
	}
	for _, m := range englishRun.FindAllString(text, -1) {
		w.t.Errorf("zh: %s: the page shows English: %q", step, m)
	}
	for _, m := range errorCode.FindAllString(text, -1) {
		w.t.Errorf("zh: %s: the page shows an error code: %q", step, m)
	}
}

func (w *walk) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		if msg := w.text(".flash.error, .field-error"); msg != "" {
			w.t.Logf("%s: %s: the page says %q", w.lang, what, msg)
		}
		w.step(what + "-failed")
		w.t.Fatalf("%s: %s: %v", w.lang, what, err)
	}
}

// landsOn wants the browser at path, without the one-time message: a
// create lands on what it made, and a reload shows it again, not the form.
func (w *walk) landsOn(path string) {
	w.t.Helper()
	err := testutil.Eventually(10*time.Second, func() error {
		at, err := chromedp.Run(w.ctx, chromedp.Evaluate[string](`location.pathname + location.search`))
		if err != nil || at != path {
			return fmt.Errorf("at %q (%v)", at, err)
		}
		return nil
	})
	if err != nil {
		w.t.Fatalf("%s: after the create the browser is not at %s: %v", w.lang, path, err)
	}
}

func (w *walk) text(sel string) string {
	s, _ := textOf(w.ctx, sel)
	return strings.TrimSpace(s)
}

func (w *walk) run() {
	t, ctx, suffix := w.t, w.ctx, w.lang[:2]
	// 1. The language, for the second pass (the first set up the admin).
	w.do("choose the language", chromedp.Navigate(w.base+"/lang/"+w.lang+"?next=%2Fdashboard"), chromedp.WaitVisible(chromedp.CSS("#capacity")))
	if got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.lang`)); got != w.lang {
		t.Fatalf("the page's language is %q, want %s", got, w.lang)
	}
	w.step("signed-in")

	// 2. The capacity card says what the API says.
	var capa struct {
		VCPUs     int64 `json:"vcpus"`
		UsedVCPUs int64 `json:"used_vcpus"`
		RAMMiB    int64 `json:"ram_mib"`
		NPlusOne  bool  `json:"n_plus_one"`
		Nodes     []struct {
			Node      string `json:"node"`
			DiskBytes uint64 `json:"disk_bytes"`
		} `json:"nodes"`
		Storage struct {
			RawBytes uint64 `json:"raw_bytes"`
		} `json:"storage"`
	}
	if err := w.api.Call("GET", "/api/v1/capacity", nil, 200, &capa); err != nil {
		t.Fatal(err)
	}
	card, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(() => {
		const d = (id, k) => document.getElementById(id).dataset[k];
		return {vcpus: d("capacity-vcpus", "total"), used: d("capacity-vcpus", "used"), ram: d("capacity-ram", "total"), ok: d("headroom", "ok")};
	})()`))
	want := map[string]string{"vcpus": fmt.Sprint(capa.VCPUs), "used": fmt.Sprint(capa.UsedVCPUs), "ram": fmt.Sprint(capa.RAMMiB), "ok": fmt.Sprint(capa.NPlusOne)}
	if err != nil || fmt.Sprint(card) != fmt.Sprint(want) {
		t.Fatalf("%s: the capacity card %v (%v), the API %v", w.lang, card, err, want)
	}
	// Each node's disk space, as the API has it, and adding up to the pool.
	disks, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll("#capacity-nodes tr.capacity-node")]
		.map(r => [r.dataset.node, r.querySelector(".capacity-node-disk").dataset.total]))`))
	var sum uint64
	for _, n := range capa.Nodes {
		sum += n.DiskBytes
		if err != nil || disks[n.Node] != fmt.Sprint(n.DiskBytes) {
			t.Fatalf("%s: %s's disk space on the card %q (%v), in the API %d", w.lang, n.Node, disks[n.Node], err, n.DiskBytes)
		}
	}
	if len(disks) != len(capa.Nodes) || sum != capa.Storage.RawBytes || sum == 0 {
		t.Fatalf("%s: the card's nodes %v, the API's %d nodes' disks add up to %d of the pool's %d", w.lang, disks, len(capa.Nodes), sum, capa.Storage.RawBytes)
	}
	if line := w.text("#headroom"); capa.NPlusOne != strings.Contains(line, w.word("n+1")) {
		t.Fatalf("%s: the N+1 line %q for n_plus_one %v", w.lang, line, capa.NPlusOne)
	}
	w.step("dashboard")

	// 3. A VM from the form.
	name := "ward-" + suffix
	w.do("open the VM form", chromedp.Navigate(w.base+"/vms/new"), chromedp.WaitVisible(chromedp.CSS("#vm-form")))
	fill := func(name string) {
		flavor, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#vm-flavor option")].find(o => o.textContent.startsWith("tiny")).value`))
		if err != nil {
			t.Fatal(err)
		}
		w.do("fill the VM form",
			chromedp.SendKeys(chromedp.CSS("#vm-name"), name),
			chromedp.SetValue(chromedp.CSS("#vm-image"), w.image),
			chromedp.SetValue(chromedp.CSS("#vm-flavor"), flavor))
		if n, _ := count(ctx, "select#vm-project"); n == 1 {
			w.do("choose the project", chromedp.SetValue(chromedp.CSS("#vm-project"), w.project))
		}
	}
	fill(name)
	w.step("vm-form")
	w.do("create the VM", chromedp.Click(chromedp.CSS("#vm-create")), chromedp.WaitVisible(chromedp.CSS("#vm-status")))
	w.vmPath, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname`))
	if !regexp.MustCompile(`^/vms/vm-[0-9a-f]+$`).MatchString(w.vmPath) {
		t.Fatalf("%s: after the create the browser is at %q, not the VM's page", w.lang, w.vmPath)
	}
	testutil.WaitFor(t, 3*time.Minute, name+" running on its page", func() error {
		st, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("vm-status").dataset.state`))
		if err != nil || st != "running" {
			return fmt.Errorf("state %q %v", st, err)
		}
		return nil
	})
	w.step("vm-running")
	// Every power action asks first, naming the VM; Force off says what
	// it means.
	asks, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`Object.fromEntries([...document.querySelectorAll("#vm-actions form[hx-confirm]")]
		.map(f => [f.querySelector("button").dataset.op || "delete", f.getAttribute("hx-confirm")]))`))
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"stop", "force-stop", "reboot", "pause", "delete"} {
		if !strings.Contains(asks[op], name) {
			t.Errorf("%s: %s asks %q, which does not name %s", w.lang, op, asks[op], name)
		}
	}
	if !strings.Contains(asks["force-stop"], w.word("power cord")) {
		t.Errorf("%s: Force off asks %q", w.lang, asks["force-stop"])
	}

	// 4. A reload stays on the VM's page, and the one-time message goes.
	w.do("reload the VM's page", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#vm-status")))
	if at, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.pathname + location.search`)); at != w.vmPath {
		t.Fatalf("%s: the reload went to %q", w.lang, at)
	}
	if flash := w.text(".flash.ok"); strings.Contains(flash, w.word("created")) {
		t.Fatalf("%s: the reload repeated %q", w.lang, flash)
	}
	w.step("vm-reloaded")

	// 5. The same name again: refused next to the name, in the page's
	// language, once.
	w.do("open the VM form again", chromedp.Navigate(w.base+"/vms/new"), chromedp.WaitVisible(chromedp.CSS("#vm-form")))
	fill(name)
	w.do("create it twice", chromedp.Click(chromedp.CSS("#vm-create")), chromedp.WaitVisible(chromedp.CSS("#vm-name-error")))
	if msg := w.text("#vm-name-error"); !strings.Contains(msg, w.word("taken")) || !strings.Contains(msg, name) {
		t.Fatalf("%s: the taken name is refused with %q", w.lang, msg)
	}
	if n, _ := count(ctx, ".flash.error"); n != 0 {
		t.Fatalf("%s: the refusal is said above the form too", w.lang)
	}
	w.step("name-taken")

	// 6. A project and a user, made a member of it.
	project, user := "clinic-"+suffix, "nurse-"+suffix
	w.do("create a project",
		chromedp.Navigate(w.base+"/projects"), chromedp.WaitVisible(chromedp.CSS("#project-form")),
		chromedp.SendKeys(chromedp.CSS("#project-name"), project),
		chromedp.Click(chromedp.CSS("#project-submit")),
		chromedp.WaitVisible(chromedp.CSS("#member-form")))
	w.landsOn("/projects/" + project)
	w.step("project")
	w.do("create a user",
		chromedp.Navigate(w.base+"/users"), chromedp.WaitVisible(chromedp.CSS("#user-form")),
		chromedp.SendKeys(chromedp.CSS("#user-name"), user),
		chromedp.SendKeys(chromedp.CSS("#user-password"), "Ward-handover-2026"),
		chromedp.SendKeys(chromedp.CSS("#user-password2"), "Ward-handover-2026"),
		chromedp.Click(chromedp.CSS("#user-submit")),
		chromedp.WaitVisible(chromedp.CSS("#user-edit-form")))
	w.landsOn("/users/" + user)
	w.step("user")
	w.do("make the user a member",
		chromedp.Navigate(w.base+"/projects/"+project), chromedp.WaitVisible(chromedp.CSS("#member-submit")),
		chromedp.SetValue(chromedp.CSS("#member-user"), user),
		chromedp.Click(chromedp.CSS("#member-submit")),
		chromedp.WaitVisible(chromedp.CSS(`tr.member[data-user="`+user+`"]`)))
	if n, _ := count(ctx, `tr.member[data-user="`+user+`"][data-role="member"]`); n != 1 {
		t.Fatalf("%s: %s is not a member: %q", w.lang, user, w.text(`tr.member[data-user="`+user+`"]`))
	}
	w.step("member")
	// A project that still holds VMs is not deleted; the refusal says what
	// it holds, in the page's language.
	w.do("open a project that holds VMs", chromedp.Navigate(w.base+"/projects/radiology"), chromedp.WaitVisible(chromedp.CSS("#project-delete-submit")))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.confirm = () => true, true`)); err != nil {
		t.Fatal(err)
	}
	w.do("delete it", chromedp.Click(chromedp.CSS("#project-delete-submit")), chromedp.WaitVisible(chromedp.CSS(".flash.error")))
	if msg := w.text(".flash.error"); !strings.Contains(msg, w.word("holds")) || !strings.Contains(msg, w.word("VMs")) {
		t.Fatalf("%s: the refused delete says %q", w.lang, msg)
	}
	w.step("project-refused")

	// 7. A bucket and an S3 key from the buckets page; minio-go uses the
	// key with the certificate the page links.
	bucket := "walk-" + suffix
	w.do("create a bucket",
		chromedp.Navigate(w.base+"/buckets"), chromedp.WaitVisible(chromedp.CSS("#bucket-form")),
		chromedp.SendKeys(chromedp.CSS("#bucket-name"), bucket),
		chromedp.SetValue(chromedp.CSS("#bucket-project"), w.project),
		chromedp.Click(chromedp.CSS("#bucket-submit")),
		chromedp.WaitVisible(chromedp.CSS("#upload-file")))
	w.landsOn("/buckets/" + bucket)
	w.do("create an S3 key",
		chromedp.Navigate(w.base+"/buckets"), chromedp.WaitVisible(chromedp.CSS(`#buckets tr.bucket[data-name="`+bucket+`"]`)),
		chromedp.SetValue(chromedp.CSS("#s3-key-project"), w.project),
		chromedp.Click(chromedp.CSS("#s3-key-submit")),
		chromedp.WaitVisible(chromedp.CSS("#s3-secret-key")))
	w.step("s3-key")
	ak, sk, endpoint := w.text("#s3-access-key"), w.text("#s3-secret-key"), w.text("#s3-endpoint")
	ca, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.getElementById("s3-ca").href).then(r => r.text())`, chromedp.EvalAwaitPromise))
	pool := x509.NewCertPool()
	if err != nil || !pool.AppendCertsFromPEM([]byte(ca)) {
		t.Fatalf("%s: the page's CA: %v", w.lang, err)
	}
	s3c, err := minio.New(strings.TrimPrefix(endpoint, "https://"), &minio.Options{
		Creds: credentials.NewStaticV4(ak, sk, ""), Secure: true, Region: "us-east-1", BucketLookup: minio.BucketLookupPath,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 200<<10)
	_, _ = rand.Read(data)
	sctx := context.Background()
	if _, err := s3c.PutObject(sctx, bucket, "handover.pdf", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("%s: minio-go put with the page's key: %v", w.lang, err)
	}
	o, err := s3c.GetObject(sctx, bucket, "handover.pdf", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	o.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%s: minio-go read back %d bytes of %d (%v)", w.lang, len(got), len(data), err)
	}

	// 8. The VM's usage graphs.
	w.do("back to the VM", chromedp.Navigate(w.base+w.vmPath), chromedp.WaitVisible(chromedp.CSS("#vm-usage")))
	vmUsageInBrowser(t, ctx)
	w.step("usage")
}
