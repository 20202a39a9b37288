package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
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
	c, err := net.DialTimeout("unix", *control, 5*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "sluice %s: cannot reach the master at %s: %v\n", cmd, *control, err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*timeout))
	fmt.Fprintf(c, "%s\n", cmd)
	r := bufio.NewReader(c)
	ok := false
	for i := 0; ; i++ {
		line, err := r.ReadString('\n')
		line = strings.TrimRight(line, "\n")
		if line == "END" {
			break
		}
		if err != nil {
			fmt.Fprintf(stderr, "sluice %s: no answer from the master: %v\n", cmd, err)
			return 1
		}
		if i == 0 {
			ok = strings.HasPrefix(line, "OK")
			if !ok {
				fmt.Fprintln(stderr, strings.TrimPrefix(line, "FAIL "))
				continue
			}
		}
		if ok {
			fmt.Fprintln(stdout, line)
		} else {
			fmt.Fprintln(stderr, line)
		}
	}
	if !ok {
		return 1
	}
	return 0
}
