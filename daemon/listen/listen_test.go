package listen

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// Accepted connections must not have TCP keep-alive on: HAProxy leaves it
// off by default, and noKeepAlive reaches into net's internals, which a Go
// release could change.
func TestNoKeepAlive(t *testing.T) {
	ln, err := Listen("127.0.0.1:0", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	rc, _ := a.SyscallConn()
	on := -1
	rc.Control(func(fd uintptr) { on, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
	if err != nil {
		t.Fatal(err)
	}
	if on != 0 {
		t.Errorf("SO_KEEPALIVE = %d on an accepted connection, want 0", on)
	}
}
