package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// defaultAdmin is the admin socket sluice ctl talks to unless told otherwise.
const defaultAdmin = "/run/sluice/admin.sock"

// ctlCmd sends runtime commands without socat; with no command it opens
// an interactive prompt.
func ctlCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ctl", stderr)
	sock := fs.String("s", defaultAdmin, "admin socket: a unix socket path or tcp://IP:port")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	network, addr := "unix", *sock
	if a, ok := strings.CutPrefix(*sock, "tcp://"); ok {
		network, addr = "tcp", a
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "sluice ctl: %v\n", err)
		return 1
	}
	defer c.Close()
	if fs.NArg() > 0 {
		args := fs.Args()
		if last := args[len(args)-1]; strings.HasPrefix(last, "<<") {
			// A payload command ("set config <<"): the payload is stdin,
			// sent up to an end marker, so that it may hold empty lines.
			payload, err := io.ReadAll(os.Stdin)
			if err != nil {
				fmt.Fprintf(stderr, "sluice ctl: reading the payload: %v\n", err)
				return 1
			}
			marker := "SLUICE_PAYLOAD_END"
			args[len(args)-1] = "<<" + marker
			if len(payload) > 0 && payload[len(payload)-1] != '\n' {
				payload = append(payload, '\n')
			}
			fmt.Fprintf(c, "%s\n%s%s\n", strings.Join(args, " "), payload, marker)
		} else {
			fmt.Fprintf(c, "%s\n", strings.Join(args, " "))
		}
		out, _ := io.ReadAll(c)
		stdout.Write(out)
		if failed(string(out)) {
			return 1
		}
		return 0
	}
	fmt.Fprint(c, "prompt\n")
	go func() {
		io.Copy(c, os.Stdin)
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	io.Copy(stdout, c)
	return 0
}

// failed recognises an answer that reports a failure, for the exit code.
func failed(out string) bool {
	for _, p := range []string{"Permission denied", "Unknown command", "set config:", "reload:", "FAIL "} {
		if strings.HasPrefix(out, p) {
			return true
		}
	}
	return false
}
