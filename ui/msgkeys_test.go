package ui

import (
	"go/ast"
	"strconv"
	"testing"
)

// Every message key a service gives its errors (consensus.Errorm, found in
// the module's source) has a text in every language, with as many
// parameters as the call passes.
func TestEveryMessageKeyIsTranslated(t *testing.T) {
	type use struct {
		pos  string
		args int
	}
	keys := map[string][]use{}
	fset, files := moduleSource(t)
	for _, sf := range files {
		ast.Inspect(sf.f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			name := ""
			if ok {
				name = sel.Sel.Name
			} else if id, ok := call.Fun.(*ast.Ident); ok {
				name = id.Name
			}
			if name != "Errorm" || len(call.Args) < 3 {
				return true
			}
			lit, ok := call.Args[1].(*ast.BasicLit)
			if !ok {
				t.Errorf("%s: Errorm's key is not a literal", fset.Position(call.Pos()))
				return true
			}
			key, _ := strconv.Unquote(lit.Value)
			keys[key] = append(keys[key], use{fset.Position(call.Pos()).String(), len(call.Args) - 3})
			return true
		})
	}
	if len(keys) < 9 {
		t.Fatalf("found only %d message keys: is the walk reading the source? %v", len(keys), keys)
	}
	for lang, cat := range catalogs() {
		for key, uses := range keys {
			text, ok := cat["msg."+key]
			if !ok {
				t.Errorf("%s: no text for msg.%s (used at %s)", lang, key, uses[0].pos)
				continue
			}
			for _, u := range uses {
				if n := len(verb.FindAllString(text, -1)); n != u.args {
					t.Errorf("%s: msg.%s has %d parameters, %s passes %d", lang, key, n, u.pos, u.args)
				}
			}
		}
	}
}
