// Package source chooses the local address and port of server
// connections. With a port range, sluice hands out the ports itself so that
// their number bounds the connections, and exhaustion fails at once instead
// of waiting on the kernel; without one, it binds the address with
// IP_BIND_ADDRESS_NO_PORT so the kernel picks the port at connect time,
// per destination, which keeps the whole ephemeral range usable.
package source

import (
	"context"
	"errors"
	"math/bits"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrExhausted is returned when every port of a range is in use.
var ErrExhausted = errors.New("source port range exhausted")

// Ports is a lock-free allocator over a port range. Ports are handed out
// round-robin, so that a port just released (likely in TIME_WAIT) is the
// last to be used again.
type Ports struct {
	low    uint16
	n      int
	words  []atomic.Uint64 // a set bit is a port in use
	cursor atomic.Uint64
	inUse  atomic.Int64
}

// NewPorts returns an allocator for low..high inclusive.
func NewPorts(low, high uint16) *Ports {
	n := int(high) - int(low) + 1
	return &Ports{low: low, n: n, words: make([]atomic.Uint64, (n+63)/64)}
}

// Size is the number of ports in the range.
func (p *Ports) Size() int { return p.n }

// InUse is the number of ports handed out.
func (p *Ports) InUse() int { return int(p.inUse.Load()) }

// Get takes a free port; ok is false when none is left.
func (p *Ports) Get() (port uint16, ok bool) {
	if int(p.inUse.Load()) >= p.n {
		return 0, false
	}
	start := int(p.cursor.Add(1) % uint64(p.n))
	for i := 0; i < p.n; {
		idx := (start + i) % p.n
		w := &p.words[idx/64]
		old := w.Load()
		bit := uint64(1) << (idx % 64)
		if old&bit != 0 {
			// Skip to the next free bit of this word, if any.
			free := ^old >> (idx % 64)
			if free == 0 || idx%64+bits.TrailingZeros64(free) >= 64 {
				i += 64 - idx%64
			} else {
				i += bits.TrailingZeros64(free)
			}
			continue
		}
		if w.CompareAndSwap(old, old|bit) {
			p.inUse.Add(1)
			p.cursor.Store(uint64(idx))
			return p.low + uint16(idx), true
		}
	}
	return 0, false
}

// Put returns a port taken with Get.
func (p *Ports) Put(port uint16) {
	idx := int(port - p.low)
	w := &p.words[idx/64]
	bit := uint64(1) << (idx % 64)
	for {
		old := w.Load()
		if old&bit == 0 {
			return // not ours; never double-count
		}
		if w.CompareAndSwap(old, old&^bit) {
			p.inUse.Add(-1)
			return
		}
	}
}

// Dialer opens server connections from a chosen source.
type Dialer struct {
	// Addr is the local address; the zero Addr lets the kernel choose.
	Addr netip.Addr
	// Ports, if not nil, is the range ports are taken from.
	Ports *Ports
}

// Bind is how one connection attempt binds its local end.
type Bind struct {
	// Local is the address and port to bind; the zero AddrPort binds
	// nothing and lets the kernel choose.
	Local netip.AddrPort
	// NoPort binds Local's address only (port 0), with
	// IP_BIND_ADDRESS_NO_PORT: the kernel picks the port at connect time,
	// per destination.
	NoPort bool
}

// maxBindTries bounds how many ports one connection attempt tries when
// the kernel refuses them (a port still in TIME_WAIT towards the same
// destination, or taken by another program).
const maxBindTries = 16

func noRelease() {}

// An Attempter makes one connection attempt from b. (An interface, not a
// func: a session passes its own state, where a closure would cost an
// allocation per connection.)
type Attempter interface {
	Attempt(b Bind) error
}

// Attempts makes connection attempts through a, each from a source
// d chooses, until one succeeds, one fails for a reason other than its
// port, or the range is exhausted (ErrExhausted). release must be called
// once the connection is closed, to give its port back.
func (d *Dialer) Attempts(a Attempter) (release func(), err error) {
	if d.Ports == nil {
		b := Bind{}
		if d.Addr.IsValid() {
			b = Bind{Local: netip.AddrPortFrom(d.Addr, 0), NoPort: true}
		}
		return noRelease, a.Attempt(b)
	}
	for range maxBindTries {
		port, ok := d.Ports.Get()
		if !ok {
			return nil, ErrExhausted
		}
		err := a.Attempt(Bind{Local: netip.AddrPortFrom(d.Addr, port)})
		if err == nil {
			return func() { d.Ports.Put(port) }, nil
		}
		d.Ports.Put(port)
		if !errors.Is(err, unix.EADDRINUSE) && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return nil, err
		}
	}
	return nil, ErrExhausted
}

// DialNet makes one connection attempt from b to raddr with Go's net.
func DialNet(ctx context.Context, b Bind, raddr string, timeout time.Duration) (*net.TCPConn, error) {
	nd := net.Dialer{Timeout: timeout, KeepAlive: -1}
	if b.Local.IsValid() {
		nd.LocalAddr = &net.TCPAddr{IP: b.Local.Addr().AsSlice(), Port: int(b.Local.Port())}
		if b.NoPort {
			nd.Control = setsockopt(unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT)
		} else {
			nd.Control = setsockopt(unix.SOL_SOCKET, unix.SO_REUSEADDR)
		}
	}
	c, err := nd.DialContext(ctx, "tcp", raddr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// setsockopt returns a dialer Control that turns on one boolean option.
func setsockopt(level, opt int) func(string, string, syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, 1) })
		if err != nil {
			return err
		}
		return serr
	}
}
