package sock

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls that set up and tear down a TCP session's sockets are raw
// too (see raw.go). On loopback, connect, shutdown and close run the
// peer's side of the handshake or of the FIN within the call and can pass
// the 20 µs after which the scheduler's monitor hands the processor to
// another thread. In the connection-rate benchmark the proxy's CPU
// switched threads 0.15 times per connection with these calls raw,
// against 0.22 before (HAProxy: 0.08), and the monitor woke half as
// often; the rate itself did not move. None of them waits: the sockets
// are non-blocking and nothing sets SO_LINGER with a timeout.

// Close closes fd.
func Close(fd int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0); e != 0 {
		return e
	}
	return nil
}

// Shutdown shuts down one or both halves of the socket fd.
func Shutdown(fd, how int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0); e != 0 {
		return e
	}
	return nil
}

// SetsockoptInt sets an integer socket option.
func SetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	if _, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&v)), 4, 0); e != 0 {
		return e
	}
	return nil
}

// Connect starts or checks a connect of the non-blocking socket fd to
// ap (scope: the interface index of a link-local IPv6 address). Errors
// are bare errnos: EINPROGRESS while under way, EISCONN once done.
func Connect(fd int, ap netip.AddrPort, scope uint32) error {
	var e unix.Errno
	if a := ap.Addr(); a.Is4() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Port: port(ap.Port()), Addr: a.As4()}
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Port: port(ap.Port()), Addr: a.As16(), Scope_id: scope}
		_, _, e = unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet6)
	}
	if e != 0 {
		return e
	}
	return nil
}

// EpollPoll collects the events of the epoll set epfd that are ready now,
// without waiting (epoll_pwait with a zero timeout).
func EpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
