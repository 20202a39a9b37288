// Command http benchmarks sluice against HAProxy (Debian's package) in
// HTTP mode, and against nginx directly, in one run, with wrk: keep-alive
// requests for a small response, keep-alive requests for 64 KB, and a new
// connection per request. Each proxy runs with one thread pinned to CPU 0;
// nginx and wrk share CPU 1. In each of -rounds rounds, every shape runs
// through every target back to back; sluice and HAProxy are compared by
// the median of their per-round ratios, so that the machine's drift in
// speed during a run favours neither.
//
//	go run ./tests/bench/http -sluice bin/sluice
//	go run ./tests/bench/http -sluice bin/sluice -origin-cache   # the proxies, not nginx, limit the rate
//	go run ./tests/bench/http -sluice bin/sluice -busy-polling   # both proxies poll instead of sleeping
//	go run ./tests/bench/http -sluice bin/sluice -poll-before-sleep 50us   # sluice polls while traffic flows
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"sluice/tests/bench/benchutil"
)

var (
	sluiceBin = flag.String("sluice", "bin/sluice", "sluice binary")
	haproxy   = flag.String("haproxy", "/usr/sbin/haproxy", "haproxy binary")
	nginxBin  = flag.String("nginx", "/usr/sbin/nginx", "nginx binary")
	duration  = flag.Duration("d", 2*time.Second, "length of each wrk run")
	conns     = flag.Int("c", 50, "wrk connections")
	idleConns = flag.Int("idle", 2000, "idle keep-alive connections for the memory figure")
	rounds    = flag.Int("rounds", 9, "rounds; in each, every shape runs through nginx, sluice and HAProxy back to back, in turn")
	// Without it, nginx opens, stats and closes the file for every
	// request, and nginx and wrk's CPU limits the small keep-alive
	// figure behind either proxy; with it, the proxy does
	// (docs/BENCHMARKS.md, thirteenth session).
	originCache = flag.Bool("origin-cache", false, "let nginx keep its files open (open_file_cache), so that the proxy, not the origin, limits the rate")
	busyPolling = flag.Bool("busy-polling", false, "both proxies poll instead of sleeping when idle (busy_polling / busy-polling)")
	pollBefore  = flag.String("poll-before-sleep", "", "sluice's poll_before_sleep: auto, off or a duration (default: not set, which is auto; HAProxy has no such setting and runs as configured by default)")
)

type run struct{ name, path, header string }

// proxy is one of the proxies compared, and how to start it.
type proxy struct {
	name  string
	start func(dir, origin string) (*exec.Cmd, string)
}

var runs = []run{
	{"keep-alive, small", "/small.txt", ""},
	{"keep-alive, 64 KB", "/64k.bin", ""},
	{"new connection", "/small.txt", "Connection: close"},
}

// figure is one wrk run: requests per second, wrk's latency percentiles
// (ms) and the proxy's CPU use (share of one CPU).
type figure struct{ rps, p50ms, p90ms, p99ms, cpu float64 }

