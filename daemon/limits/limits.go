// Package limits fits the process to its configuration: open-file limit,
// number of threads, CPU affinity.
package limits

import (
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// RaiseNoFile lifts RLIMIT_NOFILE's soft limit towards need, up to the hard
// limit, and returns the limits now in force. It never lowers the soft limit.
func RaiseNoFile(need uint64) (soft, hard uint64, err error) {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, err
	}
	want := min(need, r.Max)
	if want > r.Cur {
		r.Cur = want
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
			return r.Cur, r.Max, err
		}
	}
	return r.Cur, r.Max, nil
}

// SetThreads sets GOMAXPROCS; zero keeps one per CPU.
func SetThreads(n int) {
	if n > 0 {
		runtime.GOMAXPROCS(n)
	}
}

// SetAffinity pins every thread of the process to cpus. Threads started
// later inherit the mask from the thread that creates them.
func SetAffinity(cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return unix.SchedSetaffinity(0, &set)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pinning to CPUs %v: %w", cpus, err)
		}
	}
	return nil
}
