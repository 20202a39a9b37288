package source

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestPortsExhaustAndRecycle(t *testing.T) {
	p := NewPorts(40000, 40009)
	seen := map[uint16]bool{}
	for range 10 {
		port, ok := p.Get()
		if !ok || port < 40000 || port > 40009 || seen[port] {
			t.Fatalf("Get = %d, %v (seen %v)", port, ok, seen)
		}
		seen[port] = true
	}
	if port, ok := p.Get(); ok {
		t.Fatalf("11th Get succeeded with %d", port)
	}
	p.Put(40003)
	p.Put(40003) // a double Put must not free a port twice
	if p.InUse() != 9 {
		t.Fatalf("InUse = %d, want 9", p.InUse())
	}
	if port, ok := p.Get(); !ok || port != 40003 {
		t.Fatalf("Get after Put = %d, %v; want 40003", port, ok)
	}
}

func TestPortsRoundRobin(t *testing.T) {
	p := NewPorts(1000, 1099)
	a, _ := p.Get()
	p.Put(a)
	b, _ := p.Get()
	if a == b {
		t.Errorf("a released port was handed out again at once (%d)", a)
	}
}

func TestPortsConcurrent(t *testing.T) {
	p := NewPorts(1, 200) // spans several words
	var mu sync.Mutex
	seen := map[uint16]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				port, ok := p.Get()
				if !ok {
					t.Error("ran out early")
					return
				}
				mu.Lock()
				if seen[port] {
					t.Errorf("port %d handed out twice", port)
				}
				seen[port] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if _, ok := p.Get(); ok || p.InUse() != 200 {
		t.Errorf("after 200 Gets: InUse %d", p.InUse())
	}
}

func TestDialFromRange(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	d := &Dialer{Addr: netip.MustParseAddr("127.0.0.2"), Ports: NewPorts(41000, 41002)}
	var conns []*net.TCPConn
	var releases []func()
	for range 3 {
		c, release, err := dial(d, ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		la := c.LocalAddr().(*net.TCPAddr)
		if la.IP.String() != "127.0.0.2" || la.Port < 41000 || la.Port > 41002 {
			t.Errorf("local address %s outside 127.0.0.2:41000-41002", la)
		}
		defer c.Close()
		conns = append(conns, c)
		releases = append(releases, release)
	}
	if _, _, err := dial(d, ln.Addr().String()); !errors.Is(err, ErrExhausted) {
		t.Fatalf("4th dial: err = %v, want ErrExhausted", err)
	}
	conns[0].Close()
	releases[0]()
	// We closed first, so the freed port sits in TIME_WAIT towards the same
	// destination; with tcp_tw_reuse (2, loopback, by default) the kernel
	// lets it be reused after one second.
	time.Sleep(1100 * time.Millisecond)
	if _, _, err := dial(d, ln.Addr().String()); err != nil {
		t.Fatalf("dial after release: %v", err)
	}
}

func TestDialAddressOnly(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() { c, _ := ln.Accept(); time.Sleep(100 * time.Millisecond); c.Close() }()
	d := &Dialer{Addr: netip.MustParseAddr("127.0.0.3")}
	c, _, err := dial(d, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ip := c.LocalAddr().(*net.TCPAddr).IP.String(); ip != "127.0.0.3" {
		t.Errorf("local IP %s, want 127.0.0.3", ip)
	}
}

func TestPoolSpreadsAndBounds(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addrs := []netip.Addr{netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12"), netip.MustParseAddr("127.0.0.13")}
	p := NewPool(addrs, 42000, 42003)
	if p.Size() != 12 {
		t.Fatalf("size %d, want 12", p.Size())
	}
	for i := range 12 {
		c, _, err := dial(p, ln.Addr().String())
		if err != nil {
			t.Fatalf("connection %d of 12: %v", i+1, err)
		}
		defer c.Close()
	}
	if _, _, err := dial(p, ln.Addr().String()); !errors.Is(err, ErrExhausted) {
		t.Fatalf("13th: %v, want ErrExhausted", err)
	}
	for i, n := range p.InUseBy() {
		if n != 4 {
			t.Errorf("address %s holds %d connections, want 4 (even spread)", addrs[i], n)
		}
	}
}

// dial connects to raddr with Go's net from a source a chooses.
func dial(a interface {
	Attempts(Attempter) (func(), error)
}, raddr string) (conn *net.TCPConn, release func(), err error) {
	release, err = a.Attempts(attemptFunc(func(b Bind) (err error) {
		conn, err = DialNet(context.Background(), b, raddr, time.Second)
		return err
	}))
	return conn, release, err
}

// attemptFunc is a function used as an Attempter.
type attemptFunc func(Bind) error

func (f attemptFunc) Attempt(b Bind) error { return f(b) }
