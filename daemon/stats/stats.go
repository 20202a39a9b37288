// Package stats holds the counters of frontends, backends and servers.
// They are plain atomics, updated by every core at once and read by the
// runtime API; one set covers the whole process.
package stats

import (
	"sync/atomic"
	"time"
)

// Counters are the figures kept for every proxy and server.
type Counters struct {
	Cur          atomic.Int64 // sessions now
	Max          atomic.Int64 // most sessions at once
	Total        atomic.Int64 // sessions ever
	BytesIn      atomic.Int64 // from clients
	BytesOut     atomic.Int64 // to clients
	Denied       atomic.Int64 // refused by rules
	ReqErrors    atomic.Int64 // malformed input from clients (a bad PROXY header)
	ConnErrors   atomic.Int64 // failed server connections
	RespErrors   atomic.Int64 // bad or missing server responses (HTTP)
	Retries      atomic.Int64
	Redispatches atomic.Int64
	QueueCur     atomic.Int64
	QueueMax     atomic.Int64
	ClientAborts atomic.Int64
	ServerAborts atomic.Int64
	// SourceExhausted counts connections refused because no source port was free.
	SourceExhausted atomic.Int64
	// HTTP: requests, and responses by class (1xx to 5xx, then others).
	Requests  atomic.Int64
	Responses [6]atomic.Int64
	// Compressed counts responses compressed by sluice.
	Compressed atomic.Int64
	// SessRate is new sessions per second.
	SessRate Rate
	// Times of the last ~1024 sessions, in milliseconds: waiting in the
	// queue, connecting to the server, and the whole session.
	QTime, CTime, TTime Average
}

// ClearMax resets the maximums (HAProxy's "clear counters").
func (c *Counters) ClearMax() {
	c.Max.Store(c.Cur.Load())
	c.SessRate.ClearMax()
	c.QueueMax.Store(c.QueueCur.Load())
}

// ClearAll resets every cumulative counter and maximum ("clear counters all").
func (c *Counters) ClearAll() {
	c.ClearMax()
	for _, v := range []*atomic.Int64{&c.Total, &c.BytesIn, &c.BytesOut, &c.Denied, &c.ReqErrors, &c.ConnErrors, &c.Retries,
		&c.Redispatches, &c.ClientAborts, &c.ServerAborts, &c.SourceExhausted, &c.Requests, &c.Compressed, &c.RespErrors,
		&c.Responses[0], &c.Responses[1], &c.Responses[2], &c.Responses[3], &c.Responses[4], &c.Responses[5]} {
		v.Store(0)
	}
}

// Timings folds one finished session's timers (milliseconds; negative
// when the step was not reached) into the averages.
func (c *Counters) Timings(queue, connect, total int64) {
	if queue >= 0 {
		c.QTime.Add(queue)
	}
	if connect >= 0 {
		c.CTime.Add(connect)
	}
	c.TTime.Add(total)
}

// Open counts a new session and returns the current count.
func (c *Counters) Open() int64 {
	c.Total.Add(1)
	c.SessRate.Add()
	n := c.Cur.Add(1)
	RaiseMax(&c.Max, n)
	return n
}

// Close counts a session's end.
func (c *Counters) Close() { c.Cur.Add(-1) }

// Enqueue counts a session entering a queue.
func (c *Counters) Enqueue() { RaiseMax(&c.QueueMax, c.QueueCur.Add(1)) }

// Dequeue counts a session leaving a queue.
func (c *Counters) Dequeue() { c.QueueCur.Add(-1) }

// RaiseMax lifts max to n if n is larger.
func RaiseMax(max *atomic.Int64, n int64) {
	for {
		m := max.Load()
		if n <= m || max.CompareAndSwap(m, n) {
			return
		}
	}
}

// Since returns milliseconds since t, the unit of HAProxy's timers.
func Since(t time.Time) int64 { return time.Since(t).Milliseconds() }

// Response counts one response by its status class.
func (c *Counters) Response(status int) {
	i := status/100 - 1
	if i < 0 || i > 4 {
		i = 5
	}
	c.Responses[i].Add(1)
}
