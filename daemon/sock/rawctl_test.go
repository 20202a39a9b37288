package sock

import (
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConnect connects raw non-blocking sockets to IPv4 and IPv6
// listeners: the first call is under way or done, a second says done,
// the server sees the socket's own address, and Shutdown's half-close
// reaches it as the end of the stream. A closed port is refused.
func TestConnect(t *testing.T) {
	for _, tc := range []struct {
		family int
		addr   string
	}{{unix.AF_INET, "127.0.0.1:0"}, {unix.AF_INET6, "[::1]:0"}} {
		ln, err := net.Listen("tcp", tc.addr)
		if err != nil {
			if os.Getenv("CI") == "true" || tc.family == unix.AF_INET {
				t.Fatalf("%s: %v", tc.addr, err)
			}
			t.Skipf("%s: %v (no IPv6 loopback here)", tc.addr, err)
		}
		defer ln.Close()
		ap := ln.Addr().(*net.TCPAddr).AddrPort()
		fd, err := unix.Socket(tc.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := Connect(fd, ap, 0); err != nil && err != unix.EINPROGRESS {
			t.Fatalf("%v: first connect: %v", ap, err)
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(2 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("%v: the listener got no connection: %v", ap, err)
		}
		defer c.Close()
		// Linux answers the first look after the handshake with success,
		// later ones with EISCONN.
		if err := Connect(fd, ap, 0); err != nil && err != unix.EISCONN {
			t.Errorf("%v: second connect: %v, want done", ap, err)
		}
		sa, _ := unix.Getsockname(fd)
		var local netip.AddrPort
		switch sa := sa.(type) {
		case *unix.SockaddrInet4:
			local = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
		case *unix.SockaddrInet6:
			local = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
		}
		if peer := c.RemoteAddr().(*net.TCPAddr).AddrPort(); peer != local {
			t.Errorf("the server sees %v, the socket is %v", peer, local)
		}
		if err := Shutdown(fd, unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("after Shutdown the server read %d, %v; want the end of the stream", n, err)
		}
		if err := Close(fd); err != nil {
			t.Fatal(err)
		}
		if err := Close(fd); err != unix.EBADF {
			t.Errorf("closing twice: %v, want EBADF", err)
		}
	}

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	fd, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	defer Close(fd)
	err := Connect(fd, closed, 0)
	for deadline := time.Now().Add(2 * time.Second); (err == unix.EINPROGRESS || err == unix.EALREADY) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		err = Connect(fd, closed, 0)
	}
	if err != unix.ECONNREFUSED {
		t.Errorf("connect to a closed port: %v, want ECONNREFUSED", err)
	}
}

// TestEpollPoll collects what is ready now and does not wait when nothing
// is.
func TestEpollPoll(t *testing.T) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(ep)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer Close(p[0])
	defer Close(p[1])
	unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p[0], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p[0])})
	events := make([]unix.EpollEvent, 4)
	start := time.Now()
	if n, err := EpollPoll(ep, events); n != 0 || err != nil {
		t.Fatalf("empty set: %d events, %v", n, err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("an empty set took %v", d)
	}
	unix.Write(p[1], []byte("x"))
	if n, err := EpollPoll(ep, events); n != 1 || err != nil || events[0].Fd != int32(p[0]) {
		t.Fatalf("readable pipe: %d events (%+v), %v", n, events[:n], err)
	}
}

// TestSetsockoptInt sets TCP_NODELAY and reads it back.
func TestSetsockoptInt(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	if err := SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		t.Fatal(err)
	}
	if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v != 1 {
		t.Errorf("TCP_NODELAY reads %d, %v", v, err)
	}
}
