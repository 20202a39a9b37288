// Package busypoll keeps the process's threads from sleeping while they
// wait for network events, as HAProxy's busy-polling does: on a virtual
// machine, a thread that sleeps in epoll_wait gives its CPU back to the
// host, and waking it again costs an interrupt and tens of microseconds
// of latency. It also measures how busy the threads are (show info's
// Idle_pct), which the CPU time no longer says once they poll.
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
// gone to sleep. StartBusy does the same only while the threads are busy
// anyway (poll_before_sleep = "auto", the default), so that polling never
// turns a lightly loaded process into one that reads as fully busy.
// Measure only measures (poll_before_sleep = "off").
package busypoll

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Poller is a set of running spinners and the meter that watches how
// busy the threads are.
type Poller struct {
	window   time.Duration
	auto     bool // polling follows how busy the threads are
	stopped  atomic.Bool
	polling  atomic.Bool  // false: the spinners sleep and Touch leaves them
	asleep   atomic.Int32 // spinners waiting for Touch
	touched  atomic.Bool  // Touch since a spinner last looked
	epoch    time.Time
	lastWork atomic.Int64 // when a spinner last saw touched, since epoch
	spinners []*spinner
	threads  int // GOMAXPROCS when started
	wg       sync.WaitGroup

	busy    atomic.Uint64 // float64 bits: share of the threads' time on work, about the last second
	done    chan struct{} // closed by Stop, for the meter
	cpuTime func() int64  // processCPU, but for tests
}

type spinner struct {
	file   *os.File
	rc     syscall.RawConn
	asleep atomic.Bool
	// idle is the time spent in turns that found no work, in
	// nanoseconds: CPU time that polling spent rather than requests.
	idle     atomic.Int64
	lastTurn int64 // since epoch; only the spinner's goroutine uses it
	slept    bool  // the spinner slept since its last turn
}

// current is the running poller with spinners, the one Touch wakes.
var current atomic.Pointer[Poller]

// forever is Start's window: the spinners never sleep.
const forever = time.Duration(math.MaxInt64)

// Start starts one spinner per GOMAXPROCS, which spin until Stop.
func Start() (*Poller, error) { return start(forever, true, false, processCPU) }

// StartWindow starts one spinner per GOMAXPROCS, each of which keeps its
// thread polling until window has passed without Touch, then sleeps until
// the next. The process's Touch calls wake this poller until it is stopped.
func StartWindow(window time.Duration) (*Poller, error) {
	return start(window, true, false, processCPU)
}

// StartBusy is StartWindow while the threads are busy: polling turns on
// once the threads spend 75% of their time on work, and off again below
// 50%, so that a lightly loaded process sleeps as it would without. Busy
// threads are the ones whose short sleeps cost the most: on a virtual
// machine, each wake-up costs an interrupt and tens of microseconds, and
// their sleeps last only microseconds.
func StartBusy(window time.Duration) (*Poller, error) {
	return start(window, false, true, processCPU)
}

// Measure starts only the meter: the threads sleep as Go's runtime makes
// them, and Idle says how busy they are.
func Measure() *Poller {
	p := newPoller(0, false, false, processCPU)
	p.startMeter()
	return p
}

// The thresholds of StartBusy, as shares of the threads' time spent on
// work. Between the two, polling stays as it is: a thread that polls
// spends less on each request than one that sleeps and is woken (about
// 13% less here), and measured over 100 ms its share moves by ±0.1.
const (
	pollAbove  = 0.75
	sleepBelow = 0.50
)

// How often the meter looks: often while there is work, rarely when the
// process is idle, so that an idle process still uses no CPU; and over
// how long Idle averages, as HAProxy's Idle_pct does.
const (
	measureEvery     = 100 * time.Millisecond
	measureIdleEvery = time.Second
	idleAverage      = time.Second
)

func newPoller(window time.Duration, polling, auto bool, cpuTime func() int64) *Poller {
	p := &Poller{window: window, auto: auto, epoch: time.Now(), threads: runtime.GOMAXPROCS(0),
		done: make(chan struct{}), cpuTime: cpuTime}
	p.polling.Store(polling)
	return p
}

func start(window time.Duration, polling, auto bool, cpuTime func() int64) (*Poller, error) {
	if window <= 0 {
		return nil, fmt.Errorf("busy polling window %v: must be positive", window)
	}
	p := newPoller(window, polling, auto, cpuTime)
	for range p.threads {
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
			p.spin(s)
		}()
	}
	current.Store(p)
	p.startMeter()
	return p, nil
}

func (p *Poller) startMeter() {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.measure()
	}()
}

