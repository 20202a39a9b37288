package backend

import (
	"sync"
	"syscall"
	"time"

	"sluice/daemon/sock"
)

// IdleTimeout is how long an idle server connection is kept for reuse
// (HAProxy's pool-purge-delay).
const IdleTimeout = 5 * time.Second

// peekAfter is the idle time past which a connection is checked for a
// close by the server before reuse.
const peekAfter = 250 * time.Millisecond

// maxIdle caps the idle connections kept per server.
const maxIdle = 1024

// idleList holds one server's idle HTTP connections, newest last: reuse
// takes the most recently used, so that surplus ones age out.
type idleList struct {
	mu    sync.Mutex
	conns []*Conn
	timer *time.Timer
}

// Keep ends the request on c and keeps the connection for reuse by later
// requests, giving the server slot back.
func (c *Conn) Keep() {
	b, s := c.backend, c.Server
	l := b.idle[s]
	c.idleSince = time.Now()
	l.mu.Lock()
	if len(l.conns) >= maxIdle {
		l.mu.Unlock()
		c.Close()
		return
	}
	l.conns = append(l.conns, c)
	if l.timer == nil {
		l.timer = time.AfterFunc(IdleTimeout, l.purge)
	}
	l.mu.Unlock()
	b.Release(s)
}

// Close closes the connection and frees its slot and source port.
func (c *Conn) Close() error {
	var err error
	if c.TCPConn != nil {
		err = c.TCPConn.Close()
	} else {
		err = sock.Close(c.FD)
	}
	c.release()
	c.backend.Release(c.Server)
	return err
}

// take returns the newest idle connection still open, taking a slot on
// its server (already acquired by the caller), or nil.
func (l *idleList) take() *Conn {
	for {
		l.mu.Lock()
		n := len(l.conns)
		if n == 0 {
			l.mu.Unlock()
			return nil
		}
		c := l.conns[n-1]
		l.conns[n-1] = nil
		l.conns = l.conns[:n-1]
		l.mu.Unlock()
		// A server seldom closes a connection within moments of
		// answering on it; past that, look before using it. A request
		// that finds it closed all the same is sent again when it can be
		// (see the HTTP session).
		if idle := time.Since(c.idleSince); idle < peekAfter || (idle < IdleTimeout && c.alive()) {
			return c
		}
		c.discard()
	}
}

// Park ends the request on c but keeps the connection for the session's
// next request (http_reuse "never"): it gives the server slot back.
func (c *Conn) Park() { c.backend.Release(c.Server) }

// Discard closes a parked connection, which holds no server slot.
func (c *Conn) Discard() { c.discard() }

// discard closes an idle connection, which holds no server slot.
func (c *Conn) discard() {
	c.TCPConn.Close()
	c.release()
}

// RawConn is the connection's syscall.RawConn, made once.
func (c *Conn) RawConn() (syscall.RawConn, error) {
	if c.raw == nil {
		rc, err := c.TCPConn.SyscallConn()
		if err != nil {
			return nil, err
		}
		c.raw = rc
	}
	return c.raw, nil
}

// alive peeks at an idle connection without blocking: a server that
// closed it (or sent something unasked) makes it unusable.
func (c *Conn) alive() bool {
	if _, err := c.RawConn(); err != nil {
		return false
	}
	if c.peekFn == nil {
		c.peekFn = c.peek
	}
	c.quiet = false
	err := c.raw.Read(c.peekFn)
	return err == nil && c.quiet
}

// peek runs inside RawConn.Read: it notes whether nothing is queued.
func (c *Conn) peek(fd uintptr) bool {
	_, err := sock.Peek(fd, &c.peekBuf)
	c.quiet = err == syscall.EAGAIN
	return true
}

// purge closes connections idle for longer than IdleTimeout.
func (l *idleList) purge() {
	l.mu.Lock()
	defer l.mu.Unlock()
	cut := 0
	for cut < len(l.conns) && time.Since(l.conns[cut].idleSince) >= IdleTimeout {
		l.conns[cut].discard()
		cut++
	}
	l.conns = append(l.conns[:0], l.conns[cut:]...)
	clear(l.conns[len(l.conns):cap(l.conns)])
	if len(l.conns) == 0 {
		l.timer = nil
		return
	}
	l.timer = time.AfterFunc(IdleTimeout-time.Since(l.conns[0].idleSince), l.purge)
}

// CloseIdle closes every idle connection (when the generation stops).
func (b *Backend) CloseIdle() {
	for _, l := range b.idle {
		l.mu.Lock()
		for _, c := range l.conns {
			c.discard()
		}
		l.conns = nil
		if l.timer != nil {
			l.timer.Stop()
			l.timer = nil
		}
		l.mu.Unlock()
	}
}

// IdleConns counts the idle connections kept for reuse.
func (b *Backend) IdleConns() int {
	n := 0
	for _, l := range b.idle {
		l.mu.Lock()
		n += len(l.conns)
		l.mu.Unlock()
	}
	return n
}
