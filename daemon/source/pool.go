package source

import (
	"errors"
	"net/netip"
	"sync/atomic"
)

// Pool spreads one server's connections over every (address, port) pair
// of a source pool: each address has its own port allocator, and a new
// connection takes the address with the most free ports (ties rotate), so
// the addresses fill evenly. One Pool serves one server address: the same
// pair can be reused towards another server.
type Pool struct {
	addrs []netip.Addr
	ports []*Ports
	next  atomic.Uint64
}

// NewPool returns a pool over addrs with ports low..high on each.
func NewPool(addrs []netip.Addr, low, high uint16) *Pool {
	p := &Pool{addrs: addrs}
	for range addrs {
		p.ports = append(p.ports, NewPorts(low, high))
	}
	return p
}

// NewSlicedPool returns a pool over one address whose ports are cut in
// slices of n from low, one per slice: a nat pool, where the kernel
// rewrites each slice of local ports to its own pool address, so that
// spreading over the slices spreads over the addresses.
func NewSlicedPool(addr netip.Addr, low uint16, n, slices int) *Pool {
	p := &Pool{}
	for i := range slices {
		lo := int(low) + i*n
		p.addrs = append(p.addrs, addr)
		p.ports = append(p.ports, NewPorts(uint16(lo), uint16(lo+n-1)))
	}
	return p
}

// Size is the number of (address, port) pairs.
func (p *Pool) Size() int { return len(p.addrs) * p.ports[0].Size() }

// InUse is the number of pairs held by connections.
func (p *Pool) InUse() int {
	n := 0
	for _, ps := range p.ports {
		n += ps.InUse()
	}
	return n
}

// InUseBy returns the pairs in use per address, in pool order.
func (p *Pool) InUseBy() []int {
	out := make([]int, len(p.ports))
	for i, ps := range p.ports {
		out[i] = ps.InUse()
	}
	return out
}

// Attempts makes connection attempts through a from the least used
// address of the pool, then the others before giving up; see
// Dialer.Attempts.
func (p *Pool) Attempts(a Attempter) (release func(), err error) {
	n := len(p.addrs)
	start := int(p.next.Add(1) % uint64(n))
	best := -1
	for i := range n {
		j := (start + i) % n
		if best < 0 || p.ports[j].InUse() < p.ports[best].InUse() {
			best = j
		}
	}
	for i := range n {
		j := (best + i) % n
		d := Dialer{Addr: p.addrs[j], Ports: p.ports[j]}
		release, err := d.Attempts(a)
		if errors.Is(err, ErrExhausted) {
			continue
		}
		return release, err
	}
	return nil, ErrExhausted
}
