package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"sluice/tests/bench/benchutil"
)

// firstWorker is the pid of generation 1's worker, once it is ready.
func firstWorker(d *daemon) int {
	line := d.waitLog(`worker ready component=master generation=1 pid=\d+`, 5*time.Second)
	pid, _ := strconv.Atoi(regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(line)[1])
	return pid
}

// keepAliveGet sends one GET on a keep-alive connection and reads the answer.
func keepAliveGet(c net.Conn, r *bufio.Reader) error {
	fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// cpuOver is the CPU time process pid uses over d.
func cpuOver(pid int, d time.Duration) time.Duration {
	before := benchutil.CPUSeconds(pid)
	time.Sleep(d)
	return time.Duration((benchutil.CPUSeconds(pid) - before) * float64(time.Second))
}

// TestBusyPolling checks busy_polling as an operator would with top: the
// worker keeps its CPU busy while idle and serves; after a reload the
// draining worker stops spinning (as HAProxy's old processes do) while
// still serving its sessions, and the new one spins. Not parallel: a
// spinning process takes a CPU from the other tests.
func TestBusyPolling(t *testing.T) {
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := func(be *backend) string {
		return "global {\n  threads = 1\n  busy_polling = true\n}\n" + config(fe, servers(be))
	}
	r := startReloadable(t, cfg(a), sluiceBin)
	old := firstWorker(r)
	r.waitLog(`busy polling: idle threads poll instead of sleeping`, 5*time.Second)
	const period = time.Second
	// Shared with other test packages on two CPUs: at least a quarter.
	if cpu := cpuOver(old, period); cpu < period/4 {
		t.Fatalf("idle worker with busy_polling used %v of CPU in %v", cpu, period)
	}
	held, g := dial(t, fe) // a session that keeps generation 1 draining
	if g != "a" {
		t.Fatalf("before the reload: %q", g)
	}
	out, errOut, code := r.reload(cfg(b))
	m := regexp.MustCompile(`^OK generation 2, worker pid (\d+)`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("reload: code %d\n%s%s", code, out, errOut)
	}
	cur, _ := strconv.Atoi(m[1])
	if cpu := cpuOver(old, period); cpu > period/10 {
		t.Errorf("draining worker still used %v of CPU in %v", cpu, period)
	}
	if cpu := cpuOver(cur, period); cpu < period/4 {
		t.Errorf("new worker with busy_polling used %v of CPU in %v", cpu, period)
	}
	fmt.Fprintf(held, "still here\n")
	if line, err := held.r.ReadString('\n'); err != nil || line != "still here\n" {
		t.Errorf("session of the draining worker: %q, %v", line, err)
	}
	held.Close()
	if g := greet(t, fe); g != "b" {
		t.Errorf("after the reload: %q", g)
	}
}

// TestPollBeforeSleep checks poll_before_sleep as an operator would: a
// client sending request after request through a worker with it makes
// the worker's threads sleep far less often than without it (each sleep
// costs a wake-up's latency), in HTTP mode and in TCP mode; once the
// traffic stops the worker uses no CPU. The default, "auto", polls only
// when the threads are busy (daemon/busypoll's tests), which one client
// does not make them. Not parallel: a polling worker
// takes a CPU from other tests.
func TestPollBeforeSleep(t *testing.T) {
	web := newWebServer(t, "w")
	const requests = 1000
	sleepsPerRequest := func(global, mode string) (float64, int) {
		port := freePort(t)
		d := startSluice(t, "global {\n  threads = 1\n"+global+"}\n"+httpDefaults+fmt.Sprintf(`
listen "fe" {
  mode = %q
  bind = ["127.0.0.1:%d"]
  server "s" { address = %q }
}
`, mode, port, web.addr))
		worker := firstWorker(d)
		c := dialPort(t, port)
		defer c.Close()
		r := bufio.NewReader(c)
		exchange := func() {
			if err := keepAliveGet(c, r); err != nil {
				t.Fatal(err)
			}
		}
		exchange() // connections made, buffers warm
		before := benchutil.Sleeps(worker)
		for range requests {
			exchange()
		}
		return float64(benchutil.Sleeps(worker)-before) / requests, worker
	}
	for _, mode := range []string{"http", "tcp"} {
		without, _ := sleepsPerRequest("  poll_before_sleep = \"off\"\n", mode)
		// One client waiting for each answer keeps the worker's thread
		// well under 75% busy, so the default, "auto", does not poll.
		auto, _ := sleepsPerRequest("", mode)
		// A window far longer than a request here, so that other tests
		// taking the CPUs for a while do not end it between two requests.
		with, worker := sleepsPerRequest("  poll_before_sleep = \"20ms\"\n", mode)
		t.Logf("%s mode: worker sleeps per request: %.3f with poll_before_sleep off, %.3f auto (the default), %.3f with 20ms", mode, without, auto, with)
		if without < 0.5 {
			t.Fatalf("%s mode: without poll_before_sleep the worker slept only %.3f times per request: the test cannot tell", mode, without)
		}
		if auto < without/2 {
			t.Errorf("%s mode: lightly loaded, the default poll_before_sleep polled: the worker slept %.3f times per request (%.3f with it off)", mode, auto, without)
		}
		// Idle, with a CPU to itself, it sleeps about 0.1 times per
		// request; other tests taking the CPUs make the kernel preempt it
		// in system calls, and Go then hands its processor to another
		// thread, which adds sleeps of their own (up to 0.6 seen).
		if with > without/2 {
			t.Errorf("%s mode: with poll_before_sleep the worker still slept %.3f times per request (%.3f without)", mode, with, without)
		}
		time.Sleep(200 * time.Millisecond) // past the window
		const period = time.Second
		if cpu := cpuOver(worker, period); cpu > period/10 {
			t.Errorf("%s mode: idle worker with poll_before_sleep used %v of CPU in %v", mode, cpu, period)
		}
	}
}

// TestIdlePct checks show info's Idle_pct and the Prometheus gauge
// sluice_process_idle_time_percent as an operator reads them: close to
// 100 when idle; under load, 100 less the CPU the worker uses when its
// threads sleep between requests; and well above that when they poll
// between requests, which makes their CPU time read as busy.
func TestIdlePct(t *testing.T) {
	web := newWebServer(t, "w")
	for _, poll := range []string{"off", "auto", "20ms"} {
		port, mon := freePort(t), fmt.Sprintf("127.0.0.1:%d", freePort(t))
		admin := filepath.Join(t.TempDir(), "admin.sock")
		d := startSluice(t, fmt.Sprintf(`global {
  threads = 1
  poll_before_sleep = %q
  admin_socket %q { level = "admin" }
}
`, poll, admin)+httpDefaults+fmt.Sprintf(`
listen "fe" {
  bind = ["127.0.0.1:%d"]
  server "s" { address = %q }
}
listen "metrics" {
  bind = [%q]
  prometheus { uri = "/metrics" }
}
`, port, web.addr, mon))
		worker := firstWorker(d)
		idlePct := func() (info, gauge int) {
			out, code := ctl(t, admin, "show", "info")
			m := regexp.MustCompile(`(?m)^Idle_pct: (\d+)$`).FindStringSubmatch(out)
			if code != 0 || m == nil {
				t.Fatalf("%s: show info has no Idle_pct:\n%s", poll, out)
			}
			info, _ = strconv.Atoi(m[1])
			v, ok := value(scrape(t, "http://"+mon+"/metrics"), "sluice_process_idle_time_percent", nil)
			if !ok {
				t.Fatalf("%s: no sluice_process_idle_time_percent in /metrics", poll)
			}
			return info, int(v)
		}
		time.Sleep(1500 * time.Millisecond) // a second's average
		if info, gauge := idlePct(); info < 90 || gauge < 90 {
			t.Errorf("%s: idle, Idle_pct %d and gauge %d, want at least 90", poll, info, gauge)
		}

		c := dialPort(t, port)
		r := bufio.NewReader(c)
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := keepAliveGet(c, r); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		time.Sleep(2 * time.Second) // the average settles
		const period = time.Second
		cpu := int(100 * cpuOver(worker, period) / period)
		info, gauge := idlePct()
		close(stop)
		<-done
		c.Close()
		t.Logf("%s: under one client's requests, Idle_pct %d, gauge %d, worker CPU %d%%", poll, info, gauge, cpu)
		if gauge < info-5 || gauge > info+5 {
			t.Errorf("%s: Idle_pct %d but the gauge says %d", poll, info, gauge)
		}
		if poll == "20ms" {
			if info < 100-cpu+10 {
				t.Errorf("%s: polling between requests, Idle_pct %d with the worker at %d%% CPU: the polls count as work", poll, info, cpu)
			}
		} else if info < 100-cpu-15 || info > 100-cpu+15 {
			t.Errorf("%s: Idle_pct %d with the worker at %d%% CPU, want about %d", poll, info, cpu, 100-cpu)
		}
	}
}
