// Package busypoll keeps the process's threads from sleeping while they
// wait for network events, as HAProxy's busy-polling does: on a virtual
// machine, a thread that sleeps in epoll_wait gives its CPU back to the
// host, and waking it again costs an interrupt and tens of microseconds
// of latency.
//
// A spinner is an eventfd in Go's network poller that the spinner makes
// readable again every time it runs, then waits on. The scheduler runs it
// only when nothing else is runnable, and to find it, polls: so the
// thread polls without a timeout instead of sleeping, and sessions that
// are ready run between two turns of the spinner.
//
// Start spins for ever, at the price of a whole CPU per thread even when
// idle (busy_polling). StartWindow spins only while work keeps coming
// (poll_before_sleep): Touch, called where work arrives (a request, a
// server's answer, a connection, a batch of socket events), keeps the
// spinners turning for another window, and wakes them once they have
// gone to sleep.
package busypoll

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Poller is a set of running spinners.
type Poller struct {
	window   time.Duration // zero: spin without end
	stopped  atomic.Bool
	asleep   atomic.Int32 // spinners waiting for Touch
	touched  atomic.Bool  // Touch since a spinner last looked
	epoch    time.Time
	lastWork atomic.Int64 // when a spinner last saw touched, since epoch
	spinners []*spinner
	wg       sync.WaitGroup
}

type spinner struct {
	file   *os.File
	rc     syscall.RawConn
	asleep atomic.Bool
}

// windowed is the running StartWindow poller, the one Touch wakes.
var windowed atomic.Pointer[Poller]

// Start starts one spinner per GOMAXPROCS, which spin until Stop.
func Start() (*Poller, error) { return start(0) }

// StartWindow starts one spinner per GOMAXPROCS, each of which keeps its
// thread polling until window has passed without Touch, then sleeps until
// the next. The process's Touch calls wake this poller until it is stopped.
func StartWindow(window time.Duration) (*Poller, error) {
	if window <= 0 {
		return nil, fmt.Errorf("busy polling window %v: must be positive", window)
	}
	p, err := start(window)
	if err == nil {
		windowed.Store(p)
	}
	return p, err
}

func start(window time.Duration) (*Poller, error) {
	p := &Poller{window: window, epoch: time.Now()}
	for range runtime.GOMAXPROCS(0) {
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			p.Stop()
			return nil, os.NewSyscallError("eventfd", err)
		}
		f := os.NewFile(uintptr(fd), "busy-poll")
		rc, err := f.SyscallConn()
		if err != nil {
			f.Close()
			p.Stop()
			return nil, fmt.Errorf("busy polling: %w", err)
		}
		s := &spinner{file: f, rc: rc}
		p.spinners = append(p.spinners, s)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if window > 0 {
				p.spinWindow(s)
			} else {
				p.spin(s)
			}
		}()
	}
	return p, nil
}

// spin turns until Stop.
func (p *Poller) spin(s *spinner) {
	s.rc.Read(func(fd uintptr) bool {
		if p.stopped.Load() {
			return true
		}
		poke(fd)
		return false
	})
}

// spinWindow turns while work comes, sleeps once the window has passed
// since the last Touch that a spinner saw, and turns again after Touch.
func (p *Poller) spinWindow(s *spinner) {
	window := int64(p.window)
	s.rc.Read(func(fd uintptr) bool {
		if p.stopped.Load() {
			return true
		}
		if s.asleep.Swap(false) {
			p.asleep.Add(-1) // woken other than by Touch
		}
		now := int64(time.Since(p.epoch))
		switch {
		case p.touched.Load():
			p.touched.Store(false)
			p.lastWork.Store(now)
		case now-p.lastWork.Load() > window:
			// Sleep until Touch. A Touch from here on pokes the eventfd,
			// and the poller keeps that edge for the wait below; one that
			// falls between the two stores finds nothing to wake, and the
			// next Touch does it.
			p.asleep.Add(1)
			s.asleep.Store(true)
			return false
		}
		poke(fd)
		return false
	})
}

// Touch says that work has come: the spinners of a StartWindow poller
// keep polling for another window, and those that have gone to sleep
// poll again. Under steady work it costs three atomic loads, the flag's
// store once per turn of a spinner at most; one load without a windowed
// poller.
func Touch() {
	p := windowed.Load()
	if p == nil {
		return
	}
	if !p.touched.Load() {
		p.touched.Store(true)
	}
	if p.asleep.Load() == 0 {
		return
	}
	for _, s := range p.spinners {
		if s.asleep.CompareAndSwap(true, false) {
			p.asleep.Add(-1)
			s.rc.Control(poke)
		}
	}
}

// poke makes the eventfd readable anew. Every write is a new edge for
// Go's edge-triggered poller, so the counter is never read; it cannot
// overflow in practice (2^64-2 writes).
func poke(fd uintptr) {
	unix.Write(int(fd), one)
}

// one is an eventfd increment of 1 (a uint64, little-endian as on amd64
// and arm64), shared so that a turn of a spinner allocates nothing.
var one = []byte{1, 0, 0, 0, 0, 0, 0, 0}

// Stop ends the spinners and waits for them: the threads sleep again
// when idle. A nil Poller is stopped already.
func (p *Poller) Stop() {
	if p == nil || p.stopped.Swap(true) {
		return
	}
	windowed.CompareAndSwap(p, nil)
	for _, s := range p.spinners {
		s.rc.Control(poke) // wakes the spinner, which sees the flag
	}
	p.wg.Wait()
	for _, s := range p.spinners {
		s.file.Close()
	}
}
