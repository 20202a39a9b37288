// Package server holds the live state of one backend server: health,
// administrative state, weight and connection slots. It is shared by every
// core, updated with atomics, and kept apart from the configuration so that
// it can outlive a configuration generation.
package server

import (
	"sync/atomic"

	"sluice/daemon/stats"
)

// Server is one upstream server and its live state.
type Server struct {
	Backend string
	Name    string
	// Addr is the resolved IP:port connections go to.
	Addr   string
	Backup bool
	// ID is the server's position in its backend, from 1.
	ID int

	weight  atomic.Int32
	maxConn atomic.Int64 // zero: no limit
	up      atomic.Bool  // last health verdict; true when unchecked
	maint   atomic.Bool  // administratively disabled

	Stats stats.Counters
	// Selected counts how often load-balancing chose this server.
	Selected atomic.Int64
}

// New returns a server that is up with the given weight and connection cap.
func New(backend, name, addr string, weight, maxConn int) *Server {
	s := &Server{Backend: backend, Name: name, Addr: addr}
	s.weight.Store(int32(weight))
	s.maxConn.Store(int64(maxConn))
	s.up.Store(true)
	return s
}

// Weight returns the current weight.
func (s *Server) Weight() int { return int(s.weight.Load()) }

// SetWeight changes the weight.
func (s *Server) SetWeight(w int) { s.weight.Store(int32(w)) }

// MaxConn returns the connection cap; zero means none.
func (s *Server) MaxConn() int { return int(s.maxConn.Load()) }

// Up reports whether the last health verdict was good.
func (s *Server) Up() bool { return s.up.Load() }

// SetUp records a health verdict and reports whether it changed.
func (s *Server) SetUp(up bool) bool { return s.up.Swap(up) != up }

// Maint reports whether the server is in maintenance.
func (s *Server) Maint() bool { return s.maint.Load() }

// SetMaint puts the server in or out of maintenance.
func (s *Server) SetMaint(m bool) { s.maint.Store(m) }

// Running reports whether the server may take new connections at all:
// healthy and not in maintenance.
func (s *Server) Running() bool { return s.up.Load() && !s.maint.Load() }

// Eligible reports whether load-balancing may choose it now: running,
// weighted, and below its connection cap.
func (s *Server) Eligible() bool {
	if !s.Running() || s.weight.Load() == 0 {
		return false
	}
	m := s.maxConn.Load()
	return m == 0 || s.Stats.Cur.Load() < m
}

// Acquire takes a connection slot, failing when the server is full.
func (s *Server) Acquire() bool {
	m := s.maxConn.Load()
	for {
		cur := s.Stats.Cur.Load()
		if m > 0 && cur >= m {
			return false
		}
		if s.Stats.Cur.CompareAndSwap(cur, cur+1) {
			s.Stats.Total.Add(1)
			stats.RaiseMax(&s.Stats.Max, cur+1)
			return true
		}
	}
}

// Release returns a slot taken by Acquire.
func (s *Server) Release() { s.Stats.Cur.Add(-1) }

// Load is the current number of connections.
func (s *Server) Load() int64 { return s.Stats.Cur.Load() }
