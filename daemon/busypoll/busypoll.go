// Package busypoll keeps the process's threads from sleeping while they
// wait for network events, as HAProxy's busy-polling does: on a virtual
// machine, a thread that sleeps in epoll_wait gives its CPU back to the
// host, and waking it again costs an interrupt and tens of microseconds
// of latency. Each spinner keeps Go's scheduler polling the network
// without blocking, at the price of a whole CPU per thread even when
// idle.
//
// A spinner is an eventfd in Go's network poller that the spinner makes
// readable again every time it runs, then waits on. The scheduler runs it
// only when nothing else is runnable, and to find it, polls: so the
// thread polls without a timeout instead of sleeping, and sessions that
// are ready run between two turns of the spinner.
package busypoll

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Poller is a set of running spinners.
type Poller struct {
	stopped atomic.Bool
	files   []*os.File
	raw     []syscall.RawConn
	wg      sync.WaitGroup
}

// Start starts one spinner per GOMAXPROCS.
func Start() (*Poller, error) {
	p := &Poller{}
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
		p.files, p.raw = append(p.files, f), append(p.raw, rc)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			rc.Read(func(fd uintptr) bool {
				if p.stopped.Load() {
					return true
				}
				poke(fd)
				return false
			})
		}()
	}
	return p, nil
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
	for _, rc := range p.raw {
		rc.Control(poke) // wakes the spinner, which sees the flag
	}
	p.wg.Wait()
	for _, f := range p.files {
		f.Close()
	}
}
