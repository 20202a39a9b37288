package busypoll

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cpuDuring is the process's CPU time over d.
func cpuDuring(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	var a, b unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &a)
	time.Sleep(d)
	unix.Getrusage(unix.RUSAGE_SELF, &b)
	used := func(r unix.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return used(b) - used(a)
}

// TestSpinsUntilStopped checks what an operator sees in top: a process
// that busy-polls uses its CPU while idle, and gives it back once
// stopped; meanwhile it still answers on its sockets.
func TestSpinsUntilStopped(t *testing.T) {
	const period = 500 * time.Millisecond
	if idle := cpuDuring(t, period); idle > period/10 {
		t.Fatalf("before starting: %v of CPU in %v", idle, period)
	}
	p, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	// Shared with the tests of other packages on a 2-CPU machine: a
	// spinner gets at least a fair share.
	if busy := cpuDuring(t, period); busy < period/4 {
		p.Stop()
		t.Fatalf("busy polling: only %v of CPU in %v", busy, period)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("a connection while busy polling: %q, %v", buf, err)
	}
	c.Close()

	done := make(chan struct{})
	go func() { p.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	if idle := cpuDuring(t, period); idle > period/10 {
		t.Fatalf("after Stop: %v of CPU in %v", idle, period)
	}
	p.Stop() // twice is harmless
}

// sleepsDuring runs work n times, each followed by a 20 µs timer wait,
// and returns how many times the process's threads went to sleep
// (voluntary context switches) meanwhile. An idle Go thread waiting for a
// short timer sleeps in epoll_wait; a polling one does not.
func sleepsDuring(n int, work func()) int64 {
	var a, b unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &a)
	for range n {
		work()
		time.Sleep(20 * time.Microsecond)
	}
	unix.Getrusage(unix.RUSAGE_SELF, &b)
	return b.Nvcsw - a.Nvcsw
}

// sleepsWithoutPolling is sleepsDuring(n, Touch) before any poller
// runs: the figure polling must cut. A machine on which the threads do
// not sleep between timer waits cannot tell polling from not.
func sleepsWithoutPolling(t *testing.T, n int) int64 {
	t.Helper()
	without := sleepsDuring(n, Touch)
	if without < int64(n)/2 {
		t.Fatalf("without polling the threads slept only %d times in %d timer waits: the test cannot tell", without, n)
	}
	return without
}

// idleAgain checks that p's spinners all sleep and the process uses
// next to no CPU (under a tenth of half a second).
func idleAgain(t *testing.T, p *Poller, when string) {
	t.Helper()
	const period = 500 * time.Millisecond
	if idle := cpuDuring(t, period); idle > period/10 {
		t.Fatalf("%s: %v of CPU in %v, want the process idle", when, idle, period)
	}
	if got := p.asleep.Load(); got != int32(len(p.spinners)) {
		t.Fatalf("%s: %d of %d spinners asleep", when, got, len(p.spinners))
	}
}

// TestWindowPollsOnlyWhileWorkComes checks poll_before_sleep's promise:
// while work keeps coming (Touch), the threads do not go to sleep
// between pieces of it; once it stops, the process is idle again, with
// no CPU used; and work after that wakes the spinners again.
func TestWindowPollsOnlyWhileWorkComes(t *testing.T) {
	const n = 400
	without := sleepsWithoutPolling(t, n)
	// Far longer than a turn of the loop below, even with other tests
	// taking the CPUs.
	p, err := StartWindow(20 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	time.Sleep(time.Millisecond) // the spinners start
	for round := range 2 {
		with := sleepsDuring(n, Touch)
		if with > without/2 {
			t.Fatalf("round %d: polling while work comes, the threads still slept %d times (%d without)", round, with, without)
		}
		time.Sleep(200 * time.Millisecond) // past the window: the spinners sleep
		idleAgain(t, p, fmt.Sprintf("round %d, after the window", round))
	}
	p.Stop()
	if current.Load() != nil {
		t.Fatal("a stopped poller is still the one Touch wakes")
	}
	Touch() // with none: harmless
}

// workShare is a process's CPU time as the governor reads it: the
// spinners' idle turns, plus a share of the threads' time on work that
// the test sets. The real figure depends on what else runs on the
// machine; this one lets the test say how busy the process is.
type workShare struct {
	mu    sync.Mutex
	p     *Poller
	share float64
	work  time.Duration
	since time.Time
}

func (w *workShare) set(share float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.account()
	w.share = share
}

func (w *workShare) account() {
	now := time.Now()
	w.work += time.Duration(w.share * float64(runtime.GOMAXPROCS(0)) * float64(now.Sub(w.since)))
	w.since = now
}

func (w *workShare) cpuTime() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.account()
	var idle int64
	if w.p != nil {
		idle = w.p.idleSpun()
	}
	return int64(w.work) + idle
}

