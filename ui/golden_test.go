package ui

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/a-h/templ"
	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/hypervisor"
	"github.com/cairnhq/cairn/storage"
	"github.com/cairnhq/cairn/storage/volume"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenView is a view with nothing random in it: a fixed form token, UTC.
func goldenView(lang string, admin bool, nav string) *view {
	v := &view{tr: &translator{lang: lang, msgs: catalogs()[lang]}, csrf: "CSRF-TOKEN", path: "/" + nav, nav: nav, loc: time.UTC}
	if nav != "" {
		v.p = &identity.Principal{User: identity.User{Name: "root", ClusterAdmin: admin}}
	}
	return v
}

var goldenTime = time.Date(2026, 3, 14, 9, 26, 53, 0, time.UTC)

func goldenStatus() consensus.Status {
	return consensus.Status{Self: "node1", Leader: "node1", Voters: 3, GossipHealth: 1, Nodes: []consensus.NodeStatus{
		{Name: "node1", Address: "10.0.0.1:8444", Role: "voter", Gossip: "alive", Leader: true, Healthy: true},
		{Name: "node2", Address: "10.0.0.2:8444", Role: "voter", Gossip: "suspect"},
		{Name: "node3", Address: "10.0.0.3:8444", Role: "nonvoter", Gossip: "alive", Healthy: true},
	}}
}

