package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/daemon/sock"
)

// Tunnel timeouts; zero means none.
type tunnelTimeouts struct {
	client, server       time.Duration // inactivity on each side
	clientFin, serverFin time.Duration // once that side has shut its sending half
}

// tunnel carries bytes both ways between two TCP connections.
//
// Each direction waits until its source is readable without holding
// anything, then moves exactly the queued bytes with io.CopyN, which
// *net.TCPConn turns into splice(2) through a pipe. Go's splice keeps its
// pipe (two descriptors) for as long as one io.Copy lasts; copying burst by
// burst keeps an idle connection at its two sockets, so maxconn stays within
// the open-files limit.
type tunnel struct {
	client, server *net.TCPConn
	t              tunnelTimeouts
	last           atomic.Int64 // unix nanoseconds of the last bytes moved either way
	term           atomic.Uint32
	running        atomic.Int32 // directions still copying
	up, down       pump         // client to server, server to client
}

// pump is one direction.
type pump struct {
	src, dst *net.TCPConn
	srcSide  byte // 'C' or 'S': who we read from
	rc       syscall.RawConn
	bytes    int64
	done     atomic.Bool // saw EOF and passed it on
	// wait state, set by waitFn
	avail   int
	eof     bool
	waitErr error
	waitFn  func(fd uintptr) bool
	peek    [1]byte
}

// start copies both ways on two new goroutines; the last direction to
// end calls done, after which result tells the outcome.
func (tn *tunnel) start(done func()) {
	tn.last.Store(time.Now().UnixNano())
	tn.up.init(tn.client, tn.server, 'C')
	tn.down.init(tn.server, tn.client, 'S')
	tn.running.Store(2)
	go tn.direction(&tn.up, &tn.down, done)
	go tn.direction(&tn.down, &tn.up, done)
}

func (tn *tunnel) direction(p, other *pump, done func()) {
	tn.loop(p, other)
	if tn.running.Add(-1) == 0 {
		done()
	}
}

// result returns bytes from the client, bytes to the client and HAProxy's
// termination state ("--" when both sides finished).
func (tn *tunnel) result() (in, out int64, term [2]byte) {
	t := tn.term.Load()
	if t == 0 {
		return tn.up.bytes, tn.down.bytes, [2]byte{'-', '-'}
	}
	return tn.up.bytes, tn.down.bytes, [2]byte{byte(t >> 8), byte(t)}
}

func (p *pump) init(src, dst *net.TCPConn, side byte) {
	p.src, p.dst, p.srcSide = src, dst, side
	p.rc, _ = src.SyscallConn()
	p.waitFn = p.wait
}

// wait runs inside RawConn.Read: it returns false (park until readable)
// while nothing is queued, and true once there are bytes or an EOF.
func (p *pump) wait(fd uintptr) bool {
	n, err := sock.Peek(fd, &p.peek)
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return false
	case err != nil:
		p.waitErr = os.NewSyscallError("recvfrom", err)
	case n == 0:
		p.eof = true
	default:
		p.avail = max(sock.Queued(fd), 1)
	}
	return true
}

// limit is the inactivity timeout for reading p's source, and who is
// blamed when it expires.
func (tn *tunnel) limit(p, other *pump) (time.Duration, byte) {
	if p.srcSide == 'C' {
		if other.done.Load() && tn.t.serverFin > 0 {
			return tn.t.serverFin, 's'
		}
		return tn.t.client, 'c'
	}
	if other.done.Load() && tn.t.clientFin > 0 {
		return tn.t.clientFin, 'c'
	}
	return tn.t.server, 's'
}

func (tn *tunnel) loop(p, other *pump) {
	for {
		limit, blame := tn.limit(p, other)
		if limit > 0 {
			p.src.SetReadDeadline(time.Unix(0, tn.last.Load()).Add(limit))
		}
		p.avail, p.eof, p.waitErr = 0, false, nil
		err := p.rc.Read(p.waitFn)
		if err == nil {
			err = p.waitErr
		}
		if err != nil {
			if tn.term.Load() != 0 {
				return // the other direction aborted
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if time.Since(time.Unix(0, tn.last.Load())) < limit {
					continue // the other direction moved bytes meanwhile
				}
				tn.abort(blame, 'D')
				return
			}
			tn.abort(p.srcSide, 'D')
			return
		}
		if p.eof {
			// Pass the half-close on; the session closes both sockets
			// once both directions have returned.
			p.done.Store(true)
			p.dst.CloseWrite()
			return
		}
		if limit > 0 {
			p.dst.SetWriteDeadline(time.Now().Add(limit))
		}
		n, err := io.CopyN(p.dst, p.src, int64(p.avail))
		p.bytes += n
		tn.last.Store(time.Now().UnixNano())
		if err != nil {
			if tn.term.Load() != 0 {
				return
			}
			tn.abort(tn.blameCopy(p, err, blame), 'D')
			return
		}
	}
}

// blameCopy tells which side broke a copy: a stalled write is the
// destination's timeout, a broken pipe the destination's, and a reset
// whoever's socket is now closed.
func (tn *tunnel) blameCopy(p *pump, err error, timeoutBlame byte) byte {
	dstSide := byte('S')
	if p.srcSide == 'S' {
		dstSide = 'C'
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return dstSide | 0x20 // lower case: a timeout on that side
	case errors.Is(err, unix.EPIPE):
		return dstSide
	case errors.Is(err, unix.ECONNRESET):
		if closed(p.dst) {
			return dstSide
		}
	}
	return p.srcSide
}

// closed reports whether the kernel has torn the connection down.
func closed(c *net.TCPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	state := uint8(unix.BPF_TCP_CLOSE)
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO); err == nil {
			state = info.State
		}
	})
	return state == unix.BPF_TCP_CLOSE
}

// abort records the first termination state and wakes both directions.
func (tn *tunnel) abort(who, phase byte) {
	if tn.term.CompareAndSwap(0, uint32(who)<<8|uint32(phase)) {
		past := time.Unix(1, 0)
		tn.client.SetDeadline(past)
		tn.server.SetDeadline(past)
	}
}
