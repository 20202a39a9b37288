// Command http benchmarks sluice against HAProxy (Debian's package) in
// HTTP mode, and against nginx directly, in one run, with wrk: keep-alive
// requests for a small response, keep-alive requests for 64 KB, and a new
// connection per request. Each proxy runs with one thread pinned to CPU 0;
// nginx and wrk share CPU 1. The proxies take turns for -rounds rounds and
// each figure is the median of its rounds: one run each moved by ±4%.
//
//	go run ./tests/bench/http -sluice bin/sluice
//	go run ./tests/bench/http -sluice bin/sluice -origin-cache   # the proxies, not nginx, limit the rate
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
	duration  = flag.Duration("d", 5*time.Second, "length of each wrk run")
	conns     = flag.Int("c", 50, "wrk connections")
	idleConns = flag.Int("idle", 2000, "idle keep-alive connections for the memory figure")
	rounds    = flag.Int("rounds", 3, "rounds of sluice and HAProxy in turn; each figure is the median over them")
	// Without it, nginx opens, stats and closes the file for every
	// request, and nginx and wrk's CPU limits the small keep-alive
	// figure behind either proxy; with it, the proxy does
	// (docs/BENCHMARKS.md, thirteenth session).
	originCache = flag.Bool("origin-cache", false, "let nginx keep its files open (open_file_cache), so that the proxy, not the origin, limits the rate")
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

	// The proxies take turns, sluice first in even rounds and HAProxy in
	// odd ones (benchutil.InTurn).
	byRound := map[string][][]figure{}
	idleKB := map[string]float64{}
	order := []string{"nginx"}
	byRound["nginx"] = [][]figure{measure("nginx", origin, 0)}
	proxies := []proxy{{"sluice", startSluice}, {"haproxy", startHAProxy}}
	for round := range *rounds {
		for _, p := range benchutil.InTurn(proxies, round) {
			cmd, front := p.start(dir, origin)
			if cmd == nil {
				continue
			}
			waitListening(front)
			// Idle memory is taken in a fresh process: after the load
			// runs it read anywhere from 0.6 to 1.5 KB for the same
			// build, depending on the free heap they left behind.
			if round == 0 {
				idleKB[p.name] = idleMemory(cmd.Process.Pid, front)
				order = append(order, p.name)
			}
			byRound[p.name] = append(byRound[p.name], measure(p.name, front, cmd.Process.Pid))
			benchutil.Stop(cmd)
		}
	}
	results := map[string][]figure{}
	for name, rs := range byRound {
		results[name] = medians(rs)
	}
	if s, h := byRound["sluice"], byRound["haproxy"]; len(s) > 1 && len(h) == len(s) {
		fmt.Println("\nsluice/haproxy req/s by round:")
		for i, r := range runs {
			fmt.Printf("  %-20s", r.name)
			for k := range s {
				fmt.Printf(" %.2fx", s[k][i].rps/h[k][i].rps)
			}
			fmt.Println()
		}
	}
	fmt.Printf("\n%-20s", "")
	for _, name := range order {
		fmt.Printf(" %22s", name+" req/s (p99)")
	}
	fmt.Println()
	for i, r := range runs {
		fmt.Printf("%-20s", r.name)
		for _, name := range order {
			f := results[name][i]
			fmt.Printf(" %13.0f (%5.2fms)", f.rps, f.p99ms)
		}
		fmt.Println()
	}
	fmt.Printf("%-20s %22s", "KB per idle conn", "-")
	for _, name := range order[1:] {
		fmt.Printf(" %22.2f", idleKB[name])
	}
	fmt.Println()
	if s, h := results["sluice"], results["haproxy"]; s != nil && h != nil {
		fmt.Println()
		for i, r := range runs {
			fmt.Printf("sluice/haproxy %-20s req/s %.2fx, p99 %.2fms vs %.2fms (p50/p90 %.2f/%.2f vs %.2f/%.2f), proxy CPU %.0f%% vs %.0f%%, req/s per CPU second %.2fx\n",
				r.name+":", s[i].rps/h[i].rps, s[i].p99ms, h[i].p99ms, s[i].p50ms, s[i].p90ms, h[i].p50ms, h[i].p90ms,
				100*s[i].cpu, 100*h[i].cpu, (s[i].rps/s[i].cpu)/(h[i].rps/h[i].cpu))
		}
		fmt.Printf("sluice/haproxy memory per idle keep-alive connection: %.2f KB vs %.2f KB\n", idleKB["sluice"], idleKB["haproxy"])
	}
}

// measure runs wrk for each shape against addr, noting the processor use
// of the proxy whose pid is given (0: none).
func measure(name, addr string, pid int) []figure {
	var out []figure
	for _, r := range runs {
		c0, t0 := benchutil.CPUSeconds(pid), time.Now()
		args := []string{"-c", "1", "wrk", "-t1", "-c" + strconv.Itoa(*conns), "-d" + duration.String(), "--latency"}
		if r.header != "" {
			args = append(args, "-H", r.header)
		}
		args = append(args, "http://"+addr+r.path)
		b, err := exec.Command("taskset", args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "wrk: %v\n%s", err, b)
			os.Exit(1)
		}
		f := parseWrk(string(b))
		if pid != 0 {
			f.cpu = (benchutil.CPUSeconds(pid) - c0) / time.Since(t0).Seconds()
		}
		out = append(out, f)
		if m := regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)|Socket errors: .*`).FindString(string(b)); m != "" {
			fmt.Fprintf(os.Stderr, "%s (%s) %s: %s\n", name, addr, r.name, m)
		}
	}
	return out
}

// medians takes, for each shape, the median of each figure over rounds.
func medians(rounds [][]figure) []figure {
	out := make([]figure, len(runs))
	for i := range runs {
		var rps, p50, p90, p99, cpu []float64
		for _, r := range rounds {
			rps, cpu = append(rps, r[i].rps), append(cpu, r[i].cpu)
			p50, p90, p99 = append(p50, r[i].p50ms), append(p90, r[i].p90ms), append(p99, r[i].p99ms)
		}
		out[i] = figure{benchutil.Median(rps), benchutil.Median(p50), benchutil.Median(p90), benchutil.Median(p99), benchutil.Median(cpu)}
	}
	return out
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

func startSluice(dir, origin string) (*exec.Cmd, string) {
	front := benchutil.FreeAddr()
	cfg := fmt.Sprintf(`
global {
  maxconn = 5000
  threads = 1
  cpus    = "0"
}
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
`, front, origin)
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
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen bench
  bind %s backlog 4096
  server nginx %s
`, front, origin)
	path := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(path, []byte(cfg), 0o644)
	return start(*haproxy, "-f", path), front
}

func start(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	return cmd
}

func waitListening(addr string) {
	if !benchutil.WaitListening(addr) {
		fmt.Fprintln(os.Stderr, "nothing listens on", addr)
		os.Exit(1)
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
