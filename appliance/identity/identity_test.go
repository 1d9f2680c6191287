package identity_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairnhq/cairn/appliance/identity"
	"github.com/cairnhq/cairn/consensus"
	"github.com/cairnhq/cairn/consensus/consensustest"
	"github.com/cairnhq/cairn/qa/testutil"
)

// A test-only command that charges a quota the way compute and storage will.
type chargeCmd struct {
	ProjectID string             `json:"project_id"`
	Delta     identity.Resources `json:"delta"`
}

const msgTestCharge consensus.MessageType = 127

func register(reg *consensus.Registry) {
	identity.Register(reg)
	consensus.Handle(reg, msgTestCharge, "TestCharge", func(tx *consensus.Tx, c *chargeCmd) (any, error) {
		return nil, identity.Charge(tx, c.ProjectID, c.Delta)
	})
}

func setupAdmin(t *testing.T, svc *identity.Service) *identity.Principal {
	t.Helper()
	ctx := context.Background()
	if _, err := svc.Setup(ctx, svc.SetupCode(), "admin", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := svc.Login(ctx, "admin", "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	p, err := svc.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Concurrent charges through all three nodes never exceed the quota: exactly
// the limit's worth succeed and usage ends at the limit.
func TestQuotaHoldsUnderConcurrentCharges(t *testing.T) {
	c := consensustest.Start(t, 3, register)
	svcs := make([]*identity.Service, len(c.Nodes))
	for i, n := range c.Nodes {
		svcs[i] = identity.NewService(n, identity.DefaultConfig())
	}
	admin := setupAdmin(t, svcs[0])
	ctx := context.Background()
	limit := identity.DefaultQuota
	limit.Instances = 7
	pr, err := svcs[1].CreateProject(ctx, admin, identity.ProjectSpec{Name: "ward-a", Quota: &limit})
	if err != nil {
		t.Fatal(err)
	}
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.Nodes[i%3]
			_, err := n.Apply(ctx, msgTestCharge, chargeCmd{ProjectID: pr.ID, Delta: identity.Resources{Instances: 1, VCPUs: 1}}, nil)
			switch {
			case err == nil:
				ok.Add(1)
			case consensus.ErrorCode(err) == consensus.CodeQuotaExceeded:
				refused.Add(1)
			default:
				t.Errorf("charge: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 7 || refused.Load() != 23 {
		t.Fatalf("%d charges succeeded and %d were refused; want 7 and 23", ok.Load(), refused.Load())
	}
	for _, s := range svcs {
		if err := s.Sync(ctx, true); err != nil {
			t.Fatal(err)
		}
		q, err := s.GetQuota(admin, pr.ID)
		if err != nil {
			t.Fatal(err)
		}
		if q.Usage.Instances != 7 || q.Usage.VCPUs != 7 {
			t.Fatalf("usage %+v, want 7 instances and 7 vcpus", q.Usage)
		}
	}
	// A non-empty project cannot be deleted.
	if err := svcs[2].DeleteProject(ctx, admin, pr.ID, 0); consensus.ErrorCode(err) != consensus.CodeConflict {
		t.Fatalf("deleting a project in use: %v", err)
	}
}

// Two setup attempts racing on two nodes create exactly one admin.
func TestFirstAdminRace(t *testing.T) {
	c := consensustest.Start(t, 3, register)
	ctx := context.Background()
	var wins atomic.Int64
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		svc := identity.NewService(n, identity.DefaultConfig())
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := svc.Setup(ctx, svc.SetupCode(), fmt.Sprintf("admin%d", i), "correct horse battery")
			if err == nil {
				wins.Add(1)
			} else if consensus.ErrorCode(err) != consensus.CodeConflict {
				t.Errorf("setup: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d admins created, want exactly 1", wins.Load())
	}
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	if _, err := svc.Setup(ctx, "WRONG-CODE", "x", "correct horse battery"); consensus.ErrorCode(err) != consensus.CodeForbidden {
		t.Fatalf("wrong setup code: %v", err)
	}
}

// Every mutation and every refusal lands in the audit log, and a refused
// command changes nothing.
func TestAuditRecordsSuccessAndRefusal(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	admin := setupAdmin(t, svc)
	ctx := identity.WithRemoteAddr(context.Background(), "192.0.2.7:5555")
	pr, err := svc.CreateProject(ctx, admin, identity.ProjectSpec{Name: "radiology"})
	if err != nil {
		t.Fatal(err)
	}
	desc := "changed"
	if _, err := svc.UpdateProject(ctx, admin, pr.ID, &desc, pr.Version+1000); consensus.ErrorCode(err) != consensus.CodePreconditionFailed {
		t.Fatalf("stale If-Match: %v", err)
	}
	if got, _ := svc.GetProject(admin, pr.ID); got.Description != "" || got.Version != pr.Version {
		t.Fatalf("refused update changed the project: %+v", got)
	}
	if _, err := svc.CreateProject(ctx, admin, identity.ProjectSpec{Name: "bad name!"}); consensus.ErrorCode(err) != consensus.CodeInvalid {
		t.Fatalf("bad name: %v", err)
	}
	es, err := svc.ListAudit(admin, identity.AuditFilter{Action: "project."})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"project.create:invalid_argument", "project.update:precondition_failed", "project.create:success"}
	if len(es) != len(want) {
		t.Fatalf("audit has %d project entries, want %d: %+v", len(es), len(want), es)
	}
	for i, e := range es {
		if got := e.Action + ":" + e.Result; got != want[i] {
			t.Errorf("entry %d: %s, want %s", i, got, want[i])
		}
		if e.UserName != "admin" || e.RemoteAddr != "192.0.2.7:5555" || e.Node != "node1" {
			t.Errorf("entry %d lacks who/where: %+v", i, e)
		}
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := identity.HashPassword("s3cret-pass")
	if err != nil {
		t.Fatal(err)
	}
	if !identity.CheckPassword(h, "s3cret-pass") || identity.CheckPassword(h, "s3cret-pasS") {
		t.Fatal("argon2id hash does not verify correctly")
	}
	if identity.CheckPassword("garbage", "x") {
		t.Fatal("garbage hash verified")
	}
}

// The replicated audit log is trimmed to its retention, while every entry
// stays in the node's archive, once and in order, across an archiver restart.
func TestAuditRetentionAndArchive(t *testing.T) {
	c := consensustest.Start(t, 1, register)
	cfg := identity.DefaultConfig()
	cfg.AuditRetention = 5
	svc := identity.NewService(c.Nodes[0], cfg)
	admin := setupAdmin(t, svc)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.ArchiveAudit(ctx, dir) }()

	for i := range 12 {
		if _, err := svc.CreateProject(context.Background(), admin, identity.ProjectSpec{Name: fmt.Sprintf("p%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := svc.ListAudit(admin, identity.AuditFilter{Limit: 1000})
	total := len(all) // setup, login and the creates
	waitArchived := func(n int) []identity.AuditEntry {
		var lines []identity.AuditEntry
		testutil.WaitFor(t, 5*time.Second, fmt.Sprintf("%d archived entries", n), func() error {
			lines = readArchive(t, dir)
			if len(lines) != n {
				return fmt.Errorf("%d archived", len(lines))
			}
			return nil
		})
		return lines
	}
	waitArchived(total)
	pruned, err := svc.PruneAudit(context.Background())
	if err != nil || pruned != total-5 {
		t.Fatalf("pruned %d (%v), want %d", pruned, err, total-5)
	}
	if left, _ := svc.ListAudit(admin, identity.AuditFilter{Limit: 1000}); len(left) != 5 {
		t.Fatalf("%d entries left in the state, want 5", len(left))
	}
	// Restart the archiver; new entries follow without duplicates.
	cancel()
	<-done
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = svc.ArchiveAudit(ctx, dir) }()
	if _, err := svc.CreateProject(context.Background(), admin, identity.ProjectSpec{Name: "after-restart"}); err != nil {
		t.Fatal(err)
	}
	lines := waitArchived(total + 1)
	for i := 1; i < len(lines); i++ {
		if lines[i].ID <= lines[i-1].ID {
			t.Fatalf("archive out of order or duplicated at line %d: %s after %s", i, lines[i].ID, lines[i-1].ID)
		}
	}
	if lines[len(lines)-1].Resource != "after-restart" {
		t.Fatalf("last archived entry %+v", lines[len(lines)-1])
	}
}

func readArchive(t *testing.T, dir string) []identity.AuditEntry {
	b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		return nil
	}
	var out []identity.AuditEntry
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e identity.AuditEntry
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("bad archive line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// A command newer than the cluster's protocol is refused inside the
// audited envelope too (the envelope itself every node knows), nothing of
// it applied, the refusal audited.
func TestMutateGatesTheInnerCommand(t *testing.T) {
	const msgFuture consensus.MessageType = 126
	applied := atomic.Bool{}
	c := consensustest.Start(t, 1, func(reg *consensus.Registry) {
		register(reg)
		consensus.HandleSince(reg, msgFuture, "TestFuture", consensus.Protocol+1, func(tx *consensus.Tx, c *chargeCmd) (any, error) {
			applied.Store(true)
			return nil, nil
		})
	})
	svc := identity.NewService(c.Nodes[0], identity.DefaultConfig())
	admin := setupAdmin(t, svc)
	err := svc.Mutate(context.Background(), admin, "test.future", "x", "", msgFuture, chargeCmd{}, nil)
	if consensus.ErrorReason(err) != consensus.ReasonProtocol {
		t.Fatalf("a command of a protocol no node speaks: %v", err)
	}
	if applied.Load() {
		t.Fatal("the refused command was applied")
	}
	es, _ := svc.ListAudit(admin, identity.AuditFilter{Action: "test.future"})
	if len(es) != 1 || es[0].Result != consensus.CodeConflict {
		t.Fatalf("audit of the refusal: %+v", es)
	}
}
