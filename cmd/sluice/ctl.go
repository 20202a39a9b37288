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
		fmt.Fprintf(c, "%s\n", strings.Join(fs.Args(), " "))
		out, _ := io.ReadAll(c)
		stdout.Write(out)
		if strings.HasPrefix(string(out), "Permission denied") || strings.HasPrefix(string(out), "Unknown command") {
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
