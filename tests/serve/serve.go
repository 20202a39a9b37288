// Package serve runs the small servers that tests and benchmarks put
// behind sluice.
package serve

import "net"

// Loopback listens on a free loopback port and serves every connection
// with handle, each on a goroutine of its own, closing it once handle
// returns. Closing the listener stops it.
func Loopback(handle func(net.Conn)) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); handle(c) }()
		}
	}()
	return ln, nil
}
