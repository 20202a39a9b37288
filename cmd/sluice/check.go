package main

import (
	"fmt"
	"io"

	"sluice/hcl"
)

func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	paths := configFlags(fs)
	quiet := fs.Bool("q", false, "print nothing when the configuration is valid")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	*paths = append(*paths, fs.Args()...)
	if len(*paths) == 0 {
		fmt.Fprintln(stderr, "sluice check: no configuration given (-f PATH)")
		return 2
	}
	cfg, _, diags := hcl.Load(*paths)
	hcl.WriteDiagnostics(stderr, diags)
	if cfg == nil {
		return 1
	}
	if !*quiet {
		fmt.Fprintf(stdout, "Configuration is valid: %d frontends, %d backends, %d files.\n", len(cfg.Frontends), len(cfg.Backends), len(cfg.Files))
	}
	return 0
}
