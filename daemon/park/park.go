// Package park watches many sockets for readability with one goroutine,
// so that an idle connection costs no goroutine of its own.
//
// A Poller is an epoll set of sluice's own. The goroutine that drains it
// waits in Go's network poller on the epoll descriptor itself (an epoll
// set is readable while it has events), so nothing blocks a thread.
// Sockets are registered edge-triggered once, for their whole life: a
// wake-up costs no system call to re-arm, the way Go's own poller works.
package park

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"sluice/daemon/busypoll"
	"sluice/daemon/sock"
)

// Event says what a socket may have become.
type Event uint8

const (
	// Readable: bytes, the end of the stream or an error are waiting.
	Readable Event = 1 << iota
	// Writable: the socket has room to send, or failed (registrations
	// made with AddRW only).
	Writable
	// Hangup: the peer has shut its sending half, or the connection
	// failed, so that a reader knows to read on until the end of the
	// stream.
	Hangup
	// Error: the connection failed (with Hangup).
	Error
)

// Waiter is told when its socket may have become readable or writable.
// Ready runs on the poller's goroutine: it must not block, and typically
// starts a goroutine or notes the wake-up. k is the registration the
// event is for, the Key that Add returned: a waiter that is reused for a
// new registration (a pooled session) tells a late event for its old one
// by it.
type Waiter interface {
	Ready(k Key, ev Event)
}

// Key names one registration: a slot and its generation, which makes an
// event already collected for a registration since removed (whose slot a
// new socket may have taken) harmless. The zero Key names none.
type Key uint64

func makeKey(i, gen uint32) Key { return Key(uint64(gen)<<32 | uint64(i+1)) }

func (k Key) slot() (i, gen uint32) { return uint32(k) - 1, uint32(k >> 32) }

// Poller is one epoll set and the goroutine that drains it.
type Poller struct {
	shard Key // the bits a Set adds to this poller's keys
	epfd  int
	rc    syscall.RawConn
	mu    sync.Mutex
	slots []slot
	free  []uint32
	calls []call // the batch being dispatched, on the poller's goroutine
	// dispatching: a batch collected under mu is being told; retired
	// waits for it to end (Retire).
	dispatching       bool
	retired, retired2 []Retiree
	// telling is held while a batch's Ready calls run, for RemoveWait.
	telling sync.Mutex
}

type slot struct {
	gen uint32
	w   Waiter // nil when free
}

// New creates a poller and starts its goroutine, which lives as long as
// the process.
func New() (*Poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile puts the descriptor in Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(epfd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	p := &Poller{epfd: epfd, rc: rc}
	go p.run(f)
	return p, nil
}

// Add registers fd, a socket, for w, to be told when it is readable.
// Events already pending (bytes queued before Add) are reported at once.
// The registration ends when Remove is called, or with the socket's last
// descriptor.
func (p *Poller) Add(fd int, w Waiter) (Key, error) {
	return p.add(fd, w, unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLET)
}

// AddRW is Add for a socket that is also written without blocking: w is
// told as well when it may have room to send again (edge-triggered, so
// after a write that found it full), or finished connecting.
func (p *Poller) AddRW(fd int, w Waiter) (Key, error) {
	return p.add(fd, w, readWrite)
}

// WantRoom extends k, a registration of fd made with Add, to AddRW's, for
// a socket whose write has just found it full. Registering for room
// only then, as HAProxy subscribes to sending, saves a wake-up per
// socket: a socket added while it has room (a connected one) is reported
// ready at once, through the poller's and Go's epoll sets, for nothing.
// An event for room that came meanwhile is reported.
func (p *Poller) WantRoom(k Key, fd int) error {
	ev := unix.EpollEvent{Events: readWrite}
	setKey(&ev, k)
	return os.NewSyscallError("epoll_ctl", unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev))
}

const readWrite = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

