package sock

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The reads, writes and splices of sessions are raw system calls
// (unix.RawSyscall), which do not tell Go's scheduler that the goroutine
// entered the kernel: on a non-blocking socket they never wait. Told
// (unix.Syscall), the scheduler's monitor thread hands the goroutine's
// processor to another thread once a call has lasted about 20 µs, as a
// 64 KB copy on loopback does; on a proxy pinned to one CPU the two
// threads then take turns on it, and the sessions of the one the kernel
// puts aside stall for milliseconds. Raw calls took the 99th percentile of
// 64 KB responses from 2.6 to 2.1 ms (docs/BENCHMARKS.md). A raw call holds
// off a garbage collection's stop for its own length, tens of µs at most.
// Read, Send and Splice retry a call a signal interrupted (EINTR), so
// their callers never see it.

// Read reads from the non-blocking socket fd once: n == 0 with a nil
// error is the end of the stream; EAGAIN (bare errno) that nothing is
// queued.
func Read(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// Write writes p to the non-blocking socket fd once; EAGAIN (bare errno)
// when it is full.
func Write(fd int, p []byte) (int, error) {
	return Send(fd, p, 0)
}

// Send is Write with send(2)'s flags (MSG_MORE).
func Send(fd int, p []byte, flags int) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
			uintptr(flags|unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL), 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// Splice moves up to n bytes from rfd to wfd (one of them a pipe) once,
// as splice(2).
func Splice(rfd, wfd, n, flags int) (int, error) {
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(rfd), 0, uintptr(wfd), 0, uintptr(n), uintptr(flags))
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}
