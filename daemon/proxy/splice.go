package proxy

import (
	"sync"

	"golang.org/x/sys/unix"

	"sluice/daemon/sock"
)

// A bulk direction moves its bytes with splice(2) through a pipe: socket
// to pipe, pipe to socket, never through user space. A pipe is taken for
// one burst and given back once it is empty, so an idle connection holds
// none (a pipe is two descriptors, and maxconn must fit the open-files
// limit).
const (
	pipeSize     = 256 << 10 // F_SETPIPE_SZ; also the most one splice asks for
	maxFreePipes = 64
	copyBufSize  = 16 << 10 // a direction that fills this in one read is bulk
)

type pipe struct {
	r, w    int
	pending int // bytes in the pipe
}

var pipes struct {
	mu   sync.Mutex
	free []*pipe
}

// copyBufs are the buffers of directions that copy: small exchanges,
// where a read and a write cost less than two splices.
var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

func getPipe() (*pipe, error) {
	pipes.mu.Lock()
	if n := len(pipes.free); n > 0 {
		p := pipes.free[n-1]
		pipes.free = pipes.free[:n-1]
		pipes.mu.Unlock()
		return p, nil
	}
	pipes.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	// A larger pipe moves more per call. Failing (over the user's pipe
	// pages) leaves the default size, which works with more calls.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pipeSize)
	return &pipe{r: fds[0], w: fds[1]}, nil
}

// putPipe keeps an empty pipe for the next burst; one still holding bytes
// (a broken transfer) is closed.
func putPipe(p *pipe) {
	if p.pending == 0 {
		pipes.mu.Lock()
		if len(pipes.free) < maxFreePipes {
			pipes.free = append(pipes.free, p)
			pipes.mu.Unlock()
			return
		}
		pipes.mu.Unlock()
	}
	sock.Close(p.r)
	sock.Close(p.w)
}