// TestGoldenPages pins the rendered HTML of the main pages, in both
// languages, so a change to markup the browser tests rely on is deliberate.
// Run with -update to accept a change, then read the diff.
func TestGoldenPages(t *testing.T) {
	q := &identity.Quota{Limits: identity.DefaultQuota, Usage: identity.Resources{Instances: 2, VCPUs: 4, RAMMiB: 8192, DiskGiB: 40}, Version: 7}
	q.Limits.FloatingIPs = identity.Unlimited
	project := projectData{
		Project:   identity.Project{Name: "radiology", Description: "PACS & viewers <b>"},
		Members:   []identity.MemberView{{UserName: "nurse1", Role: identity.RoleMember}, {UserName: "dr-wang", Role: identity.RoleAdmin}},
		Quota:     (&server{}).quotaRows(q), // no services: only the used compute rows show
		QuotaVer:  q.Version,
		Users:     []identity.User{{Name: "dr-wang", DisplayName: "Wang Wei"}, {Name: "nurse1"}},
		CanManage: true,
		Member:    memberForm{Role: "member"},
	}
	flavors := []identity.Flavor{{Name: "m1.small", VCPUs: 1, RAMMiB: 2048, DiskGiB: 20}, {Name: "m1.large", VCPUs: 4, RAMMiB: 8192, DiskGiB: 80},
		{Name: "scratch", VCPUs: 2, RAMMiB: 2048, DiskGiB: 10, LocalDisk: true}}
	audit := auditData{Action: "project.", Entries: []identity.AuditEntry{
		{Time: goldenTime, UserName: "root", Action: "project.create", Resource: "radiology", Result: "success", RemoteAddr: "10.0.0.9:51234", Node: "node1"},
		{Time: goldenTime, UserName: "nurse1", Action: "project.create", Resource: "mine", Result: "forbidden", Message: "not allowed to create projects", Format: "not allowed to create projects", Node: "node2"},
		{Time: goldenTime, UserName: "nurse1", Action: "vm.console.close", Resource: "pacs-viewer", Result: "success", Message: "serial console, open for 1m5s",
			Format: "serial console, open for %s", Args: []string{"1m5s"}, Node: "node1"},
		{Time: goldenTime, UserName: "nurse1", Action: "auth.login", Resource: "nurse1", Result: "unauthenticated", Count: 3, Node: "node2",
			Message: "wrong user name or password: 3 attempts between 2026-03-14T09:20:00Z and 2026-03-14T09:26:53Z",
			Key:     "login_wrong_n", Args: []string{"3", "2026-03-14T09:20:00Z", "2026-03-14T09:26:53Z"}},
	}}
	withErr := func(v *view, msg string) *view { v.err = msg; return v }
	pool := storageData{
		Disks: []storage.Disk{
			{ID: "node1-a1b2c3", Node: "node1", Path: "/srv/cairn/disk1", State: storage.DiskActive, Health: storage.HealthOK,
				TotalBytes: 500 << 30, FreeBytes: 120 << 30, Version: 12},
			{ID: "node2-d4e5f6", Node: "node2", Path: "/srv/cairn/disk1", State: storage.DiskDraining, Health: storage.HealthFailed,
				Error: "input/output error", TotalBytes: 500 << 30, FreeBytes: 480 << 30, Version: 15, Remaining: 42},
			{ID: "node3-0a0b0c", Node: "node3", Path: "/mnt/new", State: storage.DiskActive, Health: storage.HealthUnknown, Version: 16},
			{ID: "node1-f0f0f0", Node: "node1", Path: "/srv/cairn/disk1-more", State: storage.DiskActive, Health: storage.HealthOK,
				TotalBytes: 500 << 30, FreeBytes: 120 << 30, Version: 17},
		},
		Shared:      map[string][]string{"node1-a1b2c3": {"node1-f0f0f0"}, "node1-f0f0f0": {"node1-a1b2c3"}},
		HasDegraded: true, Degraded: 3, HasStats: true,
		Scrub: storage.RepairStats{LastPass: goldenTime, Checked: 1200, Repaired: 2},
		Heal:  storage.RepairStats{LastPass: goldenTime, Checked: 600, Repaired: 5, Degraded: 3},
		GC:    &storage.GCStats{LastPass: goldenTime, Checked: 1800, Removed: 4, FreedBytes: 3 << 20},
		Nodes: []string{"node1", "node2", "node3"}, Form: diskForm{Node: "node2"},
	}
	healthy := storageData{Disks: pool.Disks[:1], HasDegraded: true, HasStats: true, Nodes: []string{"node1"}, Form: diskForm{Node: "node1"}}
	radiology := identity.Project{ID: "p-1", Name: "radiology"}
	buckets := bucketsData{
		Buckets: []bucketRow{
			{Bucket: storage.Bucket{ID: "scans-2026", ProjectID: "p-1", Objects: 1200, Bytes: 5 << 30, CreatedAt: goldenTime}, ProjectName: "radiology", CanWrite: true},
			{Bucket: storage.Bucket{ID: "empty", ProjectID: "p-1", CreatedAt: goldenTime}, ProjectName: "radiology", CanWrite: true},
			{Bucket: storage.Bucket{ID: "charts", ProjectID: "p-2", CreatedAt: goldenTime}, ProjectName: "icu"},
		},
		Projects: []identity.Project{radiology},
		Form:     bucketForm{Project: "p-1"},
		S3: s3Access{
			Endpoint: "https://192.0.2.10:8447", Projects: []identity.Project{radiology}, Project: "p-1", Bucket: "scans-2026",
			Keys: []s3KeyRow{{S3Credential: identity.S3Credential{ID: "CRNEXAMPLEKEY", ProjectID: "p-1", CreatedAt: goldenTime}, ProjectName: "radiology"}},
			New:  &identity.S3Credential{ID: "CRNEXAMPLEKEY", Secret: "example-secret", ProjectID: "p-1", CreatedAt: goldenTime}, NewIn: "radiology",
		},
	}
	folder := bucketData{
		Bucket: storage.Bucket{ID: "scans-2026", ProjectID: "p-1"}, ProjectName: "radiology", CanWrite: true,
		Prefix: "ct/2026/", Crumbs: crumbs("ct/2026/"),
		Folders: []string{"ct/2026/03/", "ct/2026/报告 <b>/"},
		Objects: []storage.Object{
			{Key: "ct/2026/head.dcm", Size: 307200, Modified: goldenTime},
			{Key: "ct/2026/报告.txt", Size: 12, Modified: goldenTime},
		},
		Next: bucketNext("scans-2026", "ct/2026/", "ct/2026/报告.txt"),
	}

	vms, vm, imgs := goldenCompute()
	vols, volDetached, volAttached := goldenVolumes()
	// The refusals on the volume list, as each language's page says them.
	volsIn := func(v *view) volumesData {
		d := vols
		d.Form.Err = errorText(v.tr, consensus.Errorm(consensus.CodeAlreadyExists, "volume_exists", "a volume or snapshot named %q already exists in this project", "scans"))
		d.SnapForm.Err = errorText(v.tr, consensus.Errorf(consensus.CodeInvalid, "%s is %d GiB: a volume made from it is at least that", "nightly", 2))
		return d
	}
	localVM := vm
	localVM.VM.Spec.BootVolume, localVM.Volumes = "", nil
	localVM.VM.Spec.DataDisks = vms.VMs[1].VM.Spec.DataDisks
	localVM.VM.HA = "unavailable: VM pacs-viewer has local disks on node2, which are lost with it"
	newLocal := goldenNewVM()
	newLocal.VolumesOK, newLocal.Form = false, vmForm{}

	// Usage: a VM busy for twenty minutes, then off for ten, then idle.
	usage := &hypervisor.UsageHistory{VM: vm.VM.Name, Node: "node2", Span: hypervisor.SpanHour, StepSeconds: 10, VCPUs: 2, RAMMiB: 2048}
	for i := range 360 {
		if i >= 120 && i < 180 {
			continue
		}
		p := hypervisor.UsagePoint{At: goldenTime.Add(time.Duration(i-359) * 10 * time.Second), CPU: 5, Memory: 900 << 20, NetIn: 200, NetOut: 100}
		if i < 120 {
			p.CPU, p.DiskRead, p.DiskWrite = 80, 3<<20, 1<<20
		}
		usage.Points = append(usage.Points, p)
	}
	withUsage := func(v *view, d vmData) templ.Component {
		d.Usage = &usageData{VMID: d.VM.ID, Span: usage.Span, Charts: usageCharts(v, usage, goldenTime)}
		return vmPage(v, d)
	}
	vmEN, vmZH := goldenView(langEN, false, "vms"), goldenView(langZH, false, "vms")

	pages := map[string]templ.Component{
		"vms_en":             vmsPage(goldenView(langEN, false, "vms"), vms),
		"vms_zh":             vmsPage(goldenView(langZH, false, "vms"), vms),
		"vm_new_en":          newVMPage(goldenView(langEN, false, "vms"), goldenNewVM()),
		"vm_en":              withUsage(vmEN, vm),
		"vm_zh_tcg":          withUsage(vmZH, tcgVM(vm)),
		"vm_local_zh":        vmPage(goldenView(langZH, false, "vms"), localVM),
		"vm_new_zh_local":    newVMPage(goldenView(langZH, false, "vms"), newLocal),
		"volumes_en":         volumesPage(goldenView(langEN, true, "volumes"), volsIn(goldenView(langEN, true, "volumes"))),
		"volumes_zh":         volumesPage(goldenView(langZH, false, "volumes"), volsIn(goldenView(langZH, false, "volumes"))),
		"volume_en":          volumePage(goldenView(langEN, false, "volumes"), volDetached),
		"volume_zh_attached": volumePage(goldenView(langZH, false, "volumes"), volAttached),
		"vm_zh_error":        vmPage(goldenView(langZH, false, "vms"), vmData{VM: vms.VMs[0].VM, ProjectName: "radiology", CanChange: true}),
		"vm_zh_qemu_stopped": vmPage(goldenView(langZH, false, "vms"), vmData{VM: saidVM(vm.VM, hypervisor.StateError, "QEMU stopped the VM: %s", "io-error"), ProjectName: "radiology", CanChange: true}),
		"vm_zh_waiting":      vmPage(goldenView(langZH, false, "vms"), vmData{VM: saidVM(vm.VM, hypervisor.StateBuilding, "volume %s is being filled from %v", "pacs-viewer-boot", volume.Source{Image: "debian-12"}.Phrase()), ProjectName: "radiology", CanChange: true}),
		"vm_zh_reader":       vmPage(goldenView(langZH, false, "vms"), vmData{VM: readerCopy(vm.VM), ProjectName: "radiology", FlavorName: "m1.small", ImageName: "debian-12", Events: vm.Events}),
		"console_en":         consolePage(goldenView(langEN, false, "vms"), consoleData{VM: vm.VM, Path: "/api/v1/vms/vm-1/vnc?ticket=T"}),
		"console_zh_none":    consolePage(goldenView(langZH, false, "vms"), consoleData{VM: vm.VM, Error: "控制台不可用"}),
		"serial_en":          serialPage(goldenView(langEN, false, "vms"), consoleData{VM: vm.VM, Path: "/api/v1/vms/vm-1/serial?ticket=T"}),
		"images_en":          imagesPage(goldenView(langEN, true, "images"), imgs),
		"images_zh":          imagesPage(goldenView(langZH, false, "images"), imagesData{Images: imgs.Images[:1], Query: "deb", Projects: imgs.Projects[:1]}),
		"login_en":           loginPage(goldenView(langEN, false, ""), "", "/dashboard"),
		"setup_zh":           setupPage(withErr(goldenView(langZH, false, ""), "禁止"), setupForm{Code: "ABCD-EFGH", Username: "root"}),
		"dashboard_en":       dashboardPage(goldenView(langEN, true, "dashboard"), dashboardData{Status: goldenStatus(), HasStatus: true, JoinToken: "join-secret", Capacity: goldenCapacity(false)}),
		"dashboard_zh_n1":    dashboardPage(goldenView(langZH, true, "dashboard"), dashboardData{Status: goldenStatus(), HasStatus: true, Capacity: goldenCapacity(true)}),
		"hosts_en":           hostsPage(goldenView(langEN, true, "hosts"), goldenHosts()),
		"hosts_zh":           hostsPage(goldenView(langZH, true, "hosts"), goldenHosts()),
		"dashboard_zh":       dashboardPage(goldenView(langZH, false, "dashboard"), dashboardData{Status: goldenStatus(), HasStatus: true, Failovers: goldenFailovers()}),
		"projects_en":        projectsPage(goldenView(langEN, true, "projects"), []identity.Project{{Name: "radiology", Description: "PACS", CreatedAt: goldenTime}}, projectForm{}),
		"project_en":         projectPage(goldenView(langEN, true, "projects"), project),
		"project_reader":     projectPage(goldenView(langEN, false, "projects"), projectData{Project: project.Project, Members: project.Members, Quota: project.Quota}),
		"users_en":           usersPage(goldenView(langEN, true, "users"), []identity.User{{Name: "root", ClusterAdmin: true, CreatedAt: goldenTime}}, userForm{}),
		"flavors_zh":         flavorsPage(goldenView(langZH, true, "flavors"), flavors, flavorForm{}),
		"audit_en":           auditPage(goldenView(langEN, true, "audit"), audit),
		"audit_zh":           auditPage(goldenView(langZH, true, "audit"), audit),
		"account_zh":         accountPage(goldenView(langZH, true, "account"), goldenTokens(), identity.DefaultSettings),
		"storage_en":         storagePage(goldenView(langEN, true, "storage"), pool),
		"storage_zh":         storagePage(goldenView(langZH, true, "storage"), healthy),
		"buckets_en":         bucketsPage(goldenView(langEN, false, "buckets"), buckets),
		"bucket_zh":          bucketPage(goldenView(langZH, false, "buckets"), folder),
		"bucket_reader":      bucketPage(goldenView(langEN, false, "buckets"), bucketData{Bucket: folder.Bucket, ProjectName: "radiology"}),
	}
	checkGolden(t, pages)
}

