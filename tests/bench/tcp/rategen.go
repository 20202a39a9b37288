package main

import (
	"net/netip"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// The connection-rate load runs on one thread with raw system calls and
// one epoll set, as wrk and HAProxy do, rather than on Go's net package:
// behind either proxy the generator's CPU was the busier one (98–100%
// against the proxy's 86–91%), so the figure measured the generator's
// cost per connection as much as the proxy's (docs/BENCHMARKS.md).
//
// A client connection is: socket, connect, watch for input, read the
// greeter's byte, reset (linger 0, so that no TIME_WAIT is left on this
// side) and close: 6 system calls. The greeter in the same loop accepts,
// writes one byte and closes: 3.

// greeter is a listener on 127.0.0.1 that connLoop serves: each
// connection gets one byte, then a close.
type greeter struct {
	fd   int
	addr string
}

func newGreeter() (*greeter, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	return &greeter{fd: fd, addr: addr.String()}, nil
}

// greet answers every connection waiting on the listener.
func (g *greeter) greet() {
	for {
		fd, _, err := unix.Accept4(g.fd, unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		if err != nil {
			return
		}
		unix.Write(fd, []byte("x"))
		unix.Close(fd)
	}
}

// connLoop keeps conns connections to addr under way from the calling
// thread until deadline and counts those that received their byte. It
// serves g in the same loop, so that the client and the server side of
// a connection cost the generator no switch between threads.
func connLoop(addr string, g *greeter, conns int, deadline time.Time) (done, failed int64) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0, 1
	}
	sa := &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, 1
	}
	defer unix.Close(ep)
	listen := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(g.fd)}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, g.fd, &listen); err != nil {
		return 0, 1
	}
	defer unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, g.fd, nil)

	open := map[int]struct{}{}
	start := func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			failed++
			return
		}
		if err := unix.Connect(fd, sa); err != nil && err != unix.EINPROGRESS {
			unix.Close(fd)
			failed++
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(fd)
			failed++
			return
		}
		open[fd] = struct{}{}
	}
	finish := func(fd int) {
		unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		unix.Close(fd)
		delete(open, fd)
	}
	for range conns {
		start()
	}
	events := make([]unix.EpollEvent, 64)
	buf := make([]byte, 16)
	for time.Now().Before(deadline) {
		n, err := unix.EpollWait(ep, events, 100)
		if err != nil && err != unix.EINTR {
			break
		}
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			if fd == g.fd {
				g.greet()
				continue
			}
			r, err := unix.Read(fd, buf)
			if err == unix.EAGAIN {
				continue
			}
			if r == 1 {
				done++
			} else {
				failed++
			}
			finish(fd)
			start()
		}
	}
	// Connections still under way at the deadline are not counted.
	for fd := range open {
		finish(fd)
	}
	return done, failed
}