func (p *Poller) add(fd int, w Waiter, events uint32) (Key, error) {
	p.mu.Lock()
	var i uint32
	if n := len(p.free); n > 0 {
		i = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		i = uint32(len(p.slots))
		if i+1 >= 1<<shardShift {
			p.mu.Unlock()
			return 0, errors.New("park: too many sockets in one poller")
		}
		p.slots = append(p.slots, slot{})
	}
	s := &p.slots[i]
	s.w = w
	k := makeKey(i, s.gen)
	p.mu.Unlock()
	ev := unix.EpollEvent{Events: events}
	setKey(&ev, k)
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.Remove(k)
		return 0, os.NewSyscallError("epoll_ctl", err)
	}
	return k, nil
}

// Remove ends the registration k: no event collected after it returns is
// reported, but a Ready for one collected just before may still be under
// way or come once, so that a waiter must ignore a late Ready.
// It makes no system call; the socket leaves the epoll set when it is
// closed, and events until then are dropped.
func (p *Poller) Remove(k Key) {
	if k == 0 {
		return
	}
	p.mu.Lock()
	p.remove(k)
	p.mu.Unlock()
}

// remove is Remove under p.mu.
func (p *Poller) remove(k Key) {
	if k == 0 {
		return
	}
	i, gen := k.slot()
	if s := &p.slots[i]; s.gen == gen && s.w != nil {
		s.w = nil
		s.gen++
		p.free = append(p.free, i)
	}
}

// A Retiree is told when a registration it had can report nothing more.
type Retiree interface {
	Retired()
}

// Retire is Remove, and tells r once no Ready for k can come any more:
// at once, unless a batch collected before is being dispatched, then
// after it. Unlike RemoveWait it never waits, so that it may be called
// from a Ready; a waiter that is reused (a pooled session) waits for
// Retired instead.
func (p *Poller) Retire(k Key, r Retiree) {
	p.mu.Lock()
	p.remove(k)
	later := p.dispatching
	if later {
		p.retired = append(p.retired, r)
	}
	p.mu.Unlock()
	if !later {
		r.Retired()
	}
}

// RemoveWait is Remove, then waits for a Ready under way to return, so
// that none comes after it: for a waiter that is reused at once. It must
// not be called from a Ready.
func (p *Poller) RemoveWait(k Key) {
	p.Remove(k)
	p.telling.Lock()
	p.telling.Unlock()
}

// RemoveFD ends the registration k of fd and takes the socket out of the
// epoll set, for a socket that stays open and may be added again.
func (p *Poller) RemoveFD(k Key, fd int) {
	if k == 0 {
		return
	}
	p.Remove(k)
	unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// Len is the number of registrations, for tests and statistics.
func (p *Poller) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.slots) - len(p.free)
}

func (p *Poller) run(keep *os.File) {
	defer keep.Close()
	events := make([]unix.EpollEvent, 256)
	p.calls = make([]call, 0, len(events))
	var werr error
	// Events are dispatched from inside one RawConn.Read, which resets
	// the descriptor's readiness only when it begins: after a batch that
	// did not fill the buffer, the set was empty when looked at, so the
	// goroutine waits in Go's poller at once instead of asking epoll
	// again, and an event arriving meanwhile still wakes it.
	wait := func(fd uintptr) bool {
		for {
			n, err := sock.EpollPoll(int(fd), events)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil:
				werr = err
				return true
			case n == 0:
				return false // park in Go's poller until the set is readable
			}
			busypoll.Touch()
			p.dispatch(events[:n])
			if n < len(events) {
				return false
			}
		}
	}
	if err := p.rc.Read(wait); err != nil {
		return
	}
	// Only a broken descriptor fails epoll_wait; nothing can be watched
	// any more.
	panic(os.NewSyscallError("epoll_wait", werr))
}

// dispatch tells the waiters of a batch of events. They are looked up
// under the lock and told outside it, so that a Ready may add and remove
// registrations itself.
func (p *Poller) dispatch(events []unix.EpollEvent) {
	calls := p.calls[:0]
	p.mu.Lock()
	for _, ev := range events {
		i, gen := getKey(&ev).slot()
		if s := p.slots[i]; s.gen == gen && s.w != nil {
			calls = append(calls, call{s.w, getKey(&ev) | p.shard, event(ev.Events)})
		}
	}
	p.dispatching = true
	p.mu.Unlock()
	p.telling.Lock()
	for i, c := range calls {
		c.w.Ready(c.k, c.ev)
		calls[i] = call{} // keep no waiter alive
	}
	p.telling.Unlock()
	p.mu.Lock()
	p.dispatching = false
	retired := p.retired
	p.retired, p.retired2 = p.retired2[:0], retired
	p.mu.Unlock()
	for i, r := range retired {
		r.Retired()
		retired[i] = nil
	}
}