// waitPolling waits up to a second for the governor to turn polling on
// or off.
func waitPolling(t *testing.T, p *Poller, want bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Second); p.polling.Load() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("polling %v after a second, want %v", !want, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBusyPollsOnlyWhileBusy checks poll_before_sleep = "auto": a
// process whose threads are lightly loaded sleeps between requests as it
// would without polling; one whose threads are busy polls between them;
// and once the load falls, it sleeps again and uses no CPU when idle.
func TestBusyPollsOnlyWhileBusy(t *testing.T) {
	const n = 400
	without := sleepsWithoutPolling(t, n)
	load := &workShare{since: time.Now(), share: 0.3}
	p, err := start(20*time.Millisecond, false, true, load.cpuTime)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	load.mu.Lock()
	load.p = p
	load.mu.Unlock()

	time.Sleep(300 * time.Millisecond) // three looks of the governor
	if light := sleepsDuring(n, Touch); p.polling.Load() || light < without/2 {
		t.Fatalf("30%% busy: polling %v, the threads slept %d times (%d without polling)", p.polling.Load(), light, without)
	}

	load.set(0.9)
	waitPolling(t, p, true)
	if busy := sleepsDuring(n, Touch); busy > without/2 {
		t.Fatalf("90%% busy: the threads still slept %d times (%d without polling)", busy, without)
	}
	load.set(0.6) // between the thresholds: polling goes on
	time.Sleep(300 * time.Millisecond)
	if !p.polling.Load() {
		t.Fatal("60% busy: polling stopped; the governor has no hysteresis")
	}

	load.set(0.2)
	waitPolling(t, p, false)
	time.Sleep(100 * time.Millisecond) // the spinners see it
	idleAgain(t, p, "20% busy, once the load fell")
	if light := sleepsDuring(n, Touch); light < without/2 {
		t.Fatalf("20%% busy: the threads slept only %d times (%d without polling): Touch woke the spinners", light, without)
	}
}

// TestIdle checks show info's Idle_pct as an operator reads it: the share
// of the threads' time without work, over about the last second, from
// the process's CPU time when the threads sleep.
func TestIdle(t *testing.T) {
	var p *Poller
	if got := p.Idle(); got != 100 {
		t.Errorf("no meter: Idle %d, want 100", got)
	}
	load := &workShare{since: time.Now(), share: 0.3}
	p = newPoller(0, false, false, load.cpuTime)
	p.startMeter()
	defer p.Stop()
	time.Sleep(250 * time.Millisecond)
	if got := p.Idle(); got < 65 || got > 75 {
		t.Errorf("30%% busy: Idle %d, want about 70", got)
	}
	load.set(0.9)
	deadline := time.Now().Add(4 * time.Second)
	for p.Idle() > 15 {
		if time.Now().After(deadline) {
			t.Fatalf("90%% busy: Idle still %d after 4 s", p.Idle())
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.Stop()
	if got := p.Idle(); got > 15 {
		t.Errorf("stopped: Idle %d, want the last figure", got)
	}
}
