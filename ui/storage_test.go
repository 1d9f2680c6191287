package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/qa/testutil"
	"github.com/cairnhq/cairn/storage"
)

// waitDisks waits until the pool has n disks reported healthy with space.
func (e *env) waitDisks(n int) {
	e.t.Helper()
	root := adminPrincipal(e.t, e)
	testutil.WaitFor(e.t, 15*time.Second, fmt.Sprintf("%d healthy disks", n), func() error {
		ds, err := e.storage.ListDisks(root)
		if err != nil {
			return err
		}
		ok := 0
		for _, d := range ds {
			if d.Health == storage.HealthOK && d.FreeBytes > 0 {
				ok++
			}
		}
		if ok != n {
			return fmt.Errorf("%d of %d disks healthy: %+v", ok, len(ds), ds)
		}
		return nil
	})
}

// upload sends body as the raw request body, as static/upload.js does.
func (b *browser) upload(path string, body []byte, headers ...string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.base.String()+path, bytes.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return b.noFollow().do(req)
}

func TestStoragePageShowsDisksAndManagesThem(t *testing.T) {
	e := newStorageEnv(t)
	e.admin("root", "correct horse")
	e.waitDisks(2)
	b := e.browser()
	b.login("root", "correct horse")

	p := b.get("/storage")
	if p.status != http.StatusOK {
		t.Fatalf("/storage: %d\n%s", p.status, p.body)
	}
	mustContain(t, p,
		`id="nav-storage" href="/storage" class="active"`,
		`id="disks"`,
		`id="degraded" class="ok">0<`,
		`id="scrub-checked">0<`,
		`hx-get="/storage/panel" hx-trigger="every 5s"`,
		`id="disk-form"`,
		`<option value="node1" selected>node1</option>`,
	)
	for _, dir := range e.disks {
		id := storage.DiskID("node1", dir)
		mustContain(t, p, `<tr class="disk" data-id="`+id+`" data-node="node1" data-state="active" data-health="ok">`, `<code>`+dir+`</code>`)
	}
	if n := strings.Count(p.body, `<tr class="disk"`); n != 2 {
		t.Fatalf("%d disk rows, want 2", n)
	}
	mustContain(t, p, `<meter class="usage"`, `data-do="state:draining"`)
	mustNotContain(t, p, `data-do="remove:"`) // only a draining disk can be removed

	// The htmx refresh gets the panel alone.
	p = b.get("/storage/panel")
	if p.status != http.StatusOK || strings.Contains(p.body, "<html") || !strings.HasPrefix(p.body, `<section id="storage"`) {
		t.Fatalf("fragment: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, `id="degraded" class="ok">0<`)

	// Add a third disk, then drain, reactivate, drain and remove it.
	third, err := os.MkdirTemp(filepath.Dir(e.disks[0]), "disk-")
	if err != nil {
		t.Fatal(err)
	}
	p = b.post("/storage/disks", b.formOn("/storage", url.Values{"node": {"node1"}, "path": {"relative/path"}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("relative path: %d", p.status)
	}
	mustContain(t, p, "Invalid input: a disk needs a node and a clean absolute path", `value="relative/path"`)
	p = b.post("/storage/disks", b.formOn("/storage", url.Values{"node": {"node1"}, "path": {third}}))
	if p.status != http.StatusOK || !strings.HasPrefix(p.path, "/storage?") {
		t.Fatalf("add disk: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Disk "+third+" (node1) was added.")
	e.waitDisks(3)
	id := storage.DiskID("node1", third)
	version := func() string {
		d, err := e.storage.GetDisk(adminPrincipal(t, e), id)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(d.Version)
	}
	act := "/storage/disks/" + id
	p = b.post(act+"/state", b.formOn("/storage", url.Values{"state": {"draining"}, "version": {version()}}))
	if p.status != http.StatusOK {
		t.Fatalf("drain: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, "is draining.", `data-id="`+id+`" data-node="node1" data-state="draining"`, `action="/storage/disks/`+id+`/remove"`)
	p = b.post(act+"/state", b.formOn("/storage", url.Values{"state": {"active"}, "version": {version()}}))
	mustContain(t, p, "is active again.", `data-id="`+id+`" data-node="node1" data-state="active"`)
	// Removing an active disk is refused by the service, with its reason.
	p = b.post(act+"/remove", b.formOn("/storage", url.Values{"version": {version()}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("remove active disk: %d", p.status)
	}
	mustContain(t, p, "Conflict: disk "+id+" is active; drain it before removing it")
	// A stale version: someone acted on the disk meanwhile.
	stale := version()
	p = b.post(act+"/state", b.formOn("/storage", url.Values{"state": {"draining"}, "version": {version()}}))
	p = b.post(act+"/state", b.formOn("/storage", url.Values{"state": {"active"}, "version": {stale}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("stale version: %d", p.status)
	}
	mustContain(t, p, "Someone changed this disk meanwhile.")
	p = b.post(act+"/remove", b.formOn("/storage", url.Values{"version": {version()}}))
	if p.status != http.StatusOK {
		t.Fatalf("remove: %d\n%s", p.status, p.body)
	}
	mustContain(t, p, "Disk "+third+" (node1) was removed from the pool.")
	mustNotContain(t, p, `data-id="`+id+`"`)

	// All of it is in the audit log, in words.
	p = b.get("/audit?action=disk.")
	mustContain(t, p, `data-action="disk.add"`, `data-action="disk.draining"`, `data-action="disk.remove"`, "Remove disk")
}

func TestStorageIsForClusterAdmins(t *testing.T) {
	e := newStorageEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	if _, err := e.svc.CreateUser(context.Background(), root, identity.UserSpec{Name: "nurse1", Password: "pw-for-nurse-one"}); err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.login("nurse1", "pw-for-nurse-one")

	mustNotContain(t, b.get("/dashboard"), `id="nav-storage"`)
	mustContain(t, b.get("/dashboard"), `id="nav-buckets"`)
	for _, path := range []string{"/storage", "/storage/panel"} {
		p := b.get(path)
		if p.status != http.StatusForbidden {
			t.Fatalf("%s as a non-admin: %d", path, p.status)
		}
		mustContain(t, p, "Not allowed: not allowed to see the disks")
		mustNotContain(t, p, `id="disks"`)
	}
	p := b.post("/storage/disks", b.formOn("/buckets", url.Values{"node": {"node1"}, "path": {"/srv/evil"}}))
	if p.status == http.StatusOK {
		t.Fatalf("a non-admin added a disk: %d", p.status)
	}
	if ds, _ := e.storage.ListDisks(root); len(ds) != 2 {
		t.Fatalf("disks after a refused add: %+v", ds)
	}
	// Without a project there is nowhere to create a bucket.
	mustContain(t, b.get("/buckets"), `id="buckets-empty"`, `id="bucket-no-project"`)
}

func TestBucketUploadBrowseDownloadDelete(t *testing.T) {
	e := newStorageEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	ctx := context.Background()
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse1", Password: "pw-for-nurse-one"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"radiology", "finance"} {
		if _, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.svc.SetMember(ctx, root, "radiology", "nurse1", identity.RoleMember); err != nil {
		t.Fatal(err)
	}
	radiology, err := e.svc.GetProject(root, "radiology")
	if err != nil {
		t.Fatal(err)
	}
	e.waitDisks(2)
	b := e.browser()
	b.login("nurse1", "pw-for-nurse-one")

	// Create a bucket through the form: only radiology is offered.
	p := b.get("/buckets")
	mustContain(t, p, `id="nav-buckets" href="/buckets" class="active"`, `id="bucket-form"`, `id="bucket-name"`,
		`<option value="`+radiology.ID+`" selected>radiology</option>`)
	mustNotContain(t, p, ">finance</option>")
	p = b.post("/buckets", b.formOn("/buckets", url.Values{"name": {"Bad_Name"}, "project": {radiology.ID}}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("bad bucket name: %d", p.status)
	}
	// Said next to the name, as the rule, once.
	mustContain(t, p, `<p class="field-error" id="bucket-name-error" role="alert">A bucket name is 3–63 lowercase letters`, `value="Bad_Name"`,
		`aria-describedby="bucket-name-hint bucket-name-error"`)
	mustNotContain(t, p, "Invalid input")
	p = b.post("/buckets", b.formOn("/buckets", url.Values{"name": {"scans-2026"}, "project": {radiology.ID}}))
	if p.status != http.StatusOK || p.path != "/buckets/scans-2026?created=scans-2026" {
		t.Fatalf("create bucket: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Bucket scans-2026 was created.")
	mustContain(t, b.get("/buckets"), `<tr class="bucket" data-name="scans-2026" data-project="radiology" data-objects="0">`, `action="/buckets/scans-2026/delete"`)
	// A name taken: said once, next to the name.
	p = b.post("/buckets", b.formOn("/buckets", url.Values{"name": {"scans-2026"}, "project": {radiology.ID}}))
	mustContain(t, p, `id="bucket-name-error" role="alert">A bucket named “scans-2026” already exists`)
	if n := strings.Count(p.body, "already exists"); n != 1 {
		t.Fatalf("the taken name is said %d times", n)
	}

	// Upload through the upload endpoint with the form token in a header.
	// The file is larger than any form may be: uploads stream.
	data := make([]byte, 300<<10)
	_, _ = rand.Read(data)
	p = b.get("/buckets/scans-2026")
	mustContain(t, p, `id="upload-form"`, `data-url="/buckets/scans-2026/upload"`, `data-prefix=""`, `id="upload-file"`, `id="upload-submit"`,
		`<progress id="upload-progress"`, `id="objects-empty"`, `src="/static/upload.js"`)
	token := p.csrf(t)
	up := "/buckets/scans-2026/upload?key=" + url.QueryEscape("ct/2026/head.dcm")
	if p := b.upload(up, data, "Content-Type", "application/dicom"); p.status != http.StatusForbidden {
		t.Fatalf("upload without a token: %d", p.status)
	}
	if p := b.upload(up, data, "Content-Type", "application/dicom", "X-CSRF-Token", "AAAA"); p.status != http.StatusForbidden {
		t.Fatalf("upload with a wrong token: %d", p.status)
	}
	p = b.upload(up, data, "Content-Type", "application/dicom", "X-CSRF-Token", token)
	if p.status != http.StatusCreated {
		t.Fatalf("upload: %d\n%s", p.status, p.body)
	}
	if loc := p.header.Get("Location"); loc != "/buckets/scans-2026?prefix=ct%2F2026%2F&uploaded=head.dcm" {
		t.Fatalf("upload answered Location %q", loc)
	}
	mustContain(t, p, "head.dcm was uploaded.")
	// A Chinese file name in a form field's content type that a browser might send.
	report := []byte("报告 text")
	p = b.upload("/buckets/scans-2026/upload?key="+url.QueryEscape("报告.txt"), report,
		"Content-Type", "application/x-www-form-urlencoded", "X-CSRF-Token", token)
	if p.status != http.StatusCreated {
		t.Fatalf("upload 报告.txt: %d\n%s", p.status, p.body)
	}

	// The folder view: ct/ at the top, then 2026/, then the file.
	p = b.get("/buckets/scans-2026")
	mustContain(t, p, `<tr class="folder" data-prefix="ct/">`, `href="/buckets/scans-2026?prefix=ct%2F"`,
		`<tr class="object" data-key="报告.txt" data-size="`+fmt.Sprint(len(report))+`">`)
	mustNotContain(t, p, `data-key="ct/2026/head.dcm"`)
	p = b.get("/buckets/scans-2026?prefix=ct%2F")
	mustContain(t, p, `<tr class="folder" data-prefix="ct/2026/">`, `aria-current="page">ct<`)
	p = b.get("/buckets/scans-2026?prefix=ct%2F2026%2F&uploaded=head.dcm")
	mustContain(t, p, "head.dcm was uploaded.",
		`<tr class="object" data-key="ct/2026/head.dcm" data-size="307200">`,
		`<td class="object-name">head.dcm</td>`, "300 KiB",
		`href="/buckets/scans-2026/download?key=ct%2F2026%2Fhead.dcm"`,
		`href="/buckets/scans-2026?prefix=ct%2F">ct</a>`, `aria-current="page">2026<`,
		`data-prefix="ct/2026/"`)

	// Download returns the same bytes, as a file to save.
	p = b.get("/buckets/scans-2026/download?key=" + url.QueryEscape("ct/2026/head.dcm"))
	if p.status != http.StatusOK || p.body != string(data) {
		t.Fatalf("download: %d, %d bytes, same=%v", p.status, len(p.body), p.body == string(data))
	}
	for k, want := range map[string]string{
		"Content-Type":        "application/dicom",
		"Content-Disposition": `attachment; filename=head.dcm`,
		"Content-Length":      fmt.Sprint(len(data)),
	} {
		if got := p.header.Get(k); got != want {
			t.Errorf("download %s: %q, want %q", k, got, want)
		}
	}
	p = b.get("/buckets/scans-2026/download?key=" + url.QueryEscape("报告.txt"))
	if p.body != string(report) || p.header.Get("Content-Disposition") != `attachment; filename*=utf-8''%E6%8A%A5%E5%91%8A.txt` {
		t.Fatalf("download 报告.txt: %q, %q", p.body, p.header.Get("Content-Disposition"))
	}
	if p := b.get("/buckets/scans-2026/download?key=nope"); p.status != http.StatusNotFound {
		t.Fatalf("download of a missing object: %d", p.status)
	}

	// The scrubber's figures reach the storage page: the scan's two shards
	// (the report, a few bytes, is kept inline and has none).
	if _, err := e.scrubber.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	admin := e.browser()
	admin.login("root", "correct horse")
	mustContain(t, admin.get("/storage"), `id="scrub-checked">2<`, `id="scrub-bad">0<`, `id="degraded" class="ok">0<`)

	// A bucket that is not empty keeps its objects and offers no delete.
	p = b.get("/buckets")
	mustContain(t, p, `data-name="scans-2026" data-project="radiology" data-objects="2"`)
	mustNotContain(t, p, `action="/buckets/scans-2026/delete"`)
	p = b.post("/buckets/scans-2026/delete", b.formOn("/buckets", url.Values{}))
	if p.status != http.StatusUnprocessableEntity {
		t.Fatalf("delete a full bucket: %d", p.status)
	}
	mustContain(t, p, `Conflict: bucket &#34;scans-2026&#34; is not empty`)

	// Delete the objects, then the bucket.
	p = b.post("/buckets/scans-2026/objects/delete", b.formOn("/buckets/scans-2026", url.Values{"key": {"ct/2026/head.dcm"}}))
	if p.status != http.StatusOK || p.path != "/buckets/scans-2026?prefix=ct%2F2026%2F&deleted=head.dcm" {
		t.Fatalf("delete object: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "head.dcm was deleted.", `id="objects-empty"`)
	p = b.post("/buckets/scans-2026/objects/delete", b.formOn("/buckets/scans-2026", url.Values{"key": {"报告.txt"}}))
	if p.status != http.StatusOK {
		t.Fatalf("delete 报告.txt: %d", p.status)
	}
	if _, err := e.objects.Head(ctx, root, "scans-2026", "ct/2026/head.dcm"); consensus.ErrorCode(err) != consensus.CodeNotFound {
		t.Fatalf("object after delete: %v", err)
	}
	p = b.post("/buckets/scans-2026/delete", b.formOn("/buckets", url.Values{}))
	if p.status != http.StatusOK || p.path != "/buckets?deleted=scans-2026" {
		t.Fatalf("delete bucket: %d at %s\n%s", p.status, p.path, p.body)
	}
	mustContain(t, p, "Bucket scans-2026 was deleted.", `id="buckets-empty"`)
	if bs, _ := e.objects.ListBuckets(ctx, root); len(bs) != 0 {
		t.Fatalf("buckets after delete: %+v", bs)
	}
}

func TestBucketsOfOtherProjectsAreHidden(t *testing.T) {
	e := newStorageEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	ctx := context.Background()
	if _, err := e.svc.CreateUser(ctx, root, identity.UserSpec{Name: "nurse1", Password: "pw-for-nurse-one"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"icu", "finance"} {
		if _, err := e.svc.CreateProject(ctx, root, identity.ProjectSpec{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.svc.SetMember(ctx, root, "icu", "nurse1", identity.RoleReader); err != nil {
		t.Fatal(err)
	}
	for bucket, project := range map[string]string{"icu-charts": "icu", "payroll": "finance"} {
		pr, _ := e.svc.GetProject(root, project)
		if _, err := e.objects.CreateBucket(ctx, root, pr.ID, bucket); err != nil {
			t.Fatal(err)
		}
	}
	b := e.browser()
	b.login("nurse1", "pw-for-nurse-one")

	// A reader sees the bucket but cannot write to it, nor create buckets.
	p := b.get("/buckets")
	mustContain(t, p, `data-name="icu-charts" data-project="icu"`, `id="bucket-no-project"`)
	mustNotContain(t, p, "payroll", `id="bucket-form"`, `action="/buckets/icu-charts/delete"`)
	p = b.get("/buckets/icu-charts")
	mustContain(t, p, "In project icu.")
	mustNotContain(t, p, `id="upload-form"`)
	e.waitDisks(2)
	p = b.upload("/buckets/icu-charts/upload?key=a.txt", []byte("hello"), "X-CSRF-Token", p.csrf(t))
	if p.status != http.StatusForbidden || p.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("upload as a reader: %d %q", p.status, p.header.Get("Content-Type"))
	}
	mustContain(t, p, "Not allowed: not allowed to write to bucket")
	// Another project's bucket does not exist, as far as nurse1 can tell.
	if p := b.get("/buckets/payroll"); p.status != http.StatusNotFound {
		t.Fatalf("someone else's bucket: %d", p.status)
	}
	if p := b.get("/buckets/payroll/download?key=x"); p.status != http.StatusNotFound {
		t.Fatalf("download from someone else's bucket: %d", p.status)
	}

	// A script whose session has ended is told where to sign in, not
	// redirected into the login page.
	anon := e.browser()
	p = anon.upload("/buckets/icu-charts/upload?key=a.txt", []byte("hello"), "X-CSRF-Token", "whatever")
	if p.status != http.StatusUnauthorized || p.header.Get("HX-Redirect") != "/login" {
		t.Fatalf("upload without a session: %d, HX-Redirect %q", p.status, p.header.Get("HX-Redirect"))
	}
}

func TestStorageAndBucketsInChinese(t *testing.T) {
	e := newStorageEnv(t)
	e.admin("root", "correct horse")
	root := adminPrincipal(t, e)
	pr, err := e.svc.CreateProject(context.Background(), root, identity.ProjectSpec{Name: "icu"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitDisks(2)
	b := e.browser()
	b.lang = "zh-CN"
	b.login("root", "correct horse")

	p := b.get("/storage")
	mustContain(t, p, `id="nav-storage" href="/storage" class="active" aria-current="page">存储<`, "冗余不足的数据段", "磁盘", "使用中", "正常", "迁出", "添加磁盘")
	p = b.get("/buckets")
	mustContain(t, p, `id="nav-buckets" href="/buckets" class="active" aria-current="page">存储桶<`, "新建存储桶", "创建存储桶", "还没有您可以查看的存储桶。")
	p = b.post("/buckets", b.formOn("/buckets", url.Values{"name": {"x"}, "project": {pr.ID}}))
	mustContain(t, p, `id="bucket-name-error" role="alert">存储桶名称为 3–63 个小写字母`)
	mustNotContain(t, p, "bucket name", "输入无效")
	p = b.post("/buckets", b.formOn("/buckets", url.Values{"name": {"icu-charts"}, "project": {pr.ID}}))
	mustContain(t, p, "已创建存储桶 icu-charts。")
	p = b.get("/buckets/icu-charts")
	mustContain(t, p, "存储桶 icu-charts", "上传文件", "此文件夹为空。", `data-msg-uploading="正在上传 %s…"`,
		`class="button small secondary filepick-button" aria-hidden="true">选择文件…</label>`, `data-none="未选择文件">未选择文件</span>`)
	p = b.get("/buckets")
	mustContain(t, p, "从其他电脑访问存储桶（S3）", "创建访问密钥")
}

func TestStorageUnavailableWithoutStorage(t *testing.T) {
	e := newEnv(t)
	e.admin("root", "correct horse")
	b := e.browser()
	b.login("root", "correct horse")
	for _, path := range []string{"/storage", "/buckets", "/buckets/x"} {
		p := b.get(path)
		if p.status != http.StatusServiceUnavailable {
			t.Fatalf("%s without storage: %d", path, p.status)
		}
		mustContain(t, p, "Storage is not available on this node.")
	}
}
