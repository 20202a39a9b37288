// Command tcp benchmarks sluice against HAProxy (Debian's package) in TCP
// mode, and against no proxy at all, in one run: bulk throughput,
// connection rate, and memory per idle connection. The proxy runs pinned
// to CPU 0 with one thread; this program (clients and servers) to CPU 1.
// The connection rate's clients and server run on one thread with raw
// system calls (rategen.go), so that the proxy, not the generator, is the
// busier CPU.
// sluice and HAProxy take turns for -rounds rounds and each figure is the
// median of its rounds: one run each moved by ±3%.
//
//	go run ./tests/bench/tcp -sluice bin/sluice
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"sluice/daemon/limits"
	"sluice/tests/bench/benchutil"
	"sluice/tests/serve"
)

var (
	sluiceBin = flag.String("sluice", "bin/sluice", "sluice binary")
	haproxy   = flag.String("haproxy", "/usr/sbin/haproxy", "haproxy binary")
	duration  = flag.Duration("d", 5*time.Second, "length of each measurement")
	idleConns = flag.Int("idle", 4000, "idle connections for the memory figure")
	streams   = flag.Int("streams", 4, "parallel bulk streams")
	workers   = flag.Int("workers", 32, "connections under way at once in the connection-rate run")
	only      = flag.String("only", "", "measure only this figure: bulk, rate or idle (for profiling)")
	gen       = flag.String("gen", "loop", "connection-rate generator: loop (one thread, raw system calls) or go (a goroutine per worker, Go's net package)")
	rounds    = flag.Int("rounds", 3, "rounds of sluice and HAProxy in turn; each figure is the median over them")
)

type result struct {
	name           string
	mbps, connRate float64
	idleKB         float64
	// The proxy's processor use during each measurement (1.0 = one core).
	bulkCPU, rateCPU float64
}

