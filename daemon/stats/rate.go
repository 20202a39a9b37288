package stats

import (
	"sync/atomic"
	"time"
)

// Rate counts events per second: the figure is the count of the last
// complete second, as HAProxy's "rate" fields show, and Max the highest
// such second. Lock-free: the current second's number and count share one
// atomic word, so a rollover cannot lose an event.
type Rate struct {
	cur  atomic.Uint64 // second<<24 | count in that second
	last atomic.Int64  // count in the previous second
	max  atomic.Int64
}

const rateCountBits = 24

// Add counts one event now.
func (r *Rate) Add() { r.add(uint64(time.Now().Unix())) }

func (r *Rate) add(sec uint64) {
	for {
		old := r.cur.Load()
		oldSec, n := old>>rateCountBits, old&(1<<rateCountBits-1)
		if oldSec == sec {
			if n == 1<<rateCountBits-1 || r.cur.CompareAndSwap(old, old+1) {
				return
			}
			continue
		}
		if r.cur.CompareAndSwap(old, sec<<rateCountBits|1) {
			prev := int64(n)
			if sec != oldSec+1 {
				prev = 0 // an idle second in between
			}
			r.last.Store(prev)
			RaiseMax(&r.max, int64(n))
			return
		}
	}
}

// PerSecond is the count of the last complete second.
func (r *Rate) PerSecond() int64 { return r.perSecond(uint64(time.Now().Unix())) }

func (r *Rate) perSecond(now uint64) int64 {
	cur := r.cur.Load()
	sec, n := cur>>rateCountBits, int64(cur&(1<<rateCountBits-1))
	switch {
	case sec == now:
		return r.last.Load()
	case sec+1 == now:
		return n
	}
	return 0
}

// Max is the highest per-second count of the complete seconds seen.
func (r *Rate) Max() int64 { return r.maxAt(uint64(time.Now().Unix())) }

func (r *Rate) maxAt(now uint64) int64 {
	m := r.max.Load()
	// The last second with events is folded into max only when a later
	// event rolls it over; count it here once it is over.
	cur := r.cur.Load()
	if sec, n := cur>>rateCountBits, int64(cur&(1<<rateCountBits-1)); sec < now {
		m = max(m, n)
	}
	return m
}

// ClearMax resets the maximum.
func (r *Rate) ClearMax() { r.max.Store(0) }

// avgSamples is the window of the sliding averages, as HAProxy's 1024.
const avgSamples = 1024

// Average is a sliding average over about the last 1024 values (HAProxy's
// swrate): it keeps avgSamples times the average and moves it by each
// value's difference, in one CAS.
type Average struct{ sum atomic.Int64 }

// Add folds a value in.
func (a *Average) Add(v int64) {
	for {
		old := a.sum.Load()
		if a.sum.CompareAndSwap(old, old-(old+avgSamples-1)/avgSamples+v) {
			return
		}
	}
}

// Value is the current average.
func (a *Average) Value() int64 { return (a.sum.Load() + avgSamples - 1) / avgSamples }
