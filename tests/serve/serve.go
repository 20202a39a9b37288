// Package serve runs the small servers that tests and benchmarks put
// behind sluice.
package serve

import "net"

// Loopback listens on a free loopback port and serves it with Each.
// Closing the listener stops it.
func Loopback(handle func(net.Conn)) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	Each(ln, handle)
	return ln, nil
}

// Each serves every connection ln accepts with handle, each on a
// goroutine of its own, closing it once handle returns, until ln is
// closed.
func Each(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
}
