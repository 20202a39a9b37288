package sock

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAccept4 accepts IPv4 and IPv6 connections and reports each peer's
// address and port as the peer sees its own.
func TestAccept4(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s: %v", network, err)
			}
			t.Skipf("%s: %v (no IPv6 loopback here)", network, err)
		}
		defer ln.Close()
		c, err := net.Dial(network, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, _ := ln.(*net.TCPListener).SyscallConn()
		var fd int
		var peer netip.AddrPort
		// Dial returns once the handshake is done: the connection is
		// already queued, so the non-blocking accept finds it.
		rc.Control(func(lfd uintptr) {
			fd, peer, err = Accept4(int(lfd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		})
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		unix.Close(fd)
		if want := c.LocalAddr().(*net.TCPAddr).AddrPort(); peer != want {
			t.Errorf("%s: peer %v, want %v", network, peer, want)
		}
	}
}
