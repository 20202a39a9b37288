package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// holdingBackend greets, then holds each connection for hold before closing.
func holdingBackend(t *testing.T, name string, hold time.Duration) *backend {
	b := newBackend(t, name)
	b.handle = func(c net.Conn) {
		defer c.Close()
		fmt.Fprintf(c, "%s\n", name)
		time.Sleep(hold)
	}
	return b
}

func TestServerMaxConnQueues(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	cur, peak := 0, 0
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		mu.Lock()
		cur++
		peak = max(peak, cur)
		mu.Unlock()
		fmt.Fprintf(c, "s\n")
		time.Sleep(150 * time.Millisecond)
		mu.Lock()
		cur--
		mu.Unlock()
		c.Close()
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  timeout { queue = "10s" }
  server "s" {
    address = %q
    maxconn = 2
  }
`, b.addr)))
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, g, err := tryDial(fe, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if g != "s" {
				errs <- fmt.Errorf("greeting %q", g)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if peak > 2 {
		t.Errorf("the server saw %d connections at once, maxconn is 2", peak)
	}
	eventually(t, 2*time.Second, "10 log lines", func() bool { return len(d.logLines(` fe be/s `)) == 10 })
	if n := len(d.logLines(` fe be/s [1-9]\d*/\d+/\d+ `)); n < 7 {
		t.Errorf("%d sessions show queue time Tw > 0, want at least 7 of 10 queued", n)
	}
}

func TestQueueTimeoutFailsCleanly(t *testing.T) {
	t.Parallel()
	b := holdingBackend(t, "s", 2*time.Second)
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  timeout { queue = "300ms" }
  server "s" {
    address = %q
    maxconn = 2
  }
`, b.addr)))
	type result struct {
		greeting string
		err      error
		took     time.Duration
	}
	results := make(chan result, 5)
	for range 5 {
		go func() {
			start := time.Now()
			c, g, err := tryDial(fe, 5*time.Second)
			if c != nil {
				c.Close()
			}
			results <- result{g, err, time.Since(start)}
		}()
	}
	served, failed := 0, 0
	for range 5 {
		r := <-results
		if r.err == nil {
			served++
			continue
		}
		failed++
		// Closed cleanly right after the queue timeout: an EOF, not a hang.
		if !strings.Contains(r.err.Error(), "EOF") || r.took < 250*time.Millisecond || r.took > 1500*time.Millisecond {
			t.Errorf("queued client failed with %v after %v, want EOF after about 300ms", r.err, r.took)
		}
	}
	if served != 2 || failed != 3 {
		t.Errorf("served %d, failed %d; want 2 and 3", served, failed)
	}
	eventually(t, 3*time.Second, "3 sQ log lines", func() bool { return len(d.logLines(` fe be/<NOSRV> \d+/-1/\d+ 0 sQ `)) == 3 })
}

