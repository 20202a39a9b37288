package proxy

import (
	"sync"
	"time"

	"sluice/daemon/park"
)

// parkAfter is how long an idle keep-alive connection keeps its goroutine,
// waiting in Go's poller, before it parks in the process's poller
// (park.Poller) and holds no goroutine, no stack and no buffer until the
// client sends again. A client sending request after request never waits
// this long, so the busy path stays as cheap as a plain read; parking at
// once cost 14% of the keep-alive requests per second in bench-http.
// The wait is short because every connection waiting holds a goroutine
// and its stack: with 100 ms, 2,000 keep-alive connections opened one
// after another cost a fresh process 3.7 KB each, with 10 ms 2.4 KB, and
// wrk's requests per second did not change.
const parkAfter = 10 * time.Millisecond

// keepAliveLimit is how long a connection may wait idle for its next
// request: http_keep_alive, else http_request; a stopping generation's
// grace; zero for no limit.
func (s *httpSession) keepAliveLimit() time.Duration {
	t := s.f.Config.Timeouts
	limit := t.HTTPKeepAlive
	if limit == 0 {
		limit = t.HTTPRequest
	}
	if s.f.ctx.Err() != nil {
		limit = s.drainGrace()
	}
	return limit
}

// waitIdle waits for the next request to start arriving: requestRead once
// bytes are buffered, requestNone to close (the client left, or the limit
// passed), requestParked when the session now waits in the poller.
func (s *httpSession) waitIdle() int {
	s.waitEOF, s.waitErr = false, nil
	if s.resumed {
		s.resumed = false
		return s.look()
	}
	f := s.f
	s.idleSince = time.Now()
	limit := s.keepAliveLimit()
	wait := parkAfter
	if limit > 0 && limit < wait {
		wait = limit
	}
	s.c.SetReadDeadline(s.idleSince.Add(wait))
	s.idle.Store(true)
	if f.ctx.Err() != nil {
		s.c.SetReadDeadline(time.Now().Add(s.drainGrace()))
	}
	err := s.rc.Read(s.readable)
	s.idle.Store(false)
	if err != nil && isTimeout(err) {
		s.c.SetReadDeadline(time.Time{})
		if f.ctx.Err() == nil && (limit == 0 || time.Since(s.idleSince) < limit) {
			return s.park(limit)
		}
		// The limit passed, or a stop woke us: a request that reached the
		// socket meanwhile is served (with connection: close when
		// stopping), not reset.
		err = s.rc.Read(s.tryRead)
		if err == nil && s.empty {
			return requestNone
		}
	}
	if err != nil || s.waitEOF || s.waitErr != nil || len(s.in.Buffered()) == 0 {
		return requestNone
	}
	return requestRead
}

// park registers the connection with the poller (once per session) and
// sets the deadline of this idle period, then parks unless bytes came.
func (s *httpSession) park(limit time.Duration) int {
	p, err := poller()
	if err != nil {
		return requestNone // out of descriptors: let the idle client go
	}
	if s.key == 0 {
		if s.key, err = p.Add(connFD(s.c), s); err != nil {
			return requestNone
		}
	}
	s.mu.Lock()
	s.deadline = time.Time{}
	if limit > 0 {
		s.deadline = s.idleSince.Add(limit)
	}
	if s.f.ctx.Err() != nil {
		s.deadline = time.Now().Add(s.drainGrace()) // stopped since waitIdle looked
	}
	if !s.deadline.IsZero() {
		s.armTimer(time.Until(s.deadline))
	}
	s.mu.Unlock()
	return s.look()
}

// armTimer sets the idle timer to fire in d; under s.mu.
func (s *httpSession) armTimer(d time.Duration) {
	if s.timer == nil {
		s.timer = time.AfterFunc(d, s.expire)
	} else {
		s.timer.Reset(d)
	}
}

// look reads what has arrived without waiting; with nothing, the session
// parks, or closes once its deadline has passed.
func (s *httpSession) look() int {
	for {
		err := s.rc.Read(s.tryRead)
		if err != nil || s.waitEOF || s.waitErr != nil {
			return requestNone
		}
		if !s.empty {
			return requestRead
		}
		s.mu.Lock()
		if s.pending {
			// Readable since the last look: look again.
			s.pending = false
			s.mu.Unlock()
			continue
		}
		if !s.deadline.IsZero() && !time.Now().Before(s.deadline) {
			s.mu.Unlock()
			return requestNone
		}
		s.parked = true
		s.mu.Unlock()
		return requestParked
	}
}

// Ready is called by the poller when the client may have sent something.
func (s *httpSession) Ready(park.Key, park.Event) {
	s.mu.Lock()
	if !s.parked {
		s.pending = true
		s.mu.Unlock()
		return
	}
	s.parked = false
	s.mu.Unlock()
	go s.resume()
}

// expire runs on the idle timer: a parked session past its deadline is
// resumed to close (or to serve a request that has just arrived).
func (s *httpSession) expire() {
	s.mu.Lock()
	if !s.parked || s.deadline.IsZero() {
		s.mu.Unlock()
		return
	}
	if d := time.Until(s.deadline); d > 0 {
		s.armTimer(d) // the deadline moved
		s.mu.Unlock()
		return
	}
	s.parked = false
	s.mu.Unlock()
	go s.resume()
}

func (s *httpSession) resume() {
	s.resumed = true
	s.serve()
}

// stopping runs when the generation stops (a reload): idle connections
// get a short grace for a request already on its way, then close.
func (s *httpSession) stopping() {
	if s.idle.Load() {
		s.c.SetReadDeadline(time.Now().Add(s.drainGrace()))
	}
	s.mu.Lock()
	if s.parked {
		grace := s.drainGrace()
		if dl := time.Now().Add(grace); s.deadline.IsZero() || dl.Before(s.deadline) {
			s.deadline = dl
			s.armTimer(grace)
		}
	}
	s.mu.Unlock()
}

// httpSessions is a frontend's list of HTTP sessions, linked through the
// sessions themselves: a context.AfterFunc per session cost about 200
// bytes of each idle connection.
type httpSessions struct {
	mu   sync.Mutex
	head *httpSession
}

func (l *httpSessions) add(s *httpSession) {
	l.mu.Lock()
	s.prev, s.next = nil, l.head
	if l.head != nil {
		l.head.prev = s
	}
	l.head = s
	l.mu.Unlock()
}

func (l *httpSessions) remove(s *httpSession) {
	l.mu.Lock()
	if s.prev != nil {
		s.prev.next = s.next
	} else if l.head == s {
		l.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	s.prev, s.next = nil, nil
	l.mu.Unlock()
}

// each calls fn for every listed session, under the list's lock.
func (l *httpSessions) each(fn func(*httpSession)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := l.head; s != nil; s = s.next {
		fn(s)
	}
}
