package ui

import (
	"fmt"
	"go/ast"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/cairnhq/cairn/consensus"
)

// formatUse is one call that makes a message from an English format.
type formatUse struct {
	pos    string
	format string
}

// errorFormats finds every English format a service's error or audit
// detail is made from: the literal formats passed to consensus.Errorf,
// Reasonf and NewError and to identity's Record, and to any function or
// closure that hands its own format parameter on to them (a package's
// invalid(format, args...)), followed to any depth.
func errorFormats(t *testing.T) []formatUse {
	t.Helper()
	type file = srcFile
	fset, files := moduleSource(t)
	// A formatter is named by its package's directory and its name (a
	// method by "method" and its name). It takes formats as the parameters
	// of its slots, each maybe with a literal prefix ("network %s: "+format).
	type fn struct{ dir, name string }
	type slot struct {
		index  int
		prefix string
	}
	formatters := map[fn][]slot{
		{"../consensus", "Errorf"}: {{1, ""}}, {"../consensus", "Reasonf"}: {{2, ""}}, {"../consensus", "NewError"}: {{1, ""}},
		{"method", "Record"}: {{5, ""}}, // identity.Service's audit detail
	}
	const module = "github.com/cairnhq/cairn/"
	callee := func(fl file, call *ast.CallExpr) fn {
		switch f := call.Fun.(type) {
		case *ast.Ident:
			return fn{fl.dir, f.Name}
		case *ast.SelectorExpr:
			if pkg, ok := f.X.(*ast.Ident); ok {
				for _, im := range fl.f.Imports {
					p, _ := strconv.Unquote(im.Path.Value)
					name := filepath.Base(p)
					if im.Name != nil {
						name = im.Name.Name
					}
					if name == pkg.Name {
						return fn{"../" + strings.TrimPrefix(p, module), f.Sel.Name}
					}
				}
			}
			return fn{"method", f.Sel.Name}
		}
		return fn{}
	}
	// wraps returns the slots through which a function with these
	// parameters and body hands its parameters on as formats.
	wraps := func(params *ast.FieldList, body *ast.BlockStmt, known func(*ast.CallExpr) []slot) []slot {
		names := map[string]int{}
		i := 0
		for _, p := range params.List {
			for _, n := range p.Names {
				names[n.Name] = i
				i++
			}
			if len(p.Names) == 0 {
				i++
			}
		}
		var out []slot
		ast.Inspect(body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			for _, sl := range known(call) {
				if sl.index >= len(call.Args) {
					continue
				}
				arg, prefix := call.Args[sl.index], ""
				if b, ok := arg.(*ast.BinaryExpr); ok && b.Op == token.ADD {
					if p, ok := stringConst(b.X); ok {
						arg, prefix = b.Y, p
					}
				}
				if id, ok := arg.(*ast.Ident); ok {
					if at, ok := names[id.Name]; ok && !slices.ContainsFunc(out, func(s slot) bool { return s.index == at }) {
						out = append(out, slot{at, sl.prefix + prefix})
					}
				}
			}
			return true
		})
		return out
	}
	global := func(fl file) func(*ast.CallExpr) []slot {
		return func(call *ast.CallExpr) []slot { return formatters[callee(fl, call)] }
	}
	for grew := true; grew; {
		grew = false
		for _, fl := range files {
			for _, decl := range fl.f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Recv != nil || fd.Body == nil {
					continue
				}
				self := fn{fl.dir, fd.Name.Name}
				if _, known := formatters[self]; known {
					continue
				}
				if w := wraps(fd.Type.Params, fd.Body, global(fl)); w != nil {
					formatters[self] = w
					grew = true
				}
			}
		}
	}
	var uses []formatUse
	for _, fl := range files {
		for _, decl := range fl.f.Decls {
			var body ast.Node = decl // a package's variables: sentinels made with NewError
			if fd, ok := decl.(*ast.FuncDecl); ok {
				if _, wrapper := formatters[fn{fl.dir, fd.Name.Name}]; fd.Body == nil || wrapper && fd.Recv == nil {
					continue // its formats are its callers'
				}
				body = fd.Body
			}
			// Closures that wrap a formatter (bad := func(format string,
			// args ...any) error {...}) are formatters within this function.
			local := map[string][]slot{}
			// A formatter handed in as a value (bad func(format string,
			// args ...any) error) hides its formats from the walk.
			if fd, ok := decl.(*ast.FuncDecl); ok {
				for _, p := range fd.Type.Params.List {
					if ft, ok := p.Type.(*ast.FuncType); ok && takesFormat(ft) {
						t.Errorf("%s: %s takes a formatter as a value; the walk cannot see the formats it is called with", fset.Position(p.Pos()), fd.Name.Name)
					}
				}
			}
			known := func(call *ast.CallExpr) []slot {
				if id, ok := call.Fun.(*ast.Ident); ok {
					if f, ok := local[id.Name]; ok {
						return f
					}
				}
				return global(fl)(call)
			}
			ast.Inspect(body, func(n ast.Node) bool {
				if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == 1 && len(as.Rhs) == 1 {
					id, ok1 := as.Lhs[0].(*ast.Ident)
					lit, ok2 := as.Rhs[0].(*ast.FuncLit)
					if ok1 && ok2 {
						if w := wraps(lit.Type.Params, lit.Body, known); w != nil {
							local[id.Name] = w
							return false
						}
					}
				}
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				for _, sl := range known(call) {
					if sl.index >= len(call.Args) {
						continue
					}
					pos := fset.Position(call.Pos()).String()
					format, ok := stringConst(call.Args[sl.index])
					if !ok {
						t.Errorf("%s: a message's format is not a literal, so it cannot be translated", pos)
						continue
					}
					if passThrough(sl.prefix+format) && !passThroughOK[pos[strings.Index(pos, "../")+3:strings.LastIndex(pos[:strings.LastIndex(pos, ":")], ":")]] {
						t.Errorf("%s: the format %q only passes on another error's English; make that error a coded one and return it, or quote it in words of this one", pos, format)
					}
					uses = append(uses, formatUse{pos, sl.prefix + format})
				}
				return true
			})
		}
	}
	if len(uses) < 300 {
		t.Fatalf("found only %d formats: is the walk reading the source?", len(uses))
	}
	return uses
}

