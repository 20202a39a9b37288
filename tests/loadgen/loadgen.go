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
	return Run("tcp", addr, workers, stop, func(c net.Conn) error {
		line, err := bufio.NewReader(c).ReadString('\n')
		switch {
		case err != nil:
			return fmt.Errorf("reading greeting: %w (got %q)", err, line)
		case want != "" && line != want, line == "\n":
			return fmt.Errorf("greeting %q", line)
		}
		return nil
	})
}

// Run runs workers against addr ("tcp" or "unix" network) until stop is
// closed, each connecting and running exchange (with a 5 s deadline) on
// one connection per request. A request fails when it cannot connect or
// exchange fails.
func Run(network, addr string, workers int, stop <-chan struct{}, exchange func(net.Conn) error) func() Result {
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
				c, err := net.DialTimeout(network, addr, 5*time.Second)
				if err != nil {
					fail(err)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				err = exchange(c)
				c.Close()
				if err != nil {
					fail(err)
				} else {
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
