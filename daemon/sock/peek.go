// Package sock has the socket calls the standard library lacks, made
// without allocating (x/sys/unix's Recvfrom allocates a sockaddr).
package sock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Peek looks at the first byte queued on the socket fd without taking it
// and without blocking: n is 0 at end of stream; err is EAGAIN when
// nothing is queued.
func Peek(fd uintptr, b *[1]byte) (n int, err error) {
	r, _, errno := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}