func main() {
	flag.Parse()
	if *busyPolling && *pollBefore != "" {
		fmt.Fprintln(os.Stderr, "-busy-polling and -poll-before-sleep exclude each other")
		os.Exit(2)
	}
	dir, _ := os.MkdirTemp("", "bench-http")
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "small.txt"), []byte("hello, world\n"), 0o644)
	big := make([]byte, 64<<10)
	rand.Read(big)
	os.WriteFile(filepath.Join(dir, "64k.bin"), big, 0o644)

	origin := benchutil.FreeAddr()
	ng := startNginx(dir, origin)
	defer benchutil.Stop(ng)
	waitListening(origin)

	// Every target runs for the whole benchmark. Idle memory is taken
	// first, in fresh processes: after the load runs it read anywhere
	// from 0.6 to 1.5 KB for the same build, depending on the free heap
	// left behind. Busy-polling proxies would take CPU 0 from each other
	// while idle, so with -busy-polling each runs only for its own runs.
	targets := []*target{{name: "nginx", addr: origin}}
	idleKB := map[string]float64{}
	for _, p := range []proxy{{"sluice", startSluice}, {"haproxy", startHAProxy}} {
		t := &target{name: p.name, start: p.start}
		if !t.run(dir, origin) {
			continue
		}
		idleKB[p.name] = idleMemory(t.pid(), t.addr)
		if *busyPolling {
			t.stop()
		} else {
			defer t.stop()
		}
		targets = append(targets, t)
	}
	for _, t := range targets {
		if t.start == nil || t.cmd != nil { // nginx, or a proxy running
			wrk(t.addr, runs[0], time.Second) // warm up: connections, heaps
		}
	}

	// In every round each shape runs through every target back to back,
	// in an order that alternates (benchutil.InTurn). A virtual machine on
	// a shared host changes speed by 10-15% from one run to the next, as
	// much as the proxies differ: runs moments apart see the most similar
	// machine, so each pair's ratio is what is compared, over many short
	// rounds, and how many rounds each proxy won is shown.
	byRound := map[string][][]figure{} // target, shape, round
	for _, t := range targets {
		byRound[t.name] = make([][]figure, len(runs))
	}
	for round := range *rounds {
		for i, r := range runs {
			for _, t := range benchutil.InTurn(targets, round+i) {
				if t.cmd == nil && t.start != nil {
					t.run(dir, origin)
					wrk(t.addr, runs[0], time.Second)
				}
				byRound[t.name][i] = append(byRound[t.name][i], measure(t, r))
				if *busyPolling && t.start != nil {
					t.stop()
				}
			}
		}
	}

	fmt.Printf("\n%-20s", "")
	for _, t := range targets {
		fmt.Printf(" %22s", t.name+" req/s (p99)")
	}
	fmt.Println()
	for i, r := range runs {
		fmt.Printf("%-20s", r.name)
		for _, t := range targets {
			f := median(byRound[t.name][i])
			fmt.Printf(" %13.0f (%5.2fms)", f.rps, f.p99ms)
		}
		fmt.Println()
	}
	fmt.Printf("%-20s %22s", "KB per idle conn", "-")
	for _, t := range targets[1:] {
		fmt.Printf(" %22.2f", idleKB[t.name])
	}
	fmt.Println()
	s, h := byRound["sluice"], byRound["haproxy"]
	if s == nil || h == nil {
		return
	}
	fmt.Println("\nsluice/haproxy by round (req/s ratio, p99 ratio):")
	for i, r := range runs {
		fmt.Printf("  %-20s", r.name)
		for k := range s[i] {
			fmt.Printf(" %.2f/%.2f", s[i][k].rps/h[i][k].rps, s[i][k].p99ms/h[i][k].p99ms)
		}
		fmt.Println()
	}
	fmt.Println()
	for i, r := range runs {
		pr := paired(s[i], h[i])
		sm, hm := median(s[i]), median(h[i])
		fmt.Printf("sluice/haproxy %-20s req/s %.2fx (ahead in %d of %d rounds), p99 %.2fx (shorter in %d of %d); medians: p99 %.2fms vs %.2fms (p50/p90 %.2f/%.2f vs %.2f/%.2f), proxy CPU %.0f%% vs %.0f%%, req/s per CPU second %.2fx\n",
			r.name+":", pr.rps, pr.rpsAhead, *rounds, pr.p99, pr.p99Shorter, *rounds,
			sm.p99ms, hm.p99ms, sm.p50ms, sm.p90ms, hm.p50ms, hm.p90ms,
			100*sm.cpu, 100*hm.cpu, pr.perCPU)
	}
	fmt.Printf("sluice/haproxy memory per idle keep-alive connection: %.2f KB vs %.2f KB\n", idleKB["sluice"], idleKB["haproxy"])
}

// target is where wrk sends its requests: nginx directly, or a proxy
// (start), running as cmd, whose processor use is noted.
type target struct {
	name, addr string
	start      func(dir, origin string) (*exec.Cmd, string)
	cmd        *exec.Cmd
}

// run starts the proxy and waits until it listens; false when the proxy
// is not installed.
func (t *target) run(dir, origin string) bool {
	cmd, addr := t.start(dir, origin)
	if cmd == nil {
		return false
	}
	waitListening(addr)
	t.cmd, t.addr = cmd, addr
	return true
}

// pid is the running proxy's process, or 0.
func (t *target) pid() int {
	if t.cmd == nil {
		return 0
	}
	return t.cmd.Process.Pid
}

func (t *target) stop() {
	benchutil.Stop(t.cmd)
	t.cmd = nil
}

