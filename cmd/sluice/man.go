package main

import (
	"fmt"
	"io"
	"strings"

	"sluice/version"
)

// manCmd prints the sluice(8) manual page in roff, from the same command
// list as the help, so the two cannot disagree.
func manCmd(args []string, stdout, stderr io.Writer) int {
	esc := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "-", `\-`) }
	fmt.Fprintf(stdout, ".TH SLUICE 8 \"\" \"sluice %s\" \"System Administration\"\n", esc(version.Version))
	fmt.Fprint(stdout, ".SH NAME\nsluice \\- load balancer for TCP, in the spirit of HAProxy\n")
	fmt.Fprint(stdout, ".SH SYNOPSIS\n.B sluice\n.I command\n[\n.I options\n]\n")
	fmt.Fprint(stdout, ".SH DESCRIPTION\nOne static binary that uses every CPU core in one process. \\fBsluice run\\fR starts a master,\n"+
		"whose PID never changes, that owns the listening sockets and runs worker processes on them.\n"+
		"A reload re\\-executes the binary from disk and swaps workers on the same sockets: no connection is refused or reset.\n")
	fmt.Fprint(stdout, ".SH COMMANDS\n")
	for _, c := range commands {
		if c.name == "man" {
			continue
		}
		fmt.Fprintf(stdout, ".TP\n.B sluice %s\n%s.\n", esc(c.usage), esc(c.summary))
	}
	fmt.Fprint(stdout, ".SH FILES\n.TP\n.I /etc/sluice/sluice.hcl, /etc/sluice/conf.d/*.hcl\nConfiguration (HCL).\n"+
		".TP\n.I /run/sluice/control.sock\nThe master's control socket (\\fBsluice reload\\fR, \\fBsluice status\\fR).\n"+
		".TP\n.I /run/sluice/admin.sock\nThe runtime API (\\fBsluice ctl\\fR), when configured.\n")
	fmt.Fprint(stdout, ".SH SIGNALS\n.TP\n.B SIGHUP, SIGUSR2\nReload.\n.TP\n.B SIGTERM\nGraceful stop, bounded by hard_stop_after.\n.TP\n.B SIGINT\nFast stop.\n")
	fmt.Fprint(stdout, ".SH SEE ALSO\n.BR systemctl (1),\n.BR haproxy (1)\n")
	return 0
}
