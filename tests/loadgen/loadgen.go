// Package loadgen is the load the end-to-end and package tests drive
// through sluice: workers that each open one connection per request,
// read the server's one-line greeting and close, which is where a reload
// that loses accept-queue connections shows.
package loadgen

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Result counts the requests of a run.
type Result struct {
	OK, Failed int64
	First      error // the first failure, or nil
}

// Start runs workers against addr until stop is closed. A request fails
// when it cannot connect or when its greeting is not want (any non-empty
// line when want is ""). The returned function waits for the workers.
func Start(addr string, workers int, want string, stop <-chan struct{}) func() Result {
	var ok, failed atomic.Int64
	var first atomic.Pointer[error]
	fail := func(err error) {
		failed.Add(1)
		first.CompareAndSwap(nil, &err)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					fail(err)
					continue
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				c.Close()
				switch {
				case err != nil:
					fail(fmt.Errorf("reading greeting: %w (got %q)", err, line))
				case want != "" && line != want, line == "\n":
					fail(fmt.Errorf("greeting %q", line))
				default:
					ok.Add(1)
				}
			}
		}()
	}
	return func() Result {
		wg.Wait()
		r := Result{OK: ok.Load(), Failed: failed.Load()}
		if p := first.Load(); p != nil {
			r.First = *p
		}
		return r
	}
}
