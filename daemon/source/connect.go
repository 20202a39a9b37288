package source

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"sluice/daemon/sock"
)

// Watcher follows a socket through a non-blocking connect, in an event
// loop of the caller's (the TCP proxy's poller), so that the socket never
// enters Go's network poller.
type Watcher interface {
	// Watch registers fd to be told when it becomes writable; it is
	// called at most once per attempt, for a connect still under way.
	Watch(fd int) error
	// Wait blocks until the socket watched may have become writable, or
	// the deadline (zero: none) passes: false.
	Wait(deadline time.Time) bool
	// Forget undoes Watch after a failed attempt, before fd is closed.
	Forget()
}

// Connect makes one connection attempt from b to raddr on a raw,
// non-blocking socket with TCP_NODELAY, as HAProxy does: connect, then
// connect again to learn the outcome, which on loopback is known at once,
// watching for the end only while it is not. It returns the connected
// descriptor; on failure the socket is closed. A timeout's error is
// os.ErrDeadlineExceeded (a net.Error).
func Connect(b Bind, raddr netip.AddrPort, timeout time.Duration, w Watcher) (int, error) {
	family := unix.AF_INET
	if raddr.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	fail := func(call string, err error) (int, error) {
		sock.Close(fd)
		return -1, fmt.Errorf("connect to %s: %w", raddr, os.NewSyscallError(call, err))
	}
	if err := sock.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fail("setsockopt", err)
	}
	if b.Local.IsValid() {
		opt, level := unix.SO_REUSEADDR, unix.SOL_SOCKET
		if b.NoPort {
			opt, level = unix.IP_BIND_ADDRESS_NO_PORT, unix.IPPROTO_IP
		}
		if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
			return fail("setsockopt", err)
		}
		if err := unix.Bind(fd, sockaddr(b.Local)); err != nil {
			return fail("bind", err)
		}
	}
	scope := zoneIndex(raddr.Addr())
	if err := sock.Connect(fd, raddr, scope); err != nil && err != unix.EINPROGRESS {
		return fail("connect", err)
	}
	var deadline time.Time
	watched := false
	for {
		// A second connect tells the outcome: done (EISCONN on some
		// kernels), still under way, or the attempt's error. On loopback
		// it is done, and the socket is never watched for it.
		switch err := sock.Connect(fd, raddr, scope); err {
		case nil, unix.EISCONN:
			return fd, nil
		case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
			if !watched {
				// Watching reports a connect that ended meanwhile.
				if err := w.Watch(fd); err != nil {
					sock.Close(fd)
					return -1, err
				}
				watched = true
				if timeout > 0 {
					deadline = time.Now().Add(timeout)
				}
			}
			if !w.Wait(deadline) {
				w.Forget()
				sock.Close(fd)
				return -1, fmt.Errorf("connect to %s: %w", raddr, os.ErrDeadlineExceeded)
			}
		default:
			if watched {
				w.Forget()
			}
			return fail("connect", err)
		}
	}
}

// sockaddr converts ap for the raw socket calls.
func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if a := ap.Addr(); a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16(), ZoneId: zoneIndex(ap.Addr())}
}

// zoneIndex is the interface index of a's zone (fe80::1%eth0), 0 for none.
func zoneIndex(a netip.Addr) uint32 {
	if zone := a.Zone(); zone != "" {
		if ifi, err := net.InterfaceByName(zone); err == nil {
			return uint32(ifi.Index)
		}
	}
	return 0
}

// AddrPort converts a socket address from accept or getsockname; the zero
// AddrPort for other families.
func AddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
