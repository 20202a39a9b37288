package proxy

import (
	"context"
	"sync"
)

// Limit counts connections against a maximum that can change at run time
// (set maxconn frontend). Acquire waits while the limit is reached, so a
// full frontend stops accepting and leaves connections in the kernel's
// queue. It is taken once per accepted connection, never per byte.
type Limit struct {
	mu   sync.Mutex
	cur  int
	max  int           // zero: no limit
	free chan struct{} // closed and replaced whenever a slot may have freed
	// waiting counts Acquire calls waiting on free, so that a release
	// with nobody waiting makes no new channel.
	waiting int
}

// NewLimit returns a limit of max; zero means none.
func NewLimit(max int) *Limit { return &Limit{max: max, free: make(chan struct{})} }

// Max is the current maximum; zero means none.
func (l *Limit) Max() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max
}

// SetMax changes the maximum and wakes waiters.
func (l *Limit) SetMax(max int) {
	l.mu.Lock()
	l.max = max
	l.wake()
	l.mu.Unlock()
}

// Acquire takes a slot, waiting until one is free or ctx is done.
func (l *Limit) Acquire(ctx context.Context) bool {
	for {
		l.mu.Lock()
		if l.max == 0 || l.cur < l.max {
			l.cur++
			l.mu.Unlock()
			return true
		}
		free := l.free
		l.waiting++
		l.mu.Unlock()
		select {
		case <-free:
		case <-ctx.Done():
		}
		l.mu.Lock()
		l.waiting--
		l.mu.Unlock()
		if ctx.Err() != nil {
			return false
		}
	}
}

// Release gives a slot back.
func (l *Limit) Release() {
	l.mu.Lock()
	l.cur--
	l.wake()
	l.mu.Unlock()
}

func (l *Limit) wake() {
	if l.waiting == 0 {
		return
	}
	close(l.free)
	l.free = make(chan struct{})
}
