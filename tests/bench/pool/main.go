// Command pool measures memory per held connection through a source pool
// at the largest count this machine allows, for sluice and for HAProxy
// (Debian's package) given the same pool, in three network namespaces:
// client, balancer, backend. Run as root: make bench-pool.
//
// Each proxy holds N client and N server connections, 2N descriptors
// under the 20000 per process here; this program holds the other ends.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"sluice/tests/bench/benchutil"
)

var (
	sluiceBin = flag.String("sluice", "bin/sluice", "sluice binary")
	haproxy   = flag.String("haproxy", "/usr/sbin/haproxy", "HAProxy binary")
	addrs     = flag.Int("addresses", 8, "pool addresses")
	perAddr   = flag.Int("ports", 1000, "ports per address")
)

const prefix = "sluicebench"

func sh(args ...string) {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n%s", strings.Join(args, " "), err, out)
		os.Exit(1)
	}
}

func inNS(ns string, args ...string) { sh(append([]string{"ip", "netns", "exec", ns}, args...)...) }

// topology: client 198.18.1.1 - 198.18.1.2 balancer 198.18.2.1 - 198.18.2.2 backend,
// with the pool's addresses 198.18.2.10... on the balancer's backend side.
func setup() func() {
	names := []string{prefix + "-cl", prefix + "-lb", prefix + "-be"}
	cleanup := func() {
		for _, n := range names {
			exec.Command("ip", "netns", "del", n).Run()
		}
	}
	cleanup()
	for _, n := range names {
		sh("ip", "netns", "add", n)
		inNS(n, "ip", "link", "set", "lo", "up")
	}
	link := func(a, aIf, aAddr, b, bIf, bAddr string) {
		inNS(a, "ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf)
		inNS(a, "ip", "link", "set", bIf, "netns", b)
		inNS(a, "ip", "addr", "add", aAddr, "dev", aIf)
		inNS(b, "ip", "addr", "add", bAddr, "dev", bIf)
		inNS(a, "ip", "link", "set", aIf, "up")
		inNS(b, "ip", "link", "set", bIf, "up")
	}
	link(names[0], "c0", "198.18.1.1/24", names[1], "l0", "198.18.1.2/24")
	link(names[1], "l1", "198.18.2.1/24", names[2], "b0", "198.18.2.2/24")
	for i := range *addrs {
		inNS(names[1], "ip", "addr", "add", poolAddr(i)+"/32", "dev", "l1")
	}
	return cleanup
}

func poolAddr(i int) string { return fmt.Sprintf("198.18.2.%d", 10+i) }

// in runs f on a thread inside the namespace: the sockets it makes stay there.
func in(ns string, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			panic(err)
		}
		if err := netns.Set(h); err != nil {
			panic(err)
		}
		f()
	}()
	<-done
}

type result struct {
	name      string
	held      int
	perConnKB float64
	idleKB    float64
}

// run starts a proxy in the balancer namespace, opens n connections
// through it and measures its RSS before and after.
func run(name string, n int, args []string, accepted func() int) result {
	cmd := exec.Command("ip", append([]string{"netns", "exec", prefix + "-lb"}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, name, err)
		return result{name: name}
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// The proxy is the child of ip netns exec, which execs it: same PID.
	pid := cmd.Process.Pid
	time.Sleep(time.Second)
	idle := benchutil.RSSKB(pid)
	start := accepted()
	var conns []net.Conn
	in(prefix+"-cl", func() {
		for i := 0; i < n; i++ {
			c, err := net.DialTimeout("tcp", "198.18.1.2:80", 5*time.Second)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: connection %d: %v\n", name, i, err)
				break
			}
			conns = append(conns, c)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for accepted()-start < len(conns) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // let every session settle
	r := result{name: name, held: accepted() - start, idleKB: idle}
	r.perConnKB = (benchutil.RSSKB(pid) - idle) / float64(r.held)
	for _, c := range conns {
		c.Close()
	}
	return r
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench-pool needs root (network namespaces)")
		os.Exit(2)
	}
	defer setup()()
	n := *addrs * *perAddr
	dir, _ := os.MkdirTemp("", "bench-pool")
	defer os.RemoveAll(dir)

	// The backend holds every connection it is given.
	var mu sync.Mutex
	var accepted int
	var backConns []net.Conn
	in(prefix+"-be", func() {
		ln, err := net.Listen("tcp", "198.18.2.2:8000")
		if err != nil {
			panic(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				accepted++
				backConns = append(backConns, c)
				mu.Unlock()
			}
		}()
	})
	count := func() int { mu.Lock(); defer mu.Unlock(); return accepted }
	release := func() {
		mu.Lock()
		for _, c := range backConns {
			c.Close()
		}
		backConns = nil
		mu.Unlock()
		time.Sleep(time.Second)
	}

	var pool []string
	for i := range *addrs {
		pool = append(pool, fmt.Sprintf("%q", poolAddr(i)))
	}
	sluiceCfg := filepath.Join(dir, "sluice.hcl")
	os.WriteFile(sluiceCfg, fmt.Appendf(nil, `
global {
  maxconn = %d
  threads = 1
}
defaults {
  mode = "tcp"
  log  = "none"
  timeout {
    connect = "5s"
    client  = "300s"
    server  = "300s"
  }
}
source_pool "p" {
  addresses = [%s]
  ports     = "20000-%d"
}
listen "in" {
  bind        = ["198.18.1.2:80"]
  maxconn     = %d
  source_pool = "p"
  server "s" { address = "198.18.2.2:8000" }
}
`, n+10, strings.Join(pool, ", "), 20000+*perAddr-1, n+10), 0o644)

	// HAProxy has no pool: the same server once per pool address, each
	// with its own source and port range, balanced round robin.
	var servers strings.Builder
	for i := range *addrs {
		fmt.Fprintf(&servers, "  server s%d 198.18.2.2:8000 source %s:20000-%d\n", i, poolAddr(i), 20000+*perAddr-1)
	}
	haCfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(haCfg, fmt.Appendf(nil, `
global
  maxconn %d
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
listen in
  bind 198.18.1.2:80
  maxconn %d
  balance roundrobin
%s`, n+10, n+10, servers.String()), 0o644)

	var results []result
	results = append(results, run("sluice", n, []string{*sluiceBin, "run", "--no-master", "-f", sluiceCfg}, count))
	release()
	if _, err := os.Stat(*haproxy); err == nil {
		results = append(results, run("haproxy", n, []string{*haproxy, "-db", "-f", haCfg}, count))
		release()
	} else {
		fmt.Fprintln(os.Stderr, "haproxy not found (apt-get install haproxy): no comparison")
	}
	fmt.Printf("%d pool addresses x %d ports, %d connections asked\n\n", *addrs, *perAddr, n)
	fmt.Printf("| proxy | connections held | RSS idle | RSS per held connection |\n|---|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %s | %d | %.1f MiB | %.2f KB |\n", r.name, r.held, r.idleKB/1024, r.perConnKB)
	}
	if len(results) == 2 && results[1].perConnKB > 0 {
		fmt.Printf("\nsluice/HAProxy memory per connection: %.2fx\n", results[0].perConnKB/results[1].perConnKB)
	}
}
