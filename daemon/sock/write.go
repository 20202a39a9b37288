package sock

import (
	"os"

	"golang.org/x/sys/unix"
)

// WriteNow writes p to the non-blocking socket fd as far as the socket
// takes it now, without waiting: n < len(p) with a nil error means the
// socket is full (EAGAIN).
func WriteNow(fd int, p []byte) (n int, err error) {
	for n < len(p) {
		m, e := unix.Write(fd, p[n:])
		if m > 0 {
			n += m
		}
		switch e {
		case nil, unix.EINTR:
			continue
		case unix.EAGAIN:
			return n, nil
		}
		return n, os.NewSyscallError("write", e)
	}
	return n, nil
}
