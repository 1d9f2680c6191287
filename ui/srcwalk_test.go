package ui

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// srcFile is one of the module's Go files (tests left out), parsed, with
// the directory of its package as seen from ui/ ("../hypervisor").
type srcFile struct {
	dir string
	f   *ast.File
}

// moduleSource parses the module's Go source for the tests that walk it
// (error formats, codes, keys, audit actions), leaving out tests, test
// data, build caches and VCS directories, and any directory named in skip.
func moduleSource(t *testing.T, skip ...string) (*token.FileSet, []srcFile) {
	t.Helper()
	skip = append(skip, "node_modules", "testdata", "cache", "out", "data", "bin")
	fset := token.NewFileSet()
	var files []srcFile
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && (strings.HasPrefix(d.Name(), ".") || slices.Contains(skip, d.Name())) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		files = append(files, srcFile{filepath.Dir(path), f})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 100 {
		t.Fatalf("found only %d Go files: is the walk reading the module?", len(files))
	}
	return fset, files
}
