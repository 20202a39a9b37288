package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"sluice/daemon/park"
	"sluice/daemon/sock"
)

// Tunnel timeouts; zero means none.
type tunnelTimeouts struct {
	client, server       time.Duration // inactivity on each side
	clientFin, serverFin time.Duration // once that side has shut its sending half
}

// tunnel carries bytes both ways between two TCP sockets.
//
// An idle tunnel has no goroutine: both sockets wait in the process's
// park.Poller, and a goroutine starts for a direction when its source
// becomes readable. It moves everything queued, then parks again. A
// direction copies through a pooled buffer until one read fills it; from
// then on it is bulk and splices (see splice.go). A direction whose
// destination is full waits for the poller to say it has room. Inactivity
// timeouts of parked directions are one timer per tunnel.
//
// The tunnel works on the descriptors alone: a TCP session's sockets are
// accepted and connected raw and never enter Go's network poller, which
// saves its registrations and the address lookups of package net on every
// connection. Whoever owns the sockets closes them once done is called.
//
// DESIGN.md sketches the splice path as io.Copy between the two
// *net.TCPConn. That costs two goroutines per session for its whole life
// and holds a pipe (two more descriptors) per direction for as long as the
// copy lasts; splicing the same descriptors from here keeps the splice
// path for bulk transfers while an idle session costs no goroutine, no
// buffer and no pipe (docs/BENCHMARKS.md has the figures).
type tunnel struct {
	t        tunnelTimeouts
	last     atomic.Int64 // unix nanoseconds of the last bytes moved either way
	term     atomic.Uint32
	up, down pump // client to server, server to client
	// timer is kept when the session is reused (pooled): it calls expire
	// on this same tunnel. armed: set in this use.
	timer    *time.Timer
	armed    bool
	reusable bool // finish stopped the timer: no expire can still run
	owner    tunnelOwner

	mu   sync.Mutex // guards the pumps' state, pending and room, and live
	live int        // directions not ended
}

// tunnelOwner is told once both directions of its tunnel have ended
// (an interface, not a func: a method value would cost an allocation per
// session).
type tunnelOwner interface{ tunnelDone() }

// Pump states, under tunnel.mu.
const (
	unstarted = iota // registered before start (a connecting server): readiness is noted
	parked           // waiting in the poller, no goroutine
	running          // a goroutine is moving bytes
	ended
)

// pump is one direction. Its registration with the poller is its
// source's: readable wakes it, writable wakes the other pump, whose
// destination that socket is.
type pump struct {
	tn       *tunnel
	other    *pump
	src, dst int
	srcSide  byte // 'C' or 'S': who we read from
	bytes    int64
	bulk     bool        // splices; set once a read fills a copy buffer
	eof      atomic.Bool // saw the end of stream and passed it on
	fin      atomic.Bool // the poller saw the source's end of stream arrive
	failed   atomic.Bool // the poller saw the source fail
	key      park.Key
	state    uint8
	pending  bool // readable again while running
	// held is a copy an inline run had no room to send, with the part
	// still to send and whether a half-close follows.
	held           *[copyBufSize]byte
	heldOff, heldN int
	heldLast       bool
	room           bool          // dst reported writable since the last wait
	wake           chan struct{} // made when a write first waits for room
	// dstRW: dst's registration reports room too. A socket is registered
	// for reading only, as HAProxy subscribes, until a write finds it
	// full (park.Poller.WantRoom); one watched while connecting is
	// registered for both from the start.
	dstRW bool
}

// errAgain ends a burst: the source has nothing more queued.
var errAgain = errors.New("nothing queued")

// errHandOff ends an inline run: what is left needs a goroutine.
var errHandOff = errors.New("hand off to a goroutine")

// errAborted ends a direction the tunnel's abort stopped.
var errAborted = errors.New("tunnel aborted")

// writeError marks a failure writing to the destination, for blame.
type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// poller is the process's park.Set: one poller per processor sluice runs
// on, made at the first session, after threads has set GOMAXPROCS.
var poller = sync.OnceValues(func() (*park.Set, error) { return park.NewSet(runtime.GOMAXPROCS(0)) })

