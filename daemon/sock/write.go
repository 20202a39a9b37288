package sock

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WriteNow writes p to the non-blocking socket fd as far as the socket
// takes it now, without waiting: n < len(p) with a nil error means the
// socket is full (EAGAIN).
func WriteNow(fd int, p []byte) (n int, err error) {
	for n < len(p) {
		m, e := Write(fd, p[n:])
		n += m
		switch e {
		case nil:
			continue
		case unix.EAGAIN:
			return n, nil
		}
		return n, os.NewSyscallError("write", e)
	}
	return n, nil
}

// SendNow is WriteNow for a followed by b, both in one sendmsg while the
// socket takes them: a message head and the body part read with it leave
// together, instead of the head as a segment (and a wake-up of the peer)
// of its own.
func SendNow(fd int, a, b []byte) (n int, err error) {
	var iov [2]unix.Iovec
	var msg unix.Msghdr
	total := len(a) + len(b)
	for n < total {
		cnt := 0
		if n < len(a) {
			iov[0].Base, cnt = &a[n], 1
			iov[0].SetLen(len(a) - n)
			if len(b) > 0 {
				iov[1].Base, cnt = &b[0], 2
				iov[1].SetLen(len(b))
			}
		} else {
			iov[0].Base, cnt = &b[n-len(a)], 1
			iov[0].SetLen(total - n)
		}
		msg.Iov = &iov[0]
		msg.SetIovlen(cnt)
		m, _, e := unix.RawSyscall(unix.SYS_SENDMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		switch e {
		case 0:
			n += int(m)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return n, nil
		}
		return n, os.NewSyscallError("sendmsg", e)
	}
	return n, nil
}
