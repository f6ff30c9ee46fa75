package shoal_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/shoalgrid/shoal/internal/testutil"
)

// snippetImports are the packages a README snippet may use without
// importing them: a snippet is a function body, and the test imports what
// it names.
var snippetImports = map[string]string{
	"context": "context", "errors": "errors", "fmt": "fmt", "log": "log", "net": "net",
	"os": "os", "signal": "os/signal", "strings": "strings", "syscall": "syscall", "time": "time",
	"shoal": "github.com/shoalgrid/shoal", "node": "github.com/shoalgrid/shoal/node",
	"rpc": "github.com/shoalgrid/shoal/rpc", "grid": "github.com/shoalgrid/shoal/grid",
	"cache": "github.com/shoalgrid/shoal/cache",
}

var goBlock = regexp.MustCompile("(?ms)^```go\n(.*?)^```")

// TestREADMEGoBlocksCompile builds every Go block of the README against
// the module, so that what a newcomer copies compiles. A block starting
// with "package" is a whole file; any other block is the body of
// func(ctx context.Context) error, with the imports it names.
func TestREADMEGoBlocksCompile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := goBlock.FindAllSubmatch(readme, -1)
	if len(blocks) < 3 {
		t.Fatalf("found %d Go blocks in the README; the pattern is broken", len(blocks))
	}
	module, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	overlay := map[string]string{}
	var pkgs []string
	for i, b := range blocks {
		src := string(b[1])
		if !strings.HasPrefix(src, "package ") {
			src = wrapSnippet(src)
		}
		file := filepath.Join(dir, fmt.Sprintf("snippet%d.go", i+1))
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		// The overlay puts each snippet in a package of its own inside
		// the module, without writing into the source tree.
		pkg := fmt.Sprintf("internal/readme_snippet%d", i+1)
		overlay[filepath.Join(module, pkg, "main.go")] = file
		pkgs = append(pkgs, "./"+pkg)
	}
	ov, _ := json.Marshal(map[string]any{"Replace": overlay})
	ovFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovFile, ov, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.GoBuild(append([]string{"-overlay", ovFile}, pkgs...)...); err != nil {
		t.Fatalf("a README Go block does not compile (snippetN is the Nth block):\n%s", out)
	}
}

// wrapSnippet makes a function body into a main package.
func wrapSnippet(body string) string {
	var names []string
	for name := range snippetImports {
		if regexp.MustCompile(`\b` + name + `\.`).MatchString(body) {
			names = append(names, name)
		}
	}
	if !slices.Contains(names, "context") {
		names = append(names, "context")
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("package main\n\nimport (\n")
	for _, name := range names {
		fmt.Fprintf(&b, "\t%q\n", snippetImports[name])
	}
	b.WriteString(")\n\nfunc main() { _ = snippet }\n\nfunc snippet(ctx context.Context) error {\n")
	b.WriteString(body)
	b.WriteString("\treturn nil\n}\n")
	return b.String()
}
