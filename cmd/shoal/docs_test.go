package main

import (
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// readmeFlags reads the README's flag tables: for each command, the flags
// its table (or, for demo, its sentence) documents and the default given.
func readmeFlags(t *testing.T) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	add := func(cmd, flag, def string) {
		if out[cmd] == nil {
			out[cmd] = map[string]string{}
		}
		out[cmd][flag] = def
	}
	flagName := regexp.MustCompile("`--([a-z-]+)")
	var current []string // the commands the table being read documents
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "`shoal node`:"):
			current = []string{"node"}
		case strings.HasPrefix(line, "`shoal call [flags] FUNC"):
			current = []string{"call", "members", "functions"}
		case strings.HasPrefix(line, "`shoal submit [flags] FUNC` takes the"):
			current = []string{"submit"}
			for _, f := range []string{"seed", "token", "token-file", "insecure", "tls", "tls-ca", "tls-cert", "tls-key"} {
				add("submit", f, "(as for call)")
			}
		case strings.HasPrefix(line, "`shoal bench ["):
			current = []string{"bench"}
		case strings.HasPrefix(line, "`shoal demo`:"):
			current = []string{"demo"}
		case strings.HasPrefix(line, "| `--") && current != nil:
			cells := strings.Split(line, "|")
			for _, m := range flagName.FindAllStringSubmatch(cells[1], -1) {
				cmds := current
				if only := regexp.MustCompile(`\(([a-z, ]+)\)\s*$`).FindStringSubmatch(strings.TrimSpace(cells[1])); only != nil {
					cmds = strings.Split(only[1], ", ")
				}
				for _, c := range cmds {
					add(c, m[1], strings.TrimSpace(cells[2]))
				}
			}
		case strings.HasPrefix(line, "#"):
			current = nil
		}
	}
	return out
}

// TestREADMEFlagTablesMatchTheCommands checks that every flag of every
// command is in the README's tables and every flag there exists, with the
// default the code has where the README gives one as a literal.
func TestREADMEFlagTablesMatchTheCommands(t *testing.T) {
	documented := readmeFlags(t)
	root := newRootCmd(io.Discard, io.Discard)
	for _, name := range []string{"node", "call", "members", "functions", "submit", "bench", "demo"} {
		cmd, _, err := root.Find([]string{name})
		if err != nil || cmd == root {
			t.Fatalf("no command %s", name)
		}
		doc := documented[name]
		if len(doc) == 0 {
			t.Errorf("the README documents no flags of shoal %s", name)
			continue
		}
		var have []string
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if f.Hidden || f.Deprecated != "" {
				return
			}
			have = append(have, f.Name)
			def, ok := doc[f.Name]
			if !ok {
				t.Errorf("shoal %s --%s is not in the README's table", name, f.Name)
				return
			}
			if !defaultsAgree(def, f) {
				t.Errorf("shoal %s --%s: the README's default %q, the code's %q", name, f.Name, def, f.DefValue)
			}
		})
		for flag := range doc {
			if !slices.Contains(have, flag) {
				t.Errorf("the README documents shoal %s --%s, which does not exist", name, flag)
			}
		}
	}
}

// defaultsAgree compares a README default cell with a flag's default. A
// cell in words ("number of CPUs", "64 per slot") is not compared.
func defaultsAgree(cell string, f *pflag.Flag) bool {
	switch cell {
	case "none", "off", "":
		return slices.Contains([]string{"", "false", "0", "[]", "0s"}, f.DefValue)
	case "(as for call)":
		return true
	}
	lit := cell
	if m := regexp.MustCompile("^`([^`]*)`").FindStringSubmatch(cell); m != nil {
		lit = m[1]
		if strings.HasPrefix(lit, "<") {
			return f.DefValue == "" // a placeholder for what the code computes
		}
	} else {
		words := strings.Fields(cell)
		lit = strings.ReplaceAll(words[0], ",", "")
		if _, err := strconv.Atoi(lit); err != nil || (len(words) > 1 && !strings.HasPrefix(words[1], "(")) {
			return true // words, such as "64 per slot"
		}
	}
	if f.Value.Type() == "duration" {
		a, errA := time.ParseDuration(lit)
		b, errB := time.ParseDuration(f.DefValue)
		return errA == nil && errB == nil && a == b
	}
	if f.Value.Type() == "intSlice" || f.Value.Type() == "stringSlice" {
		return "["+lit+"]" == f.DefValue
	}
	return lit == f.DefValue
}

// TestHelpPrintsEachDefaultOnce: a flag whose text names its default must
// not have cobra print another one beside it.
func TestHelpPrintsEachDefaultOnce(t *testing.T) {
	root := newRootCmd(io.Discard, io.Discard)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, line := range strings.Split(c.LocalFlags().FlagUsages(), "\n") {
			if strings.Count(strings.ToLower(line), "default") > 1 {
				t.Errorf("shoal %s: a default printed twice: %q", c.Name(), strings.TrimSpace(line))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