// checkGolden renders each page and compares it with its golden file
// (-update writes them).
func checkGolden(t *testing.T, pages map[string]templ.Component) {
	for name, c := range pages {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := c.Render(context.Background(), &buf); err != nil {
				t.Fatal(err)
			}
			got := readable(buf.String())
			path := filepath.Join("testdata", name+".golden.html")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./ui -run TestGoldenPages -update)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from %s; if the change is intended, rerun with -update and review the diff.\ngot:\n%s", name, path, got)
			}
		})
	}
}

// readable breaks the rendered HTML between tags, so golden diffs show the
// line that changed instead of one enormous line.
func readable(html string) string {
	return strings.ReplaceAll(html, "><", ">\n<") + "\n"
}

func goldenTokens() []tokenRow {
	return []tokenRow{
		{Token: identity.Token{ID: "0123456789abcdef", Kind: identity.TokenSession, Name: "login", CreatedAt: goldenTime, ExpiresAt: goldenTime.Add(12 * time.Hour)}, User: "root", Current: true},
		{Token: identity.Token{ID: "fedcba9876543210", Kind: identity.TokenAPI, Name: "backup-job", CreatedAt: goldenTime, ExpiresAt: goldenTime.Add(90 * 24 * time.Hour)}, User: "nurse1"},
	}
}

// saidVM is vm with a status its node made from a format: an error, or
// (building) what it waits for.
func saidVM(vm hypervisor.VM, state, format string, args ...any) hypervisor.VM {
	var e *consensus.Error
	if state == hypervisor.StateBuilding {
		errors.As(consensus.Errorf("", "waiting: %v", consensus.Errorf("", format, args...)), &e)
		vm.Status = hypervisor.VMStatus{State: state, Pending: e.Message, PendingSaid: e}
		return vm
	}
	errors.As(consensus.Errorf("", format, args...), &e)
	vm.Status = hypervisor.VMStatus{State: state, Error: e.Message, ErrorSaid: e}
	return vm
}
