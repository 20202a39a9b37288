package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one subcommand: it parses its own flags and returns the exit code.
type command struct {
	name, usage, summary string
	run                  func(args []string, stdout, stderr io.Writer) int
}

var commands []command

func init() {
	commands = []command{
		{"run", "run -f PATH [--no-master] [--control SOCK]", "run the load balancer in the foreground (master and workers)", runCmd},
		{"reload", "reload [--control SOCK]", "reload the running master: new binary and configuration", reloadCmd},
		{"status", "status [--control SOCK]", "show the master's generation and workers", statusCmd},
		{"check", "check -f PATH [-f PATH ...]", "check a configuration and exit", checkCmd},
		{"ctl", "ctl [-s SOCK] [COMMAND...]", "send runtime API commands (no command: interactive prompt)", ctlCmd},
		{"net", "net plan|apply|remove -f PATH", "add or remove the source pools' addresses (needs CAP_NET_ADMIN)", netCmd},
		{"man", "man", "print the sluice(8) manual page (roff)", manCmd},
		{"version", "version [-v]", "print the version; -v for build details", versionCmd},
	}
}

func sluiceMain(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(os.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(args[1:], os.Stdout, os.Stderr)
		}
	}
	fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n", args[0])
	usage(os.Stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: sluice COMMAND [OPTIONS]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-32s %s\n", c.usage, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "A -f PATH that is a directory loads its *.hcl files in lexical order.")
}

// pathList is a repeatable -f flag.
type pathList []string

func (p *pathList) String() string     { return strings.Join(*p, ",") }
func (p *pathList) Set(v string) error { *p = append(*p, v); return nil }

// newFlags returns a flag set that prints its usage to stderr.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sluice "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// configFlags adds -f and its long form.
func configFlags(fs *flag.FlagSet) *pathList {
	var paths pathList
	fs.Var(&paths, "f", "configuration file or directory (repeatable)")
	fs.Var(&paths, "config", "same as -f")
	return &paths
}
