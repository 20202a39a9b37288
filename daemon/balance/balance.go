// Package balance implements server selection: roundrobin (smooth
// weighted), static-rr, leastconn, first, source hashing (map-based or
// consistent) and random with two choices. Each algorithm is a small type
// holding only its own state; all are safe for concurrent use without locks.
package balance

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"sync/atomic"

	"sluice/daemon/server"
)

// Balancer chooses a server for a new connection. key is the hash of what
// the algorithm hashes (the client address for source); skip is a server to
// avoid, as when a retry is redispatched, or nil. Pick returns nil when no
// server is eligible.
type Balancer interface {
	Pick(key uint64, skip *server.Server) *server.Server
}

// New returns the balancer named algo over servers, in configuration order.
func New(algo, hashType string, servers []*server.Server) (Balancer, error) {
	switch algo {
	case "roundrobin", "static-rr":
		return NewRoundRobin(servers), nil
	case "leastconn":
		return &LeastConn{servers: servers}, nil
	case "first":
		return &First{servers: servers}, nil
	case "random":
		return &Random{servers: servers}, nil
	case "source", "uri", "url_param", "hdr":
		if hashType == "consistent" {
			return NewConsistent(servers), nil
		}
		return &MapBased{servers: servers}, nil
	}
	return nil, fmt.Errorf("unknown balance algorithm %q", algo)
}

// usable reports whether s may be chosen in place of skip.
func usable(s, skip *server.Server) bool { return s != skip && s.Eligible() }

// RoundRobin walks a precomputed smooth weighted sequence (the one nginx
// produces): with weights 5,1,1 it yields a a b a c a a, never bursts.
// Ineligible servers are stepped over.
type RoundRobin struct {
	servers []*server.Server
	order   []int32
	next    atomic.Uint64
}

// NewRoundRobin builds the sequence from the servers' current weights.
func NewRoundRobin(servers []*server.Server) *RoundRobin {
	r := &RoundRobin{servers: servers}
	weights := make([]int, len(servers))
	g := 0
	for i, s := range servers {
		weights[i] = s.Weight()
		g = gcd(g, weights[i])
	}
	if g == 0 {
		return r
	}
	total := 0
	for i := range weights {
		weights[i] /= g
		total += weights[i]
	}
	current := make([]int, len(servers))
	r.order = make([]int32, 0, total)
	for range total {
		best := -1
		for i, w := range weights {
			if w == 0 {
				continue
			}
			current[i] += w
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		r.order = append(r.order, int32(best))
	}
	return r
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Pick returns the next eligible server in the sequence.
func (r *RoundRobin) Pick(_ uint64, skip *server.Server) *server.Server {
	n := uint64(len(r.order))
	if n == 0 {
		return nil
	}
	start := r.next.Add(1) - 1
	for i := range n {
		if s := r.servers[r.order[(start+i)%n]]; usable(s, skip) {
			return s
		}
	}
	return nil
}

// LeastConn picks the server with the fewest connections for its weight;
// ties rotate so that idle servers share new connections evenly.
type LeastConn struct {
	servers []*server.Server
	next    atomic.Uint64
}

// Pick returns the least loaded eligible server.
func (l *LeastConn) Pick(_ uint64, skip *server.Server) *server.Server {
	n := uint64(len(l.servers))
	start := l.next.Add(1)
	var best *server.Server
	var bestLoad, bestWeight int64
	for i := range n {
		s := l.servers[(start+i)%n]
		if !usable(s, skip) {
			continue
		}
		load, w := s.Load()+1, int64(s.Weight())
		// load/w < bestLoad/bestWeight, without division.
		if best == nil || load*bestWeight < bestLoad*w {
			best, bestLoad, bestWeight = s, load, w
		}
	}
	return best
}

// First picks the first server, in configuration order, with a free slot,
// so that the others can be switched off when idle.
type First struct{ servers []*server.Server }

// Pick returns the first eligible server.
func (f *First) Pick(_ uint64, skip *server.Server) *server.Server {
	for _, s := range f.servers {
		if usable(s, skip) {
			return s
		}
	}
	return nil
}

// MapBased maps a key onto the eligible servers by weight: cheap and even,
// but a change in the set of eligible servers moves most keys.
type MapBased struct{ servers []*server.Server }

// Pick returns the server key maps to.
func (m *MapBased) Pick(key uint64, skip *server.Server) *server.Server {
	total := 0
	for _, s := range m.servers {
		if usable(s, skip) {
			total += s.Weight()
		}
	}
	if total == 0 {
		return nil
	}
	t := int(key % uint64(total))
	for _, s := range m.servers {
		if !usable(s, skip) {
			continue
		}
		if t < s.Weight() {
			return s
		}
		t -= s.Weight()
	}
	return nil
}

// pointsPerWeight is how many ring points one unit of weight gets.
const pointsPerWeight = 40

// Consistent places each server on a hash ring in proportion to its weight;
// when a server goes away only its own keys move.
type Consistent struct {
	servers []*server.Server
	points  []point
}

type point struct {
	hash uint64
	idx  int32
}

// NewConsistent builds the ring from the servers' names and weights.
func NewConsistent(servers []*server.Server) *Consistent {
	c := &Consistent{servers: servers}
	for i, s := range servers {
		for j := range s.Weight() * pointsPerWeight {
			c.points = append(c.points, point{Hash([]byte(fmt.Sprintf("%s#%d", s.Name, j))), int32(i)})
		}
	}
	sort.Slice(c.points, func(a, b int) bool { return c.points[a].hash < c.points[b].hash })
	return c
}

// Pick returns the first eligible server at or after key on the ring.
func (c *Consistent) Pick(key uint64, skip *server.Server) *server.Server {
	n := len(c.points)
	start := sort.Search(n, func(i int) bool { return c.points[i].hash >= key })
	for i := range n {
		if s := c.servers[c.points[(start+i)%n].idx]; usable(s, skip) {
			return s
		}
	}
	return nil
}

// Random draws two servers by weight and keeps the less loaded one (the
// "power of two choices"), which avoids herding without shared state.
type Random struct{ servers []*server.Server }

// Pick returns the less loaded of two weighted random draws.
func (r *Random) Pick(_ uint64, skip *server.Server) *server.Server {
	a := r.draw(skip, nil)
	if a == nil {
		return nil
	}
	b := r.draw(skip, a)
	if b == nil {
		return a
	}
	// The draws already follow the weights; compare plain loads.
	if b.Load() < a.Load() {
		return b
	}
	return a
}

func (r *Random) draw(skip, other *server.Server) *server.Server {
	total := 0
	for _, s := range r.servers {
		if s != other && usable(s, skip) {
			total += s.Weight()
		}
	}
	if total == 0 {
		return nil
	}
	t := rand.IntN(total)
	for _, s := range r.servers {
		if s == other || !usable(s, skip) {
			continue
		}
		if t < s.Weight() {
			return s
		}
		t -= s.Weight()
	}
	return nil
}

// Hash is the 64-bit hash sluice uses for keys and ring points: FNV-1a
// followed by a finalizer that spreads nearby inputs over the whole range.
func Hash(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