// measure runs wrk for one shape against t.
func measure(t *target, r run) figure {
	pid := t.pid()
	c0, t0 := benchutil.CPUSeconds(pid), time.Now()
	out := wrk(t.addr, r, *duration)
	f := parseWrk(out)
	if pid != 0 {
		f.cpu = (benchutil.CPUSeconds(pid) - c0) / time.Since(t0).Seconds()
	}
	if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: .*`).FindString(out); m != "" {
		fmt.Fprintf(os.Stderr, "%s (%s) %s: %s\n", t.name, t.addr, r.name, m)
	}
	return f
}

// wrk runs wrk on CPU 1 for d and returns its report.
func wrk(addr string, r run, d time.Duration) string {
	args := []string{"-c", "1", "wrk", "-t1", "-c" + strconv.Itoa(*conns), "-d" + d.String(), "--latency"}
	if r.header != "" {
		args = append(args, "-H", r.header)
	}
	args = append(args, "http://"+addr+r.path)
	b, err := exec.Command("taskset", args...).CombinedOutput()
	if err != nil {
		fatal("wrk: %v\n%s", err, b)
	}
	return string(b)
}

// pairedRatios compares sluice's runs with HAProxy's of the same rounds:
// the median of the per-round ratios, and in how many rounds sluice did
// better.
type pairedRatios struct {
	rps, p99, perCPU     float64
	rpsAhead, p99Shorter int
}

func paired(s, h []figure) pairedRatios {
	var pr pairedRatios
	var rps, p99, perCPU []float64
	for k := range s {
		rps = append(rps, s[k].rps/h[k].rps)
		p99 = append(p99, s[k].p99ms/h[k].p99ms)
		perCPU = append(perCPU, (s[k].rps/s[k].cpu)/(h[k].rps/h[k].cpu))
		if s[k].rps > h[k].rps {
			pr.rpsAhead++
		}
		if s[k].p99ms < h[k].p99ms {
			pr.p99Shorter++
		}
	}
	pr.rps, pr.p99, pr.perCPU = benchutil.Median(rps), benchutil.Median(p99), benchutil.Median(perCPU)
	return pr
}

// median takes the median of each figure over rounds.
func median(rounds []figure) figure {
	var rps, p50, p90, p99, cpu []float64
	for _, r := range rounds {
		rps, cpu = append(rps, r.rps), append(cpu, r.cpu)
		p50, p90, p99 = append(p50, r.p50ms), append(p90, r.p90ms), append(p99, r.p99ms)
	}
	return figure{benchutil.Median(rps), benchutil.Median(p50), benchutil.Median(p90), benchutil.Median(p99), benchutil.Median(cpu)}
}

func parseWrk(s string) figure {
	var f figure
	if m := regexp.MustCompile(`Requests/sec:\s+([\d.]+)`).FindStringSubmatch(s); m != nil {
		f.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	f.p50ms, f.p90ms, f.p99ms = percentile(s, "50"), percentile(s, "90"), percentile(s, "99")
	return f
}

// percentile reads one line of wrk's --latency distribution, in ms.
func percentile(s, p string) float64 {
	m := regexp.MustCompile(`\s` + p + `%\s+([\d.]+)(us|ms|s)`).FindStringSubmatch(s)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "us":
		v /= 1000
	case "s":
		v *= 1000
	}
	return v
}

func startNginx(dir, addr string) *exec.Cmd {
	conf := filepath.Join(dir, "nginx.conf")
	cache := ""
	if *originCache {
		cache = "open_file_cache max=100 inactive=60s;"
	}
	os.WriteFile(conf, fmt.Appendf(nil, `
daemon off;
master_process off;
worker_rlimit_nofile 20000;
user root;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen %[2]s backlog=4096;
    root %[1]s;
    %[3]s
  }
}
`, dir, addr, cache), 0o644)
	return start("taskset", "-c", "1", *nginxBin, "-c", conf, "-p", dir)
}

// pollBeforeSleep is the global setting for -poll-before-sleep, or none.
func pollBeforeSleep() string {
	if *pollBefore == "" {
		return ""
	}
	return fmt.Sprintf("  poll_before_sleep = %q\n", *pollBefore)
}

func startSluice(dir, origin string) (*exec.Cmd, string) {
	front := benchutil.FreeAddr()
	cfg := fmt.Sprintf(`
global {
  maxconn      = 5000
  threads      = 1
  cpus         = "0"
  busy_polling = %t
%s}
defaults {
  mode = "http"
  timeout {
    connect = "5s"
    client  = "60s"
    server  = "60s"
  }
}
listen "bench" {
  bind    = ["%s"]
  backlog = 4096
  server "nginx" { address = "%s" }
}
`, *busyPolling, pollBeforeSleep(), front, origin)
	path := filepath.Join(dir, "sluice.hcl")
	os.WriteFile(path, []byte(cfg), 0o644)
	return start(*sluiceBin, "run", "--no-master", "-f", path), front
}

func startHAProxy(dir, origin string) (*exec.Cmd, string) {
	if _, err := os.Stat(*haproxy); err != nil {
		fmt.Fprintln(os.Stderr, "haproxy not installed (apt-get install haproxy): skipping it")
		return nil, ""
	}
	front := benchutil.FreeAddr()
	cfg := fmt.Sprintf(`
global
  maxconn 5000
  nbthread 1
  cpu-map 1/1 0
  %s
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bench
  bind %s backlog 4096
  server nginx %s
`, map[bool]string{true: "busy-polling"}[*busyPolling], front, origin)
	path := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(path, []byte(cfg), 0o644)
	return start(*haproxy, "-f", path), front
}

// started are the processes running, for fatal to stop.
var started []*exec.Cmd

func start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fatal("%v", err)
	}
	started = append(started, cmd)
	return cmd
}

// fatal stops the processes started and exits: they run for the whole
// benchmark, and deferred stops do not run on os.Exit.
func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	for _, cmd := range started {
		benchutil.Stop(cmd)
	}
	os.Exit(1)
}

func waitListening(addr string) {
	if !benchutil.WaitListening(addr) {
		fatal("nothing listens on %s", addr)
	}
}

// idleMemory opens keep-alive connections that each made one request and
// then wait, and returns the proxy's resident memory per connection.
func idleMemory(pid int, addr string) float64 {
	before := benchutil.RSSKB(pid)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	buf := make([]byte, 4096)
	for range *idleConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "idle connections:", err)
			break
		}
		fmt.Fprint(c, "GET /small.txt HTTP/1.1\r\nHost: bench\r\n\r\n")
		c.Read(buf)
		held = append(held, c)
	}
	time.Sleep(time.Second)
	return (benchutil.RSSKB(pid) - before) / float64(len(held))
}