// call is one Ready to make.
type call struct {
	w  Waiter
	k  Key
	ev Event
}

// event translates epoll's bits; an error or hangup wakes readers and
// writers alike.
func event(e uint32) Event {
	var ev Event
	if e&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ev |= Readable
	}
	if e&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ev |= Writable
	}
	if e&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ev |= Hangup
	}
	if e&unix.EPOLLERR != 0 {
		ev |= Error
	}
	return ev
}

// The 64 bits of epoll's user data are the Fd and Pad fields in
// x/sys/unix's EpollEvent on every Linux architecture.
func setKey(ev *unix.EpollEvent, k Key) {
	ev.Fd, ev.Pad = int32(uint32(k)), int32(uint32(k>>32))
}

func getKey(ev *unix.EpollEvent) Key {
	return Key(uint64(uint32(ev.Pad))<<32 | uint64(uint32(ev.Fd)))
}

// Set spreads sockets over several pollers, by descriptor, so that no one
// goroutine dispatches the wake-ups of every connection of a process that
// runs on many cores.
type Set struct {
	shards []*Poller
}

// A Set's Key carries its poller's index above the slot's 24 bits.
const shardShift = 24

// NewSet starts n pollers (at least one, at most 256).
func NewSet(n int) (*Set, error) {
	n = min(max(n, 1), 256)
	s := &Set{}
	for i := range n {
		p, err := New()
		if err != nil {
			return nil, err
		}
		p.shard = Key(i) << shardShift
		s.shards = append(s.shards, p)
	}
	return s, nil
}

// Add registers fd with one of the pollers; see Poller.Add.
func (s *Set) Add(fd int, w Waiter) (Key, error) {
	return s.add(fd, w, (*Poller).Add)
}

// AddRW registers fd with one of the pollers; see Poller.AddRW.
func (s *Set) AddRW(fd int, w Waiter) (Key, error) {
	return s.add(fd, w, (*Poller).AddRW)
}

func (s *Set) add(fd int, w Waiter, add func(*Poller, int, Waiter) (Key, error)) (Key, error) {
	i := fd % len(s.shards)
	k, err := add(s.shards[i], fd, w)
	if err != nil {
		return 0, err
	}
	return k | Key(i)<<shardShift, nil
}

func (s *Set) shard(k Key) (*Poller, Key) {
	i := int(k>>shardShift) & 0xff
	return s.shards[i], k &^ (0xff << shardShift)
}

// Remove ends the registration k; see Poller.Remove.
func (s *Set) Remove(k Key) {
	if k != 0 {
		p, pk := s.shard(k)
		p.Remove(pk)
	}
}

// WantRoom extends the registration k of fd; see Poller.WantRoom.
func (s *Set) WantRoom(k Key, fd int) error {
	p, pk := s.shard(k)
	return p.WantRoom(pk, fd)
}

// Retire ends the registration k and tells r once it can report nothing
// more; see Poller.Retire. A zero k tells r at once.
func (s *Set) Retire(k Key, r Retiree) {
	if k == 0 {
		r.Retired()
		return
	}
	p, pk := s.shard(k)
	p.Retire(pk, r)
}

// RemoveWait ends the registration k; see Poller.RemoveWait.
func (s *Set) RemoveWait(k Key) {
	if k != 0 {
		p, pk := s.shard(k)
		p.RemoveWait(pk)
	}
}

// RemoveFD ends the registration k of fd and takes the socket out of its
// epoll set; see Poller.RemoveFD.
func (s *Set) RemoveFD(k Key, fd int) {
	if k != 0 {
		p, pk := s.shard(k)
		p.RemoveFD(pk, fd)
	}
}
