package ui

import (
	"go/ast"
	"slices"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/storage"
)

// Every action the audit log records (found in the module's source: the
// action of identity's Mutate, Deny and Record and of the audit entries
// built by hand) has a name in every language, and the audit page offers
// it as a filter.
func TestEveryAuditActionIsNamed(t *testing.T) {
	actions := map[string]string{}
	add := func(a, at string) {
		if strings.Contains(a, ".") && !strings.ContainsAny(a, " /%") {
			actions[a] = at
		}
	}
	fset, files := moduleSource(t, "qa", "ui", "cli") // qa, the UI and the CLI record no audit
	for _, sf := range files {
		ast.Inspect(sf.f, func(n ast.Node) bool {
			at := func() string { return fset.Position(n.Pos()).String() }
			switch n := n.(type) {
			case *ast.ValueSpec: // const action = "vm.create"
				for i, name := range n.Names {
					if name.Name == "action" && i < len(n.Values) {
						if s, ok := stringConst(n.Values[i]); ok {
							add(s, at())
						}
					}
				}
			case *ast.AssignStmt: // action := "user.enable"; action = "user.disable"
				for i, l := range n.Lhs {
					if id, ok := l.(*ast.Ident); ok && id.Name == "action" && i < len(n.Rhs) {
						if s, ok := stringConst(n.Rhs[i]); ok {
							add(s, at())
						}
					}
				}
			case *ast.KeyValueExpr: // AuditEntry{Action: "auth.login"}
				if id, ok := n.Key.(*ast.Ident); ok && id.Name == "Action" {
					if s, ok := stringConst(n.Value); ok {
						add(s, at())
					}
				}
			case *ast.CallExpr: // id.Deny(ctx, p, "vm.console", ...)
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if ok && slices.Contains([]string{"Mutate", "Deny", "Record", "deny", "mutate", "auditEntry"}, sel.Sel.Name) && len(n.Args) > 2 {
					if s, ok := stringConst(n.Args[2]); ok {
						add(s, at())
					}
				}
			}
			return true
		})
	}
	// Actions made at run time: "vm." and an operation, "disk." and a state.
	for _, op := range knownOps {
		actions["vm."+op] = "hypervisor's VMOp"
	}
	for _, st := range []string{storage.DiskActive, storage.DiskDraining} {
		actions["disk."+st] = "storage's SetDiskState"
	}
	if len(actions) < 80 {
		t.Fatalf("found only %d audit actions: is the walk reading the source? %v", len(actions), actions)
	}
	offered := auditActions()
	for a, at := range actions {
		for lang, cat := range catalogs() {
			if _, ok := cat["action."+a]; !ok {
				t.Errorf("%s: no name for the audit action %s (recorded at %s)", lang, a, at)
			}
		}
		if !slices.Contains(offered, a) {
			t.Errorf("the audit page does not offer the action %s (recorded at %s)", a, at)
		}
	}
}