func TestSourcePortRangeBoundsConnections(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	peers := map[string]bool{}
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		mu.Lock()
		peers[c.RemoteAddr().String()] = true
		mu.Unlock()
		fmt.Fprintf(c, "s\n")
		io.Copy(io.Discard, c)
		c.Close()
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  source = "127.0.0.2:40000-40009"
  server "s" { address = %q }
`, b.addr)))
	var held []*client
	for i := range 10 {
		c, _, err := tryDial(fe, 3*time.Second)
		if err != nil {
			t.Fatalf("connection %d of 10: %v", i+1, err)
		}
		held = append(held, c)
	}
	start := time.Now()
	_, _, err := tryDial(fe, 3*time.Second)
	if err == nil {
		t.Fatal("the 11th concurrent connection was served; the range has 10 ports")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the 11th connection took %v to fail; it must fail at once", took)
	}
	d.waitLog(`Server be/s: no free source port in 127\.0\.0\.2:40000-40009 \(10 in use\)`, 2*time.Second)
	d.waitLog(` fe be/s \d+/-1/\d+ 0 RC `, 2*time.Second)
	mu.Lock()
	for p := range peers {
		host, port, _ := net.SplitHostPort(p)
		if host != "127.0.0.2" || port < "40000" || port > "40009" || len(port) != 5 {
			t.Errorf("server saw a connection from %s, outside 127.0.0.2:40000-40009", p)
		}
	}
	if len(peers) != 10 {
		t.Errorf("server saw %d distinct peers, want 10", len(peers))
	}
	mu.Unlock()
	for _, c := range held {
		c.Close()
	}
}

func TestFrontendMaxConnLeavesConnectionsInTheKernelQueue(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "s")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startSluice(t, config(fe, servers(b), "maxconn = 2"))
	c1, _ := dial(t, fe)
	c2, _ := dial(t, fe)
	defer c2.Close()
	// The third connects (the kernel completes the handshake) but is not
	// accepted: it must neither be served nor closed while the others hold.
	c3, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 16)
	n, err := c3.Read(buf)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("third connection over maxconn: read %q, %v; want it left waiting", buf[:n], err)
	}
	c1.Close()
	c3.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err = c3.Read(buf)
	if err != nil || string(buf[:n]) != "s\n" {
		t.Fatalf("after a slot freed, the waiting connection got %q, %v", buf[:n], err)
	}
}

func TestTCPRequestRules(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "s")
	port := freePort(t)
	fe := fmt.Sprintf("127.0.0.1:%d", port)
	d := startSluice(t, fmt.Sprintf(`
frontend "fe" {
  bind            = [":%d"]
  default_backend = "be"
  log             = "global"
  tcp_request "accept" { source = ["127.0.0.5"] }
  tcp_request "reject" { source = ["127.0.0.0/8"] }
}
backend "be" {
  server "s" { address = %q }
}
`, port, b.addr))
	if _, _, err := tryDial(fe, 2*time.Second); err == nil {
		t.Error("a client from 127.0.0.1 was served; 127.0.0.0/8 is rejected")
	}
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}, Timeout: 2 * time.Second}
	c, err := dialer.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "s\n" {
		t.Errorf("the accepted client got %q, %v", buf, err)
	}
	if b.accepted.Load() != 1 {
		t.Errorf("the server saw %d connections, want only the accepted client's", b.accepted.Load())
	}
	d.waitLog(`127\.0\.0\.1:\d+ \[.*\] fe be/<NOSRV> -1/-1/\d+ 0 PR `, 2*time.Second)
}

func TestSourcePoolSpreadsAndBounds(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	perAddr := map[string]int{}
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		mu.Lock()
		perAddr[host]++
		mu.Unlock()
		fmt.Fprintf(c, "s\n")
		io.Copy(io.Discard, c)
		c.Close()
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, fmt.Sprintf(`
source_pool "p" {
  addresses = ["127.0.0.20/30"]
  ports     = "43000-43009"
}
`)+config(fe, fmt.Sprintf(`
  source_pool = "p"
  server "s" { address = %q }
`, b.addr)))
	var held []*client
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := range 40 {
		c, _, err := tryDial(fe, 3*time.Second)
		if err != nil {
			t.Fatalf("connection %d of 40: %v", i+1, err)
		}
		held = append(held, c)
	}
	if _, _, err := tryDial(fe, 3*time.Second); err == nil {
		t.Fatal("the 41st concurrent connection was served; the pool has 4 × 10 pairs")
	}
	d.waitLog(`no free source port in pool p \(4 addresses, ports 43000-43009\) \(40 in use\)`, 2*time.Second)
	mu.Lock()
	defer mu.Unlock()
	for _, a := range []string{"127.0.0.20", "127.0.0.21", "127.0.0.22", "127.0.0.23"} {
		if perAddr[a] != 10 {
			t.Errorf("%s carried %d connections, want 10 (even spread): %v", a, perAddr[a], perAddr)
		}
	}
}

// TestQueueAfterMaxConnAtRunTime: a server cap set at run time (set
// maxconn server) queues the sessions past it, and a queued session does
// not hold up accepting: a connection made while another waits in the
// queue is accepted, and queued, at once. (A TCP session is set up on the
// goroutine that accepted it, which must hand accepting over before it
// waits; the configuration had no cap when it started.)
func TestQueueAfterMaxConnAtRunTime(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, `  timeout { queue = "1s" }`+"\n"+servers(a))
	d := startSluice(t, cfg)
	held, _ := dial(t, fe)
	defer held.Close()
	if out, code := ctl(t, admin, "set maxconn server be/a 1"); code != 0 {
		t.Fatalf("set maxconn server: %s", out)
	}
	// Two more: each waits in the queue for 1 s and is then closed.
	start := time.Now()
	closed := make(chan time.Duration, 2)
	for i := range 2 {
		c, err := net.Dial("tcp", fe)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := io.ReadAll(c)
			if len(b) > 0 || err != nil {
				t.Errorf("queued connection %d: read %q, %v; want a close after timeout queue", i, b, err)
			}
			closed <- time.Since(start)
		}()
		time.Sleep(100 * time.Millisecond)
	}
	for range 2 {
		if took := <-closed; took > 1700*time.Millisecond {
			t.Errorf("a queued connection closed after %v, want about 1 s: it waited to be accepted", took.Round(time.Millisecond))
		}
	}
	eventually(t, 2*time.Second, "2 sQ log lines", func() bool { return len(d.logLines(` fe be/\S+ \d+/-1/\d+ \d+ sQ `)) == 2 })
}