// measure keeps Idle up to date and, for StartBusy, turns polling on and
// off by how busy the threads are: their CPU time less what the spinners
// spent finding no work, over the time the threads had. With several
// threads the measure errs low (one spinner takes the touched flag for
// all), so polling starts later, never earlier, than it should.
func (p *Poller) measure() {
	lastCPU, lastIdle, last := p.cpuTime(), p.idleSpun(), time.Now()
	timer := time.NewTimer(measureEvery)
	defer timer.Stop()
	avg := -1.0 // none yet
	for {
		select {
		case <-p.done:
			return
		case <-timer.C:
		}
		cpu, idle, now := p.cpuTime(), p.idleSpun(), time.Now()
		elapsed := now.Sub(last)
		busy := float64(cpu-lastCPU-(idle-lastIdle)) / float64(int64(p.threads)*int64(elapsed))
		busy = min(max(busy, 0), 1)
		lastCPU, lastIdle, last = cpu, idle, now
		if avg < 0 {
			avg = busy
		}
		avg += (busy - avg) * min(1, float64(elapsed)/float64(idleAverage))
		p.busy.Store(math.Float64bits(avg))
		if p.auto {
			p.setPolling(decide(p.polling.Load(), busy))
		}
		if busy < 0.01 {
			timer.Reset(measureIdleEvery)
		} else {
			timer.Reset(measureEvery)
		}
	}
}

// decide says whether the threads should poll, given whether they do and
// the share of their time they spent on work.
func decide(polling bool, busy float64) bool {
	if polling {
		return busy >= sleepBelow
	}
	return busy >= pollAbove
}

// setPolling turns polling on, waking the spinners, or off: they sleep at
// their next turn.
func (p *Poller) setPolling(on bool) {
	if p.polling.Swap(on) == on || !on {
		return
	}
	p.touched.Store(true)
	p.wake()
}

// Idle is the share of the threads' time, in per cent, that they spent
// waiting for work over about the last second, whether asleep or
// polling: HAProxy's Idle_pct. A nil Poller says 100.
func (p *Poller) Idle() int {
	if p == nil {
		return 100
	}
	return int(math.Round(100 * (1 - math.Float64frombits(p.busy.Load()))))
}

// idleSpun is the time all spinners spent in turns that found no work.
func (p *Poller) idleSpun() int64 {
	var sum int64
	for _, s := range p.spinners {
		sum += s.idle.Load()
	}
	return sum
}

// processCPU is the CPU time of all the process's threads so far, in
// nanoseconds.
func processCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

// spin turns while work comes, sleeps once the window has passed since
// the last Touch that a spinner saw (or while polling is off), and turns
// again after Touch. It counts the time of the turns that found no work.
func (p *Poller) spin(s *spinner) {
	window := int64(p.window)
	s.rc.Read(func(fd uintptr) bool {
		if p.stopped.Load() {
			return true
		}
		if s.asleep.Swap(false) {
			p.asleep.Add(-1) // woken other than by Touch
		}
		now := int64(time.Since(p.epoch))
		touched := p.touched.Load()
		if !touched && !s.slept {
			s.idle.Add(now - s.lastTurn)
		}
		s.lastTurn, s.slept = now, false
		switch {
		case !p.polling.Load():
			p.sleep(s)
			return false
		case touched:
			p.touched.Store(false)
			p.lastWork.Store(now)
		case now-p.lastWork.Load() > window:
			p.sleep(s)
			return false
		}
		poke(fd)
		return false
	})
}

// sleep makes s wait for Touch. A Touch from here on pokes the eventfd,
// and the poller keeps that edge for the wait that follows; one that
// falls between the two stores finds nothing to wake, and the next Touch
// does it.
func (p *Poller) sleep(s *spinner) {
	s.slept = true
	p.asleep.Add(1)
	s.asleep.Store(true)
}

// Touch says that work has come: the spinners keep polling for another
// window, and those that have gone to sleep poll again. Under steady work
// it costs four atomic loads, the flag's store once per turn of a spinner
// at most; one load without spinners, two while a StartBusy poller does
// not poll.
func Touch() {
	p := current.Load()
	if p == nil || !p.polling.Load() {
		return
	}
	if !p.touched.Load() {
		p.touched.Store(true)
	}
	if p.asleep.Load() == 0 {
		return
	}
	p.wake()
}

// wake wakes the spinners that sleep.
func (p *Poller) wake() {
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

// Stop ends the spinners and the meter and waits for them: the threads
// sleep again when idle, and Idle keeps its last figure. A nil Poller is
// stopped already.
func (p *Poller) Stop() {
	if p == nil || p.stopped.Swap(true) {
		return
	}
	current.CompareAndSwap(p, nil)
	close(p.done)
	for _, s := range p.spinners {
		s.rc.Control(poke) // wakes the spinner, which sees the flag
	}
	p.wg.Wait()
	for _, s := range p.spinners {
		s.file.Close()
	}
}
