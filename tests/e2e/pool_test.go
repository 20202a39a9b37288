package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
)

// topology is three namespaces joined by veth pairs: a client, the
// balancer, and a backend. Addresses are from the benchmark range.
//
//	client 198.18.1.1 -- 198.18.1.2 balancer 198.18.2.1 -- 198.18.2.2 backend
type topology struct {
	client, lb, backend *netns
}

func newTopology(t *testing.T) *topology {
	t.Helper()
	tp := &topology{client: newNetns(t), lb: newNetns(t), backend: newNetns(t)}
	link := func(a *netns, aIf, aAddr string, b *netns, bIf, bAddr string) {
		a.must("ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf)
		a.must("ip", "link", "set", bIf, "netns", b.name)
		a.must("ip", "addr", "add", aAddr, "dev", aIf)
		b.must("ip", "addr", "add", bAddr, "dev", bIf)
		a.must("ip", "link", "set", aIf, "up")
		b.must("ip", "link", "set", bIf, "up")
	}
	for _, n := range []*netns{tp.client, tp.lb, tp.backend} {
		n.must("ip", "link", "set", "lo", "up")
	}
	link(tp.client, "c0", "198.18.1.1/24", tp.lb, "l0", "198.18.1.2/24")
	link(tp.lb, "l1", "198.18.2.1/24", tp.backend, "b0", "198.18.2.2/24")
	return tp
}

// inNetns runs f on an OS thread switched into the namespace: sockets
// made there belong to that namespace for the rest of their life.
func inNetns(t *testing.T, n *netns, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // the thread is left to die, namespace and all
		h, err := vnetns.GetFromName(n.name)
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		if err := vnetns.Set(h); err != nil {
			t.Error(err)
			return
		}
		f()
	}()
	<-done
}

// holder accepts connections and keeps them, counting them per source.
type holder struct {
	mu     sync.Mutex
	bySrc  map[netip.Addr]int
	ports  map[uint16]bool
	conns  []net.Conn
	ln     net.Listener
	badPrt int
}