// takesFormat says whether a function type takes (format string, args
// ...any) and returns an error: an error formatter's.
func takesFormat(ft *ast.FuncType) bool {
	ps := ft.Params.List
	if len(ps) < 2 || ft.Results == nil || len(ft.Results.List) != 1 || fmt.Sprint(ft.Results.List[0].Type) != "error" {
		return false
	}
	last, ok := ps[len(ps)-1].Type.(*ast.Ellipsis)
	str, ok2 := ps[len(ps)-2].Type.(*ast.Ident)
	return ok && ok2 && str.Name == "string" && fmt.Sprint(last.Elt) == "any"
}

// passThrough says whether a format is one parameter and no words of its
// own ("%v"), so a page would show that parameter's English whatever the
// catalogue says. (A list, "%v, %v", is said in the reader's punctuation.)
func passThrough(format string) bool {
	verbs := consensus.FormatVerbs(format)
	return len(verbs) == 1 && strings.Trim(strings.Replace(format, verbs[0], "", 1), " :;,.()") == ""
}

// passThroughOK are the files whose pass-through formats no page shows,
// each with its reason.
var passThroughOK = map[string]bool{
	"consensus/bootstrap.go": true, // a joining node's TLS and signature checks, said to that node's log
	"ui/handlers_routers.go": true, // the UI's own text, already in the reader's language
}

// stringConst returns the value of a string literal, or of literals joined
// with +.
func stringConst(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		a, ok1 := stringConst(e.X)
		b, ok2 := stringConst(e.Y)
		return a + b, ok1 && ok2
	case *ast.ParenExpr:
		return stringConst(e.X)
	}
	return "", false
}

// Every error a service makes from an English format (consensus.Errorf and
// its kin, found in the module's source) has a Chinese text, with one
// parameter for each of the format's verbs; and no Chinese text is left for
// a format no longer used.
func TestEveryErrorFormatIsTranslated(t *testing.T) {
	uses := errorFormats(t)
	if path := os.Getenv("CAIRN_DUMP_FORMATS"); path != "" {
		seen := map[string]bool{}
		var out []string
		for _, u := range uses {
			if !seen[u.format] {
				seen[u.format] = true
				out = append(out, strconv.Quote(u.format)+"\t"+u.pos)
			}
		}
		sort.Strings(out)
		if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	zh := catalogs()[langZH]
	used := map[string]bool{}
	for _, u := range uses {
		used[u.format] = true
		text, ok := zh["fmt."+u.format]
		if !ok {
			t.Errorf("%s: no Chinese text for the error format %q", u.pos, u.format)
			continue
		}
		want := len(consensus.FormatVerbs(u.format))
		if got := len(verb.FindAllString(text, -1)); want != got {
			t.Errorf("%s: the Chinese text for %q has %d parameters, the format %d", u.pos, u.format, got, want)
			continue
		}
		params := make([]string, want)
		for i := range params {
			params[i] = fmt.Sprintf("<%d>", i+1)
		}
		said, _ := formatText(&translator{lang: langZH, msgs: zh}, u.format, params, nil)
		for i, p := range params {
			if !strings.Contains(said, p) {
				t.Errorf("%s: the Chinese text for %q leaves out parameter %d: %q", u.pos, u.format, i+1, said)
			}
		}
		if strings.Contains(said, "%!") {
			t.Errorf("%s: the Chinese text for %q does not format: %q", u.pos, u.format, said)
		}
	}
	for key := range zh {
		if f, ok := strings.CutPrefix(key, "fmt."); ok && !used[f] {
			t.Errorf("zh-CN has a text for the error format %q, which no error uses", f)
		}
	}
}

// Every error code a package declares (a constant Code… = "…", found in the
// module's source) has a label in every language.
func TestEveryErrorCodeIsNamed(t *testing.T) {
	fset, files := moduleSource(t)
	codes := map[string]string{}
	for _, sf := range files {
		for _, decl := range sf.f.Decls {
			g, ok := decl.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
						continue
					}
					if v, ok := stringConst(vs.Values[i]); ok {
						codes[v] = fset.Position(n.Pos()).String()
					}
				}
			}
		}
	}
	if len(codes) < 10 {
		t.Fatalf("found only %d error codes: %v", len(codes), codes)
	}
	for lang, cat := range catalogs() {
		for code, pos := range codes {
			if _, ok := cat["err."+code]; !ok {
				t.Errorf("%s: no label err.%s for the code declared at %s", lang, code, pos)
			}
		}
	}
}
