// Package benchutil holds what the benchmark programs share: free
// loopback addresses, waiting for a listener, a process's resident
// memory, processor time and sleeps, stopping a proxy, and medians of
// rounds.
package benchutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FreeAddr returns a loopback address nothing listens on right now.
func FreeAddr() string {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().String()
}

// WaitListening waits up to 5 s for addr to accept a connection and
// reports whether it did.
func WaitListening(addr string) bool {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// RSSKB is the resident memory of a process, in KB (0 if it is gone).
func RSSKB(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return n
		}
	}
	return 0
}

// CPUSeconds is the processor time (user and system) a process has used
// so far, in seconds (0 if it is gone).
func CPUSeconds(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ is 100 on Linux
}

// Sleeps is how many times the threads of a process have gone to sleep
// so far (voluntary context switches, summed over its threads; 0 if it
// is gone).
func Sleeps(pid int) int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	n := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				m, _ := strconv.Atoi(strings.TrimSpace(v))
				n += m
			}
		}
	}
	return n
}

// Stop asks a proxy to stop (SIGINT), and kills it after 5 s: a process
// started from a non-interactive shell's background job ignores SIGINT,
// which left benchmarks waiting for ever.
func Stop(cmd *exec.Cmd) {
	cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Median is the median of v (which it sorts), 0 for none.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2
	}
	return v[len(v)/2]
}

// InTurn is the order in which to run the compared programs in the given
// round: as listed in even rounds, reversed in odd ones, so that a drift
// of the machine's speed during a run favours none of them.
func InTurn[T any](programs []T, round int) []T {
	if round%2 == 0 {
		return programs
	}
	reversed := make([]T, len(programs))
	for i, p := range programs {
		reversed[len(programs)-1-i] = p
	}
	return reversed
}