func newHolder(t *testing.T, n *netns, addr string, lo, hi uint16) *holder {
	h := &holder{bySrc: map[netip.Addr]int{}, ports: map[uint16]bool{}}
	inNetns(t, n, func() {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		h.ln = ln
	})
	if h.ln == nil {
		t.FailNow()
	}
	go func() {
		for {
			c, err := h.ln.Accept()
			if err != nil {
				return
			}
			src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
			h.mu.Lock()
			h.bySrc[src.Addr().Unmap()]++
			if src.Port() < lo || src.Port() > hi {
				h.badPrt++
			}
			h.conns = append(h.conns, c)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(h.close)
	return h
}

func (h *holder) close() {
	h.ln.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
}

func (h *holder) count() (total int, bySrc map[netip.Addr]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	bySrc = map[netip.Addr]int{}
	for a, n := range h.bySrc {
		bySrc[a] = n
		total += n
	}
	return total, bySrc
}

// waitCount waits until the holder has want connections, or returns what
// it has after timeout.
func (h *holder) waitCount(want int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		n, _ := h.count()
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openClients opens n connections from the client namespace to addr.
func openClients(t *testing.T, tp *topology, addr string, n int) []net.Conn {
	t.Helper()
	var conns []net.Conn
	inNetns(t, tp.client, func() {
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Errorf("client connection %d: %v", i, err)
				return
			}
			conns = append(conns, c)
		}
	})
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// poolRun is one source-pool scenario: addresses × 1,000 ports, bound by
// sluice itself or rewritten by nftables.
func poolRun(t *testing.T, addresses []string, nat bool) {
	tp := newTopology(t)
	const perAddr = 1000
	capacity := perAddr * len(addresses)
	holder := newHolder(t, tp.backend, "198.18.2.2:8000", 20000, 20999)

	dir := t.TempDir()
	cfg := filepath.Join(dir, "pool.hcl")
	quoted := `"` + strings.Join(addresses, `", "`) + `"`
	os.WriteFile(cfg, []byte(fmt.Sprintf(`
global {
  maxconn = 9000
}
defaults {
  mode = "tcp"
  timeout {
    connect = "2s"
    client  = "60s"
    server  = "60s"
  }
}
source_pool "p" {
  addresses = [%s]
  ports     = "20000-20999"
  interface = "l1"
  nat       = %t
}
frontend "in" {
  bind            = ["198.18.1.2:80"]
  maxconn         = 9000
  default_backend = "big"
}
backend "big" {
  source_pool = "p"
  server "s" { address = "198.18.2.2:8000" }
}
`, quoted, nat)), 0o644)
	tp.lb.must(sluiceBin, "net", "apply", "-f", cfg)
	t.Cleanup(func() { tp.lb.run(sluiceBin, "net", "remove", "-f", cfg) })
	if nat {
		want := fmt.Sprintf("[sluice/pool_p/%d sluice/postrouting/snat]", capacity)
		if got := fmt.Sprint(natTables(t, tp.lb)); got != want {
			t.Fatalf("nftables in the balancer: %s, want %s", got, want)
		}
	}

	cmd := exec.Command("ip", "netns", "exec", tp.lb.name, sluiceBin, "run", "--no-master", "-f", cfg)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logMu sync.Mutex
	var logText strings.Builder
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			logMu.Lock()
			logText.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if strings.Contains(sc.Text(), "sluice started") {
				once.Do(func() { close(started) })
			}
		}
	}()
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("sluice did not start")
	}

	// Half the capacity first: the addresses fill evenly.
	openClients(t, tp, "198.18.1.2:80", capacity/2)
	if got := holder.waitCount(capacity/2, 30*time.Second); got != capacity/2 {
		t.Fatalf("backend holds %d connections, want %d", got, capacity/2)
	}
	_, bySrc := holder.count()
	if len(bySrc) != len(addresses) {
		t.Errorf("connections came from %d addresses (%v), want %d", len(bySrc), bySrc, len(addresses))
	}
	for a, n := range bySrc {
		if n < perAddr/2-perAddr/20 || n > perAddr/2+perAddr/20 {
			t.Errorf("address %s carries %d of %d connections: not even (%v)", a, n, capacity/2, bySrc)
		}
	}
	// Then up to the capacity, exactly.
	openClients(t, tp, "198.18.1.2:80", capacity-capacity/2)
	if got := holder.waitCount(capacity, 30*time.Second); got != capacity {
		t.Fatalf("backend holds %d connections, want the pool's %d", got, capacity)
	}
	// One more fails cleanly: its client connection is closed at once,
	// nothing more reaches the backend, and the log names the pool.
	extra := openClients(t, tp, "198.18.1.2:80", 1)
	if len(extra) == 1 {
		extra[0].SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := extra[0].Read(make([]byte, 1)); err != io.EOF && !strings.Contains(fmt.Sprint(err), "reset") {
			t.Errorf("the connection over capacity: read %v, want it closed at once", err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	total, bySrc := holder.count()
	if total != capacity {
		t.Errorf("backend holds %d connections after one over capacity, want %d", total, capacity)
	}
	for a, n := range bySrc {
		if n != perAddr {
			t.Errorf("address %s carries %d connections, want %d (%v)", a, n, perAddr, bySrc)
		}
	}
	holder.mu.Lock()
	if holder.badPrt > 0 {
		t.Errorf("%d connections came from a port outside 20000-20999", holder.badPrt)
	}
	holder.mu.Unlock()
	logMu.Lock()
	log := logText.String()
	logMu.Unlock()
	if !strings.Contains(log, "no free source port in") || !strings.Contains(log, "pool p") {
		t.Errorf("no log line names the exhausted pool:\n%s", log)
	}
}

func TestPoolOneAddress(t *testing.T) {
	t.Parallel()
	poolRun(t, []string{"198.18.2.1"}, false)
}

func TestPoolFourAddresses(t *testing.T) {
	t.Parallel()
	poolRun(t, []string{"198.18.2.10", "198.18.2.11", "198.18.2.12", "198.18.2.13"}, false)
}

func TestPoolFourAddressesNAT(t *testing.T) {
	t.Parallel()
	poolRun(t, []string{"198.18.2.10", "198.18.2.11", "198.18.2.12", "198.18.2.13"}, true)
}
