package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"sluice/daemon/master"
)

// reloadCmd asks the master to reload and prints the outcome.
func reloadCmd(args []string, stdout, stderr io.Writer) int {
	return controlCmd("reload", args, stdout, stderr)
}

// statusCmd prints the master's generation and workers.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	return controlCmd("status", args, stdout, stderr)
}

func controlCmd(cmd string, args []string, stdout, stderr io.Writer) int {
	fs := newFlags(cmd, stderr)
	control := fs.String("control", defaultControl, "control socket of the master")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for the outcome")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ok, lines, err := master.Ask(*control, cmd, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: %v\n", cmd, err)
		return 1
	}
	out := stdout
	if !ok {
		out = stderr
		if len(lines) > 0 {
			lines[0] = strings.TrimPrefix(lines[0], "FAIL ")
		}
	}
	for _, l := range lines {
		fmt.Fprintln(out, l)
	}
	if !ok {
		return 1
	}
	return 0
}
