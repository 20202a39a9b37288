package stats

import (
	"sync"
	"testing"
)

// TestCountersConcurrent opens and closes sessions from many goroutines and
// checks that no count is lost.
func TestCountersConcurrent(t *testing.T) {
	var c Counters
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10000 {
				c.Open()
				c.BytesIn.Add(100)
				c.Close()
			}
		}()
	}
	wg.Wait()
	if c.Total.Load() != 160000 || c.Cur.Load() != 0 || c.BytesIn.Load() != 16000000 || c.Max.Load() < 1 || c.Max.Load() > 16 {
		t.Errorf("total %d, cur %d, bytes %d, max %d", c.Total.Load(), c.Cur.Load(), c.BytesIn.Load(), c.Max.Load())
	}
}

// BenchmarkSessionCountingParallel is what every session costs the
// counters it touches (process, frontend, backend, server) when all cores
// count at once: run with -cpu 1,2 to see how it scales.
func BenchmarkSessionCountingParallel(b *testing.B) {
	var process, frontend, backend, server Counters
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for _, c := range []*Counters{&process, &frontend, &backend, &server} {
				c.Open()
				c.BytesIn.Add(512)
				c.BytesOut.Add(4096)
				c.Close()
			}
		}
	})
}

func TestRate(t *testing.T) {
	var r Rate
	for range 5 {
		r.add(100)
	}
	if got := r.perSecond(100); got != 0 {
		t.Errorf("during the first second: %d, want 0 (no complete second yet)", got)
	}
	if got := r.perSecond(101); got != 5 {
		t.Errorf("the second after: %d, want 5", got)
	}
	for range 3 {
		r.add(101)
	}
	if got := r.perSecond(101); got != 5 {
		t.Errorf("while counting the next: %d, want 5", got)
	}
	r.add(105) // an idle gap
	if got := r.perSecond(105); got != 0 || r.max.Load() != 5 {
		t.Errorf("after a gap: %d (max %d), want 0 and max 5", got, r.max.Load())
	}
	if got := r.perSecond(200); got != 0 {
		t.Errorf("long after: %d", got)
	}
	var quiet Rate
	for range 7 {
		quiet.add(300)
	}
	if got := quiet.maxAt(300); got != 0 {
		t.Errorf("max during the only busy second: %d, want 0 (not complete)", got)
	}
	if got := quiet.maxAt(310); got != 7 {
		t.Errorf("max long after the only busy second: %d, want 7", got)
	}
}

func TestAverageConverges(t *testing.T) {
	var a Average
	for range 10000 {
		a.Add(40)
	}
	if v := a.Value(); v < 39 || v > 40 {
		t.Errorf("average of 40s = %d", v)
	}
	for range 1024 {
		a.Add(100)
	}
	if v := a.Value(); v < 75 || v > 80 { // 1 - 1/e of the way from 40 to 100
		t.Errorf("after 1024 values of 100: %d, want about 78", v)
	}
}