func main() {
	flag.Parse()
	if err := limits.SetAffinity([]int{1}); err != nil {
		fmt.Fprintln(os.Stderr, "pinning the load generator:", err)
	}
	limits.RaiseNoFile(1 << 20)
	// The sink reads 256 KiB at a time, as the streams write: with
	// io.Discard's 8 KiB reads the sink, on the load generator's CPU, was
	// the limit rather than the proxy (docs/BENCHMARKS.md).
	sink := loopback(func(c net.Conn) {
		buf := make([]byte, 256<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	})
	var greeter string
	switch *gen {
	case "loop":
		g, err := newGreeter()
		if err != nil {
			panic(err)
		}
		loopGreeter, greeter = g, g.addr
	case "go":
		greeter = loopback(func(c net.Conn) { c.Write([]byte("x")) })
	default:
		fmt.Fprintln(os.Stderr, "-gen: loop or go")
		os.Exit(2)
	}
	holder := loopback(func(c net.Conn) { io.Copy(io.Discard, c) })

	dir, _ := os.MkdirTemp("", "bench-tcp")
	defer os.RemoveAll(dir)
	// The proxies take turns, each going first in every other round
	// (benchutil.InTurn), so that a drift of this machine's speed during
	// the run favours neither; idle memory, which does not drift, is
	// measured in the first round only.
	direct := measure("direct", nil, sink, greeter, holder, false)
	byName := map[string][]result{}
	proxies := []struct {
		name  string
		start func(dir string, sink, greeter, holder string) (*exec.Cmd, [3]string)
	}{{"sluice", startSluice}, {"haproxy", startHAProxy}}
	for round := range *rounds {
		for _, p := range benchutil.InTurn(proxies, round) {
			cmd, fronts := p.start(dir, sink, greeter, holder)
			if cmd == nil {
				continue
			}
			benchutil.WaitListening(fronts[0])
			byName[p.name] = append(byName[p.name], measure(p.name, cmd, fronts[0], fronts[1], fronts[2], round == 0))
			benchutil.Stop(cmd)
		}
	}
	results := []result{direct}
	for _, name := range []string{"sluice", "haproxy"} {
		if rs := byName[name]; len(rs) > 0 {
			results = append(results, medians(rs))
		}
	}
	if s, h := byName["sluice"], byName["haproxy"]; len(s) > 1 && len(h) == len(s) {
		fmt.Println("\nsluice/haproxy by round:")
		for _, f := range []struct {
			name string
			get  func(result) float64
		}{{"throughput", func(r result) float64 { return r.mbps }}, {"connection rate", func(r result) float64 { return r.connRate }}} {
			if f.get(s[0]) == 0 {
				continue // not measured (-only)
			}
			fmt.Printf("  %-16s", f.name)
			for k := range s {
				fmt.Printf(" %.2fx", f.get(s[k])/f.get(h[k]))
			}
			fmt.Println()
		}
	}
	fmt.Printf("\n%-8s %14s %10s %14s %10s %16s\n", "", "MB/s (bulk)", "proxy CPU", "conn/s", "proxy CPU", "KB/idle conn")
	figure := func(v float64, format string) string {
		if v <= 0 {
			return "-"
		}
		return fmt.Sprintf(format, v)
	}
	for _, r := range results {
		fmt.Printf("%-8s %14s %10s %14s %10s %16s\n", r.name, figure(r.mbps, "%.0f"), figure(100*r.bulkCPU, "%.0f%%"),
			figure(r.connRate, "%.0f"), figure(100*r.rateCPU, "%.0f%%"), figure(r.idleKB, "%.2f"))
	}
	if len(results) == 3 {
		s, h := results[1], results[2]
		// A ratio is printed for the figures measured (see -only).
		ratio := func(what string, sv, hv float64) string {
			if !(sv > 0 && hv > 0) { // also NaN: a figure not measured
				return ""
			}
			return fmt.Sprintf(" %s %.2fx", what, sv/hv)
		}
		fmt.Printf("\nsluice/haproxy:%s%s%s\n", ratio("throughput", s.mbps, h.mbps), ratio("connection rate", s.connRate, h.connRate),
			ratio("idle memory per connection", s.idleKB, h.idleKB))
		fmt.Printf("per proxy CPU second:%s%s\n", ratio("throughput", s.mbps/s.bulkCPU, h.mbps/h.bulkCPU),
			ratio("connections", s.connRate/s.rateCPU, h.connRate/h.rateCPU))
	}
}

func loopback(handle func(net.Conn)) string {
	ln, err := serve.Loopback(handle)
	if err != nil {
		panic(err)
	}
	return ln.Addr().String()
}

func startSluice(dir, sink, greeter, holder string) (*exec.Cmd, [3]string) {
	f := [3]string{benchutil.FreeAddr(), benchutil.FreeAddr(), benchutil.FreeAddr()}
	cfg := fmt.Sprintf(`
global {
  maxconn = 5000
  threads = 1
  cpus    = "0"
}
defaults {
  timeout {
    connect = "5s"
    client  = "60s"
    server  = "60s"
  }
}
listen "bulk" {
  bind = [%q]
  server "s" { address = %q }
}
listen "rate" {
  bind = [%q]
  server "s" { address = %q }
}
listen "idle" {
  bind = [%q]
  server "s" { address = %q }
}
`, f[0], sink, f[1], greeter, f[2], holder)
	path := filepath.Join(dir, "sluice.hcl")
	os.WriteFile(path, []byte(cfg), 0o644)
	// --no-master: one process, as HAProxy runs with -db, so that its RSS is
	// the one that holds the connections.
	cmd := exec.Command("taskset", "-c", "0", *sluiceBin, "run", "--no-master", "-f", path)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		return nil, f
	}
	return cmd, f
}

func startHAProxy(dir, sink, greeter, holder string) (*exec.Cmd, [3]string) {
	if _, err := os.Stat(*haproxy); err != nil {
		fmt.Fprintln(os.Stderr, "haproxy not found (apt-get install haproxy): no comparison")
		return nil, [3]string{}
	}
	f := [3]string{benchutil.FreeAddr(), benchutil.FreeAddr(), benchutil.FreeAddr()}
	cfg := fmt.Sprintf(`
global
  maxconn 5000
  nbthread 1
  cpu-map 1/1 0
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bulk
  bind %s
  server s %s
listen rate
  bind %s
  server s %s
listen idle
  bind %s
  server s %s
`, f[0], sink, f[1], greeter, f[2], holder)
	path := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(path, []byte(cfg), 0o644)
	cmd := exec.Command("taskset", "-c", "0", *haproxy, "-db", "-f", path)
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "haproxy:", err)
		return nil, f
	}
	return cmd, f
}

