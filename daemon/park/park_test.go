package park

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type waiter chan Event

func (w waiter) Ready(_ Key, ev Event) { w <- ev }

func socketPair(t *testing.T) (a, b int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func wait(t *testing.T, w waiter, what string) bool {
	t.Helper()
	select {
	case ev := <-w:
		return ev&Hangup != 0
	case <-time.After(2 * time.Second):
		t.Fatalf("no Ready for %s", what)
		return false
	}
}

func quiet(t *testing.T, w waiter, what string) {
	t.Helper()
	select {
	case <-w:
		t.Fatalf("Ready for %s", what)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestReadyOncePerArrival(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketPair(t)
	unix.Write(b, []byte("early"))
	w := make(waiter, 8)
	k, err := p.Add(a, w)
	if err != nil {
		t.Fatal(err)
	}
	if wait(t, w, "bytes queued before Add") {
		t.Error("hangup reported for plain bytes")
	}
	quiet(t, w, "nothing new (edge-triggered)")
	unix.Write(b, []byte("more"))
	wait(t, w, "new bytes")
	unix.Shutdown(b, unix.SHUT_WR)
	if !wait(t, w, "the peer's shutdown") {
		t.Error("hangup not reported for the peer's shutdown")
	}
	p.Remove(k)
	unix.Write(b, []byte("after"))
	quiet(t, w, "a removed registration")
	if n := p.Len(); n != 0 {
		t.Errorf("Len = %d after Remove, want 0", n)
	}
}

// The zero Key (a direction whose registration never happened) ends
// nothing, and the Key of a slot's former owner does not end its new one.
func TestStaleKeys(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	a1, b1 := socketPair(t)
	w1 := make(waiter, 8)
	first, err := p.Add(a1, w1)
	if err != nil {
		t.Fatal(err)
	}
	p.Remove(0)
	unix.Write(b1, []byte("x"))
	wait(t, w1, "the first registration after Remove(0)")

	p.Remove(first)
	a2, b2 := socketPair(t)
	w2 := make(waiter, 8)
	if _, err := p.Add(a2, w2); err != nil {
		t.Fatal(err)
	}
	p.Remove(first)
	unix.Write(b2, []byte("x"))
	wait(t, w2, "the slot's new owner")
}

// A socket taken out with RemoveFD can be added again (by a tunnel after
// an HTTP session that parked it).
func TestRemoveFDAddAgain(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketPair(t)
	k, err := p.Add(a, make(waiter, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Add(a, make(waiter, 1)); err == nil {
		t.Fatal("a socket added twice")
	}
	p.RemoveFD(k, a)
	w := make(waiter, 8)
	if _, err := p.Add(a, w); err != nil {
		t.Fatalf("added again after RemoveFD: %v", err)
	}
	unix.Write(b, []byte("x"))
	wait(t, w, "the new registration")
}

// A Set routes each key back to the poller that holds its socket.
func TestSetShards(t *testing.T) {
	s, err := NewSet(3)
	if err != nil {
		t.Fatal(err)
	}
	type reg struct {
		k    Key
		a, b int
		w    waiter
	}
	var regs []reg
	for range 6 { // descriptors spread over the three pollers
		a, b := socketPair(t)
		w := make(waiter, 8)
		k, err := s.Add(a, w)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, reg{k, a, b, w})
	}
	for i, r := range regs {
		unix.Write(r.b, []byte("x"))
		wait(t, r.w, fmt.Sprintf("socket %d", i))
	}
	s.Remove(regs[0].k)
	s.RemoveFD(regs[1].k, regs[1].a)
	s.Remove(0)
	for i, r := range regs {
		unix.Write(r.b, []byte("y"))
		if i < 2 {
			quiet(t, r.w, fmt.Sprintf("removed socket %d", i))
		} else {
			wait(t, r.w, fmt.Sprintf("socket %d after others were removed", i))
		}
	}
}

func TestWritableAfterFull(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketPair(t)
	w := make(waiter, 64)
	if _, err := p.AddRW(a, w); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, w, "a connected socket"); ev&Writable == 0 || ev&Readable != 0 {
		t.Fatalf("first event %b, want writable only (room to send, nothing to read)", ev)
	}
	quiet(t, w, "nothing new (edge-triggered)")
	fill(t, a)
	quiet(t, w, "a full socket")
	drain(b)
	select {
	case ev := <-w:
		if ev&Writable == 0 {
			t.Fatalf("event %b after the peer read, want writable", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no event once the peer made room")
	}
	unix.Close(b)
	// Events from the peer's reads may still be queued before the close's.
	deadline := time.After(2 * time.Second)
	for {
		select {
		case ev := <-w:
			if ev&Hangup != 0 {
				return
			}
		case <-deadline:
			t.Fatal("no hangup on the peer's close")
		}
	}
}

// fill writes to fd until its send buffer is full; drain reads fd until
// it has nothing queued.
func fill(t *testing.T, fd int) {
	t.Helper()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := unix.Write(fd, chunk); err == unix.EAGAIN {
			return
		} else if err != nil {
			t.Fatal(err)
		}
	}
}

func drain(fd int) {
	chunk := make([]byte, 64<<10)
	for {
		if _, err := unix.Read(fd, chunk); err != nil {
			return
		}
	}
}

func TestWantRoom(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	a, b := socketPair(t)
	w := make(waiter, 64)
	k, err := p.Add(a, w)
	if err != nil {
		t.Fatal(err)
	}
	// Registered for reading only: a socket with room is not reported.
	quiet(t, w, "room on a socket added for reading")
	fill(t, a)
	drain(b)
	quiet(t, w, "room made before WantRoom")

	// Room that came before WantRoom is reported by it...
	if err := p.WantRoom(k, a); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, w, "room made before WantRoom, once asked for"); ev&Writable == 0 || ev&Readable != 0 {
		t.Fatalf("event %b, want writable only", ev)
	}
	// ...and room made after a write found the socket full again.
	fill(t, a)
	quiet(t, w, "a full socket")
	drain(b)
	if ev := nextEvent(t, w, "room after WantRoom"); ev&Writable == 0 {
		t.Fatalf("event %b after the peer read, want writable", ev)
	}
	// Reading is still reported, with the key kept.
	drain(a)
	for len(w) > 0 {
		<-w
	}
	unix.Write(b, []byte("x"))
	if ev := nextEvent(t, w, "bytes after WantRoom"); ev&Readable == 0 {
		t.Fatalf("event %b, want readable", ev)
	}
}

func nextEvent(t *testing.T, w waiter, what string) Event {
	t.Helper()
	select {
	case ev := <-w:
		return ev
	case <-time.After(2 * time.Second):
		t.Fatalf("no Ready for %s", what)
		return 0
	}
}

// keyWaiter records the keys its Ready calls carry.
type keyWaiter chan Key

func (w keyWaiter) Ready(k Key, _ Event) { w <- k }

// Ready carries the Key that Add returned, a Set's shard bits included:
// a pooled waiter tells its current registration's events by it.
func TestReadyCarriesKey(t *testing.T) {
	s, err := NewSet(3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 { // descriptors spread over the three pollers
		a, b := socketPair(t)
		w := make(keyWaiter, 8)
		k, err := s.Add(a, w)
		if err != nil {
			t.Fatal(err)
		}
		unix.Write(b, []byte("x"))
		select {
		case got := <-w:
			if got != k {
				t.Errorf("socket %d: Ready for key %#x, Add returned %#x", i, got, k)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("socket %d: no Ready", i)
		}
	}
}

// batchLog is shared by the waiters of TestRetireAfterBatch.
type batchLog struct {
	mu      sync.Mutex
	entries []string
	p       *Poller
	keys    map[string]Key
	retired bool
}

func (l *batchLog) add(e string) {
	l.mu.Lock()
	l.entries = append(l.entries, e)
	l.mu.Unlock()
}

func (l *batchLog) Retired() { l.add("retired") }

// named is a waiter that logs its Ready calls; the first one of the two
// retires the other's registration from inside its Ready.
type named struct {
	name, other string
	l           *batchLog
}

func (w named) Ready(Key, Event) {
	w.l.add(w.name)
	w.l.mu.Lock()
	first := !w.l.retired
	w.l.retired = true
	k := w.l.keys[w.other]
	w.l.mu.Unlock()
	if first {
		w.l.p.Retire(k, w.l)
	}
}

// gate is a waiter that holds the poller's goroutine in its first Ready
// until released, so that the events that come meanwhile make one batch.
// The first Ready holds whether or not the test is already waiting for
// it: entered is closed, not sent on.
type gate struct {
	entered, release chan struct{}
	first            *sync.Once
}

func (g gate) Ready(Key, Event) {
	g.first.Do(func() {
		close(g.entered)
		<-g.release
	})
}

// A registration retired from inside a Ready may still have an event in
// the batch under way: Retired is told only once that batch is done, so
// that a waiter reused then (a pooled session) gets no late Ready.
func TestRetireAfterBatch(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	g := gate{make(chan struct{}), make(chan struct{}), new(sync.Once)}
	ga, gb := socketPair(t)
	if _, err := p.Add(ga, g); err != nil {
		t.Fatal(err)
	}
	l := &batchLog{p: p, keys: map[string]Key{}}
	var peers []int
	for _, n := range [][2]string{{"one", "two"}, {"two", "one"}} {
		a, b := socketPair(t)
		k, err := p.Add(a, named{n[0], n[1], l})
		if err != nil {
			t.Fatal(err)
		}
		l.keys[n[0]] = k
		peers = append(peers, b)
	}
	unix.Write(gb, []byte("x"))
	select {
	case <-g.entered:
	case <-time.After(2 * time.Second):
		t.Fatal("no Ready for the gate")
	}
	for _, b := range peers {
		unix.Write(b, []byte("x"))
	}
	close(g.release)
	deadline := time.Now().Add(2 * time.Second)
	for {
		l.mu.Lock()
		got := append([]string(nil), l.entries...)
		l.mu.Unlock()
		if len(got) == 3 {
			if got[2] != "retired" {
				t.Fatalf("calls %v: Retired was told before the batch's last Ready", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls %v, want both Ready calls of the batch, then Retired", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Outside a batch, Retired is told at once, and a zero Key retires
// nothing but tells too.
func TestRetireAtOnce(t *testing.T) {
	s, err := NewSet(2)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := socketPair(t)
	k, err := s.Add(a, make(waiter, 1))
	if err != nil {
		t.Fatal(err)
	}
	l := &batchLog{}
	s.Retire(k, l)
	s.Retire(0, l)
	if len(l.entries) != 2 {
		t.Fatalf("Retired told %d times, want 2 at once", len(l.entries))
	}
}
