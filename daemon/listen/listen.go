// Package listen opens listening sockets with the options sluice needs
// (backlog, SO_REUSEPORT, dual-stack wildcard) and returns them as
// *net.TCPListener, whose accepted connections keep the splice path.
package listen

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options tune a listening socket.
type Options struct {
	// Backlog is the accept queue length; zero means as many as the kernel
	// allows (net.core.somaxconn).
	Backlog int
	// ReusePort sets SO_REUSEPORT, for several independent processes on one address.
	ReusePort bool
}

// Listen opens address (host:port; an empty host or "*" means every IPv4
// and IPv6 address).
func Listen(address string, o Options) (*net.TCPListener, error) {
	fd, err := Socket(address, o)
	if err != nil {
		return nil, err
	}
	return FromFD(uintptr(fd), address)
}

// Socket opens address like Listen and returns the bare descriptor
// (non-blocking, close-on-exec), for a master that hands it to workers.
func Socket(address string, o Options) (int, error) {
	host, p, err := net.SplitHostPort(address)
	if err != nil {
		return -1, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return -1, fmt.Errorf("bad port in %q", address)
	}
	var sa unix.Sockaddr
	family, v6only := unix.AF_INET6, true
	switch host {
	case "", "*":
		sa, v6only = &unix.SockaddrInet6{Port: port}, false
	default:
		a, err := netip.ParseAddr(host)
		if err != nil {
			return -1, fmt.Errorf("bind address %q is not an IP address", host)
		}
		if a.Is4() || a.Is4In6() {
			family = unix.AF_INET
			sa = &unix.SockaddrInet4{Port: port, Addr: a.Unmap().As4()}
		} else {
			sa = &unix.SockaddrInet6{Port: port, Addr: a.As16()}
		}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil && family == unix.AF_INET6 && (host == "" || host == "*") {
		// No IPv6 in this kernel: fall back to every IPv4 address.
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: port}
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	}
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	fail := func(call string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s %s: %w", call, address, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("setsockopt SO_REUSEADDR", err)
	}
	if o.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return fail("setsockopt SO_REUSEPORT", err)
		}
	}
	if family == unix.AF_INET6 {
		v := 0
		if v6only {
			v = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
			return fail("setsockopt IPV6_V6ONLY", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	backlog := o.Backlog
	if backlog <= 0 {
		backlog = 65535 // the kernel caps it at net.core.somaxconn
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail("listen", err)
	}
	return fd, nil
}

// DupFD duplicates the descriptor under a connection or listener, with
// close-on-exec set. Unlike (*os.File).Fd it leaves the socket in
// non-blocking mode, which matters because the mode is shared by every
// process holding the socket.
func DupFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	err = rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) })
	if err == nil {
		err = derr
	}
	return nfd, err
}

// FromFD wraps a listening socket descriptor; it takes ownership of fd.
func FromFD(fd uintptr, name string) (*net.TCPListener, error) {
	f := os.NewFile(fd, name)
	defer f.Close() // FileListener works on a duplicate
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("%s is not a TCP listener", name)
	}
	noKeepAlive(tl)
	return tl, nil
}

// noKeepAlive turns off TCP keep-alive on the connections tl accepts.
// HAProxy leaves it off unless asked (option clitcpka), and Go's default
// (on, every 15 s) costs four setsockopt calls per accepted connection.
// A listener from net.FileListener offers no way to say so: its
// ListenConfig is an unexported field, set here through reflection.
// TestNoKeepAlive fails if a Go release renames or reshapes it.
func noKeepAlive(tl *net.TCPListener) {
	f := reflect.ValueOf(tl).Elem().FieldByName("lc")
	if !f.IsValid() || f.Type() != reflect.TypeFor[net.ListenConfig]() {
		return
	}
	(*net.ListenConfig)(unsafe.Pointer(f.UnsafeAddr())).KeepAlive = -1
}
