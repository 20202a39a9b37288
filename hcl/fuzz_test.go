package hcl

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds the loader any file: it must never panic, a refused
// configuration must say why, and every error must point into the file
// (file:line:col), as `sluice check` promises.
func FuzzLoad(f *testing.F) {
	for _, seed := range []string{minimal, "../examples/quickstart.hcl"} {
		if b, err := os.ReadFile(seed); err == nil {
			seed = string(b)
		}
		f.Add(seed)
	}
	f.Add(`backend "b" {
  balance = "leastconn"
  dynamic "server" {
    for_each = ["127.0.0.1:1", "127.0.0.1:2"]
    content { address = server.value }
  }
}`)
	f.Fuzz(func(t *testing.T, text string) {
		path := filepath.Join(t.TempDir(), "fuzz.hcl")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, _, diags := Load([]string{path})
		if cfg == nil && !diags.HasErrors() {
			t.Fatalf("refused without an error: %q", text)
		}
		for _, d := range diags {
			if d.Subject == nil || d.Subject.Filename != path || d.Subject.Start.Line < 1 {
				t.Fatalf("%q: diagnostic %q has no position in the file (%+v)", text, d.Summary, d.Subject)
			}
		}
	})
}