// prepare links the pumps, before a socket is registered.
func (tn *tunnel) prepare() {
	tn.up.tn, tn.up.other, tn.up.srcSide = tn, &tn.down, 'C'
	tn.down.tn, tn.down.other, tn.down.srcSide = tn, &tn.up, 'S'
}

// The tunnel follows its server socket through a non-blocking connect
// (source.Watcher), so that the registration made for it then is the
// one the tunnel keeps.

// Watch registers a connecting server socket, for reading and for room:
// writable is how the connect's end is told.
func (tn *tunnel) Watch(fd int) error {
	p, err := poller()
	// Under the lock, so that a Ready for the new key waits until the
	// pump knows it (see Ready).
	tn.mu.Lock()
	if err == nil {
		tn.down.key, err = p.AddRW(fd, &tn.down)
	}
	tn.up.dstRW = err == nil
	tn.mu.Unlock()
	return err
}

// Wait waits until the connecting socket is writable.
func (tn *tunnel) Wait(deadline time.Time) bool { return tn.up.awaitRoom(deadline) }

// Forget drops a failed attempt's registration and what it reported
// (waiting for a Ready under way, which would report it late).
func (tn *tunnel) Forget() {
	if p, err := poller(); err == nil {
		p.RemoveWait(tn.down.key)
	}
	tn.up.dstRW = false
	tn.mu.Lock()
	tn.down.key, tn.down.pending, tn.up.room = 0, false, false
	tn.mu.Unlock()
	tn.down.fin.Store(false)
	tn.down.failed.Store(false)
}

