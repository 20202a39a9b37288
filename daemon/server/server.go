// Package server holds the live state of one backend server: health,
// administrative state, weight and connection slots. It is shared by every
// core, updated with atomics, and kept apart from the configuration so that
// it can outlive a configuration generation.
package server

import (
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"sluice/daemon/stats"
)

// Server is one upstream server and its live state.
type Server struct {
	Backend string
	Name    string
	Backup  bool
	// ID is the server's position in its backend, from 1.
	ID int

	addr    atomic.Pointer[address] // resolved IP:port connections go to
	weight  atomic.Int32
	maxConn atomic.Int64 // zero: no limit
	up      atomic.Bool  // last health verdict; true when unchecked
	maint   atomic.Bool  // administratively disabled
	drain   atomic.Bool  // takes no new load-balanced connections

	lastChange atomic.Int64 // unix nanoseconds of the last UP/DOWN change
	downSince  atomic.Int64 // unix nanoseconds; zero while up
	downtime   atomic.Int64 // nanoseconds spent down before downSince
	check      atomic.Pointer[CheckStatus]
	rising     atomic.Int32 // successes so far while going up
	falling    atomic.Int32 // failures so far while going down

	// InitialWeight is the configured weight.
	InitialWeight int
	// Checked is true when a health check runs for the server.
	Checked bool
	// Rise and Fall are the check's thresholds, for "UP 1/3" displays.
	Rise, Fall int
	// ChecksFailed counts failed checks; Downs counts UP to DOWN transitions.
	ChecksFailed atomic.Int64
	Downs        atomic.Int64

	// sessions are the connections established to this server. A map
	// under a mutex, not a sync.Map, whose every Store allocates.
	sessionsMu   sync.Mutex
	sessions     map[Session]struct{}
	sessionsPeak int // most sessions since the map was made

	Stats stats.Counters
	// Selected counts how often load-balancing chose this server.
	Selected atomic.Int64
}

// New returns a server that is up with the given weight and connection cap.
func New(backend, name, addr string, weight, maxConn int) *Server {
	s := &Server{Backend: backend, Name: name}
	s.SetAddr(addr)
	s.weight.Store(int32(weight))
	s.InitialWeight = weight
	s.maxConn.Store(int64(maxConn))
	s.up.Store(true)
	s.lastChange.Store(time.Now().UnixNano())
	return s
}

// Session is an established connection to a server, as the runtime API
// sees it.
type Session interface {
	// Kill ends the session at once.
	Kill()
	// String describes it on one line, for show sess.
	String() string
	// Hold keeps the session from being reused (sessions are pooled)
	// until Release: Sessions holds each while f looks at it outside the
	// lock.
	Hold()
	Release()
}

// Track registers a session until Untrack.
func (s *Server) Track(ss Session) {
	s.sessionsMu.Lock()
	if s.sessions == nil {
		s.sessions = make(map[Session]struct{})
	}
	s.sessions[ss] = struct{}{}
	s.sessionsPeak = max(s.sessionsPeak, len(s.sessions))
	s.sessionsMu.Unlock()
}

// Untrack forgets a session.
func (s *Server) Untrack(ss Session) {
	s.sessionsMu.Lock()
	delete(s.sessions, ss)
	if len(s.sessions) == 0 && s.sessionsPeak > 1024 {
		// A map never shrinks: let the memory of a burst go.
		s.sessions, s.sessionsPeak = nil, 0
	}
	s.sessionsMu.Unlock()
}

// Sessions calls f for each established session, outside the lock (f
// may end the session, which untracks it).
func (s *Server) Sessions(f func(Session)) {
	s.sessionsMu.Lock()
	list := make([]Session, 0, len(s.sessions))
	for ss := range s.sessions {
		ss.Hold()
		list = append(list, ss)
	}
	s.sessionsMu.Unlock()
	for _, ss := range list {
		f(ss)
		ss.Release()
	}
}

