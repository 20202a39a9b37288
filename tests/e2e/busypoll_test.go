package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"sluice/tests/bench/benchutil"
)

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
	line := r.waitLog(`worker ready component=master generation=1 pid=\d+`, 5*time.Second)
	old, _ := strconv.Atoi(regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(line)[1])
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