// start carries bytes between client and server, registering with the
// poller whichever is not yet; directions start as their sources become
// readable. The last direction to end tells owner, after which result
// tells the outcome.
func (tn *tunnel) start(client, server int, owner tunnelOwner) {
	tn.prepare()
	tn.owner = owner
	tn.last.Store(time.Now().UnixNano())
	tn.up.src, tn.up.dst = client, server
	tn.down.src, tn.down.dst = server, client
	// Both directions, and start itself until both are under way: a
	// direction can run and end as soon as its socket is added.
	tn.live = 3
	if d := tn.nextCheck(time.Now()); d > 0 {
		if tn.timer == nil {
			tn.timer = time.AfterFunc(d, tn.expire)
		} else {
			tn.timer.Reset(d)
		}
		tn.armed = true
	}
	p, err := poller()
	tn.mu.Lock()
	for _, pm := range [2]*pump{&tn.up, &tn.down} {
		if err == nil && pm.key == 0 {
			pm.key, err = p.Add(pm.src, pm)
		}
	}
	for _, pm := range [2]*pump{&tn.up, &tn.down} {
		pm.state = parked
		if pm.pending {
			pm.pending, pm.state = false, running
			go pm.run(false)
		}
	}
	tn.mu.Unlock()
	if err != nil {
		tn.abort('P', 'D') // no poller: the process is out of descriptors
	}
	tn.end(nil)
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

// Ready is called by the poller when p's source may be readable or
// writable.
func (p *pump) Ready(k park.Key, ev park.Event) {
	tn := p.tn
	tn.mu.Lock()
	if k != p.key {
		// For a registration removed since: its session has ended, and
		// this one (pooled) may be another's.
		tn.mu.Unlock()
		return
	}
	if ev&park.Writable != 0 {
		p.other.noteRoom()
	}
	if ev&park.Readable == 0 {
		tn.mu.Unlock()
		return
	}
	if ev&park.Error != 0 {
		p.failed.Store(true)
	} else if ev&park.Hangup != 0 {
		p.fin.Store(true)
	}
	switch p.state {
	case parked:
		p.state = running
		tn.mu.Unlock()
		p.run(true)
		return
	case unstarted, running:
		p.pending = true
	}
	tn.mu.Unlock()
}

// roomReady notes that p's destination may have room, and wakes p if it
// waits for it.
func (p *pump) roomReady() {
	p.tn.mu.Lock()
	p.noteRoom()
	p.tn.mu.Unlock()
}

// noteRoom is roomReady under tn.mu.
func (p *pump) noteRoom() {
	p.room = true
	if p.wake != nil {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// awaitRoom waits until p's destination reports room, or the deadline
// (zero: none) passes, or the tunnel is aborted: false on the deadline.
func (p *pump) awaitRoom(deadline time.Time) bool {
	tn := p.tn
	tn.mu.Lock()
	if p.room {
		p.room = false
		tn.mu.Unlock()
		return true
	}
	if p.wake == nil {
		p.wake = make(chan struct{}, 1)
	}
	ch := p.wake
	tn.mu.Unlock()
	var expire <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expire = t.C
	}
	select {
	case <-ch:
		tn.mu.Lock()
		p.room = false
		tn.mu.Unlock()
		return true
	case <-expire:
		return false
	}
}

// run moves bytes until the source is drained, then parks; inline, on
// the poller's goroutine, which saves a goroutine for each small
// exchange, it hands over to a goroutine of its own at the first thing
// that could wait (a full destination, a bulk transfer).
func (p *pump) run(inline bool) {
	for {
		err := p.burst(inline)
		switch {
		case err == errHandOff:
			go p.run(false)
			return
		case err == errAgain:
			if p.park() {
				return
			}
		case err == io.EOF:
			// Pass the half-close on; the session closes both sockets
			// once both directions have ended. When the other direction
			// already has, the close about to come says the same.
			p.eof.Store(true)
			if !p.other.eof.Load() {
				sock.Shutdown(p.dst, unix.SHUT_WR)
			}
			p.tn.end(p)
			return
		default:
			if p.tn.term.Load() == 0 {
				p.tn.abort(p.blame(err), 'D')
			}
			p.tn.end(p)
			return
		}
	}
}

// park returns the pump to the poller, unless the source became readable
// meanwhile (false: go on) or the tunnel was aborted.
func (p *pump) park() bool {
	tn := p.tn
	tn.mu.Lock()
	if p.pending {
		p.pending = false
		tn.mu.Unlock()
		return false
	}
	if tn.term.Load() != 0 {
		tn.mu.Unlock()
		tn.end(p)
		return true
	}
	p.state = parked
	tn.mu.Unlock()
	return true
}

// end marks p ended (nil: start is done); the last to end finishes the
// tunnel.
func (tn *tunnel) end(p *pump) {
	tn.mu.Lock()
	if p != nil {
		p.state = ended
	}
	tn.live--
	last := tn.live == 0
	if !last && p != nil && p.eof.Load() && tn.armed && (tn.t.clientFin > 0 || tn.t.serverFin > 0) {
		tn.timer.Reset(0) // the other direction's limit may now be a _fin one
	}
	tn.mu.Unlock()
	if last {
		tn.finish()
	}
}

func (tn *tunnel) finish() {
	tn.reusable = !tn.armed || tn.timer.Stop()
	if p, err := poller(); err == nil {
		p.Remove(tn.up.key)
		p.Remove(tn.down.key)
	}
	tn.owner.tunnelDone()
}

// retire tells r once each of the registrations, ended by finish (or
// never made), can report nothing more: a Ready collected before may
// still be under way (see park.Set.Retire). The tunnel may be reused
// only then.
func (tn *tunnel) retire(r park.Retiree) {
	p, err := poller()
	if err != nil {
		r.Retired()
		r.Retired()
		return
	}
	p.Retire(tn.up.key, r)
	p.Retire(tn.down.key, r)
}

// burst moves everything queued on the source: errAgain when drained,
// io.EOF at the end of the stream. Inline (on the poller's goroutine) it
// never waits: errHandOff when what is left needs a goroutine.
func (p *pump) burst(inline bool) error {
	if p.bulk {
		if inline {
			return errHandOff
		}
		return p.splice()
	}
	// buf[off:n] is still to send: a copy the destination had no room
	// for during an inline run, taken over here.
	buf, off, n, last := p.held, p.heldOff, p.heldN, p.heldLast
	p.held = nil
	if buf == nil {
		buf = copyBufs.Get().(*[copyBufSize]byte)
	}
	for {
		if off < n {
			sent, err := p.write(buf[off:n], last, inline)
			p.moved(sent)
			if err == errHandOff {
				p.held, p.heldOff, p.heldN, p.heldLast = buf, off+sent, n, last
				return err
			}
			if err != nil {
				copyBufs.Put(buf)
				return err
			}
			switch {
			case n == len(buf):
				copyBufs.Put(buf)
				p.bulk = true
				if inline {
					return errHandOff
				}
				return p.splice()
			case last:
				copyBufs.Put(buf)
				return io.EOF
			case !p.failed.Load():
				// A short read took all that was queued; bytes arriving
				// since wake the poller again. Parking now saves the read
				// that would say EAGAIN. (Not so for splice, which also
				// stops short when the pipe has no free slot.)
				copyBufs.Put(buf)
				return errAgain
			}
		}
		if p.tn.term.Load() != 0 {
			copyBufs.Put(buf)
			return errAgain // aborted: park ends the direction
		}
		// Known before the read: the end of stream was then queued
		// behind whatever the read takes.
		fin := p.fin.Load()
		r, err := sock.Read(p.src, buf[:])
		switch {
		case err != nil || r == 0:
			copyBufs.Put(buf)
			switch {
			case err == unix.EAGAIN:
				return errAgain
			case err != nil:
				// The errno alone: only blame looks at it, and a small
				// errno in an error costs no allocation.
				return err
			}
			return io.EOF
		}
		// A short read after the end of stream arrived took all that was
		// queued: the read that would say so is not needed, and the
		// half-close about to follow can leave in the same segment.
		off, n, last = 0, r, fin && r < len(buf)
	}
}

func (p *pump) moved(n int) {
	if n == 0 {
		return
	}
	p.bytes += int64(n)
	p.tn.last.Store(time.Now().UnixNano())
}

// write sends b whole, waiting for room when the destination is full,
// and says how much it sent; inline, it does not wait but returns
// errHandOff. more says that a half-close follows at once (MSG_MORE), as
// HAProxy sends the last bytes, so that they leave with the FIN.
func (p *pump) write(b []byte, more, inline bool) (int, error) {
	sent := 0
	for {
		var n int
		var err error
		if more {
			n, err = sock.Send(p.dst, b[sent:], unix.MSG_MORE)
		} else {
			n, err = sock.Write(p.dst, b[sent:])
		}
		switch {
		case err == nil:
			if sent += n; sent == len(b) {
				return sent, nil
			}
		case err == unix.EAGAIN && inline:
			return sent, errHandOff
		case err == unix.EAGAIN:
			if err := p.waitRoom(); err != nil {
				return sent, err
			}
		default:
			return sent, writeError{os.NewSyscallError("write", err)}
		}
	}
}

// waitRoom waits for the destination to have room, within the
// inactivity limit.
func (p *pump) waitRoom() error {
	if !p.dstRW {
		// The destination's registration is the other direction's.
		pl, err := poller()
		if err == nil {
			err = pl.WantRoom(p.other.key, p.dst)
		}
		if err != nil {
			return writeError{err}
		}
		p.dstRW = true
	}
	var deadline time.Time
	if limit, _ := p.tn.limit(p); limit > 0 {
		deadline = time.Now().Add(limit)
	}
	if !p.awaitRoom(deadline) {
		return writeError{os.ErrDeadlineExceeded}
	}
	if p.tn.term.Load() != 0 {
		return errAborted
	}
	return nil
}

// splice moves the source's bytes through a pipe until it is drained.
func (p *pump) splice() error {
	pp, err := getPipe()
	if err != nil {
		p.bulk = false // out of descriptors: copy instead
		return nil
	}
	defer putPipe(pp)
	for {
		if p.tn.term.Load() != 0 {
			return errAgain // aborted: park ends the direction
		}
		n, err := sock.Splice(p.src, pp.w, pipeSize, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		switch {
		case err == unix.EAGAIN:
			return errAgain // the pipe is empty: the source is drained
		case err != nil:
			return os.NewSyscallError("splice", err)
		case n == 0:
			return io.EOF
		}
		pp.pending = int(n)
		if err := p.drain(pp); err != nil {
			return err
		}
		p.moved(int(n))
	}
}

// drain splices the pipe's bytes to the destination, waiting for room
// when it is full.
func (p *pump) drain(pp *pipe) error {
	for pp.pending > 0 {
		n, err := sock.Splice(pp.r, p.dst, pp.pending, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
		switch {
		case err == nil:
			pp.pending -= int(n)
		case err == unix.EAGAIN:
			if err := p.waitRoom(); err != nil {
				return err
			}
		default:
			return writeError{os.NewSyscallError("splice", err)}
		}
	}
	return nil
}

// limit is the inactivity timeout of p's source, and who is blamed when
// it expires.
func (tn *tunnel) limit(p *pump) (time.Duration, byte) {
	if p.srcSide == 'C' {
		if p.other.eof.Load() && tn.t.serverFin > 0 {
			return tn.t.serverFin, 's'
		}
		return tn.t.client, 'c'
	}
	if p.other.eof.Load() && tn.t.clientFin > 0 {
		return tn.t.clientFin, 'c'
	}
	return tn.t.server, 's'
}

// expire runs on the tunnel's timer: a parked direction whose source has
// been silent for its limit (no bytes either way) aborts the tunnel;
// otherwise the timer is set for the next possible expiry.
func (tn *tunnel) expire() {
	now := time.Now()
	idle := now.Sub(time.Unix(0, tn.last.Load()))
	var blame byte
	tn.mu.Lock()
	if tn.live == 0 {
		tn.mu.Unlock()
		return
	}
	for _, p := range [2]*pump{&tn.up, &tn.down} {
		if limit, who := tn.limit(p); p.state == parked && limit > 0 && idle >= limit {
			blame = who
			break
		}
	}
	tn.mu.Unlock()
	if blame != 0 {
		tn.abort(blame, 'D')
		return
	}
	if d := tn.nextCheck(now); d > 0 {
		tn.timer.Reset(d)
	}
}

// nextCheck is how long until a direction could time out, 0 for never.
// A running direction is checked again a whole limit later; its writes
// have their own deadline.
func (tn *tunnel) nextCheck(now time.Time) time.Duration {
	idle := now.Sub(time.Unix(0, tn.last.Load()))
	next := time.Duration(0)
	for _, p := range [2]*pump{&tn.up, &tn.down} {
		limit, _ := tn.limit(p)
		if limit <= 0 || p.eof.Load() {
			continue
		}
		d := max(limit-idle, time.Millisecond)
		if next == 0 || d < next {
			next = d
		}
	}
	return next
}

// blame tells which side broke a transfer: a stalled write is the
// destination's timeout, a broken pipe the destination's, and a reset
// whoever's socket is now closed.
func (p *pump) blame(err error) byte {
	dstSide := byte('S')
	if p.srcSide == 'S' {
		dstSide = 'C'
	}
	// writeError is never wrapped: a type assertion, where errors.As
	// would cost an allocation.
	if _, ok := err.(writeError); !ok {
		return p.srcSide
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
func closed(fd int) bool {
	info, err := unix.GetsockoptTCPInfo(fd, unix.SOL_TCP, unix.TCP_INFO)
	return err != nil || info.State == unix.BPF_TCP_CLOSE
}

// abort records the first termination state, ends the parked directions
// and wakes a direction waiting for room.
func (tn *tunnel) abort(who, phase byte) {
	if !tn.term.CompareAndSwap(0, uint32(who)<<8|uint32(phase)) {
		return
	}
	tn.mu.Lock()
	stopped := 0
	for _, p := range [2]*pump{&tn.up, &tn.down} {
		if p.state == parked {
			p.state = ended
			stopped++
		}
	}
	tn.live -= stopped
	last := stopped > 0 && tn.live == 0
	tn.mu.Unlock()
	if last {
		tn.finish()
		return
	}
	tn.up.roomReady()
	tn.down.roomReady()
}

// connFD is the descriptor under c, for a tunnel between connections
// made with Go's net: they stay open until the tunnel is done.
func connFD(c *net.TCPConn) int {
	fd := -1
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}