// CheckStatus is the last health check's outcome, in HAProxy's codes.
type CheckStatus struct {
	Code     string // L4OK, L4CON, L4TOUT, L7OK, L7RSP, L7TOUT
	Info     string
	Duration time.Duration
}

// SetCheck records a check's outcome and the progress towards a change:
// successes while down, failures while up.
func (s *Server) SetCheck(c CheckStatus, successes, failures int) {
	s.check.Store(&c)
	s.rising.Store(int32(successes))
	s.falling.Store(int32(failures))
}

// Check returns the last check's outcome, or nil.
func (s *Server) Check() *CheckStatus { return s.check.Load() }

// Status is the state HAProxy's stats show: MAINT, DRAIN, UP, DOWN, or
// "UP 1/3" / "DOWN 1/2" while a check streak is under way.
func (s *Server) Status() string {
	switch {
	case s.maint.Load():
		return "MAINT"
	case s.drain.Load():
		return "DRAIN"
	}
	if s.up.Load() {
		if f := int(s.falling.Load()); f > 0 && s.Checked {
			return "UP " + strconv.Itoa(f) + "/" + strconv.Itoa(s.Fall)
		}
		return "UP"
	}
	if r := int(s.rising.Load()); r > 0 && s.Checked {
		return "DOWN " + strconv.Itoa(r) + "/" + strconv.Itoa(s.Rise)
	}
	return "DOWN"
}

// LastChange is when the server last went UP or DOWN.
func (s *Server) LastChange() time.Time { return time.Unix(0, s.lastChange.Load()) }

// Downtime is the total time spent DOWN.
func (s *Server) Downtime() time.Duration {
	d := s.downtime.Load()
	if since := s.downSince.Load(); since != 0 {
		d += time.Now().UnixNano() - since
	}
	return time.Duration(d)
}

// Drain reports whether the server is draining.
func (s *Server) Drain() bool { return s.drain.Load() }

// SetDrain puts the server in or out of drain: no new load-balanced
// connections, those under way go on.
func (s *Server) SetDrain(d bool) { s.drain.Store(d) }

// SetMaxConn changes the connection cap; zero removes it.
func (s *Server) SetMaxConn(n int) { s.maxConn.Store(int64(n)) }

// address is a server's IP:port, and parsed once for the raw sockets of
// TCP sessions.
type address struct {
	text string
	ap   netip.AddrPort // the zero AddrPort when text is not an IP:port
}

// Addr is the IP:port new connections and checks go to.
func (s *Server) Addr() string { return s.addr.Load().text }

// AddrPort is Addr parsed; ok is false when Addr is not an IP:port.
func (s *Server) AddrPort() (ap netip.AddrPort, ok bool) {
	ap = s.addr.Load().ap
	return ap, ap.IsValid()
}

// SetAddr changes the address for new connections (set server addr).
func (s *Server) SetAddr(a string) {
	ap, _ := netip.ParseAddrPort(a)
	s.addr.Store(&address{text: a, ap: ap})
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
func (s *Server) SetUp(up bool) bool {
	if s.up.Swap(up) == up {
		return false
	}
	now := time.Now().UnixNano()
	s.lastChange.Store(now)
	if up {
		if since := s.downSince.Swap(0); since != 0 {
			s.downtime.Add(now - since)
		}
	} else {
		s.downSince.Store(now)
		s.Downs.Add(1)
	}
	return true
}

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
	if !s.Running() || s.drain.Load() || s.weight.Load() == 0 {
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
			s.Stats.SessRate.Add()
			stats.RaiseMax(&s.Stats.Max, cur+1)
			return true
		}
	}
}

// Release returns a slot taken by Acquire.
func (s *Server) Release() { s.Stats.Cur.Add(-1) }

// Load is the current number of connections.
func (s *Server) Load() int64 { return s.Stats.Cur.Load() }
