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