func measure(name string, cmd *exec.Cmd, bulk, rate, idle string, withIdle bool) result {
	r := result{name: name}
	// taskset execs the proxy in place, so the pid is the proxy's.
	pid := 0
	if cmd != nil {
		pid = cmd.Process.Pid
	}
	cpu := func(run func() float64, out *float64) float64 {
		c0, t0 := benchutil.CPUSeconds(pid), time.Now()
		v := run()
		if pid != 0 {
			*out = (benchutil.CPUSeconds(pid) - c0) / time.Since(t0).Seconds()
		}
		return v
	}
	want := func(figure string) bool { return *only == "" || *only == figure }
	// Idle memory first, in a fresh process: after the other two figures
	// it depended on the free heap they had left behind.
	if cmd != nil && withIdle && want("idle") {
		fmt.Fprintf(os.Stderr, "%s: memory per idle connection...\n", name)
		r.idleKB = idleMemory(pid, idle)
	}
	if want("bulk") {
		fmt.Fprintf(os.Stderr, "%s: bulk throughput...\n", name)
		r.mbps = cpu(func() float64 { return throughput(bulk) }, &r.bulkCPU)
	}
	if want("rate") {
		fmt.Fprintf(os.Stderr, "%s: connection rate...\n", name)
		r.connRate = cpu(func() float64 { return connRate(rate) }, &r.rateCPU)
	}
	return r
}

// medians is one result whose figures are the medians of rs's; idle
// memory is the first round's.
func medians(rs []result) result {
	var mbps, connRate, bulkCPU, rateCPU []float64
	for _, r := range rs {
		mbps, connRate = append(mbps, r.mbps), append(connRate, r.connRate)
		bulkCPU, rateCPU = append(bulkCPU, r.bulkCPU), append(rateCPU, r.rateCPU)
	}
	return result{name: rs[0].name, idleKB: rs[0].idleKB,
		mbps: benchutil.Median(mbps), connRate: benchutil.Median(connRate),
		bulkCPU: benchutil.Median(bulkCPU), rateCPU: benchutil.Median(rateCPU)}
}

func throughput(addr string) float64 {
	var total atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(*duration)
	start := time.Now()
	for range *streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, 256<<10)
			for time.Now().Before(deadline) {
				n, err := c.Write(buf)
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(total.Load()) / time.Since(start).Seconds() / 1e6
}

// loopGreeter is the connection-rate server with -gen loop.
var loopGreeter *greeter

// connRate is connections per second through addr, each receiving the
// greeter's byte, with -workers of them under way at a time.
func connRate(addr string) float64 {
	start := time.Now()
	var done, failed int64
	if *gen == "loop" {
		done, failed = connLoop(addr, loopGreeter, *workers, start.Add(*duration))
	} else {
		done, failed = connGoroutines(addr, start.Add(*duration))
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "  %d failed connections\n", failed)
	}
	return float64(done) / time.Since(start).Seconds()
}

func connGoroutines(addr string, deadline time.Time) (int64, int64) {
	var done, failed atomic.Int64
	var wg sync.WaitGroup
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1)
			for time.Now().Before(deadline) {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					failed.Add(1)
					continue
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil {
					failed.Add(1)
				} else {
					done.Add(1)
				}
				c.(*net.TCPConn).SetLinger(0) // keep TIME_WAIT off the client side
				c.Close()
			}
		}()
	}
	wg.Wait()
	return done.Load(), failed.Load()
}

func idleMemory(pid int, addr string) float64 {
	time.Sleep(500 * time.Millisecond)
	before := benchutil.RSSKB(pid)
	var conns []net.Conn
	for range *idleConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "  idle dial:", err)
			break
		}
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // let every session settle
	after := benchutil.RSSKB(pid)
	for _, c := range conns {
		c.Close()
	}
	if len(conns) == 0 {
		return 0
	}
	return (after - before) / float64(len(conns))
}
