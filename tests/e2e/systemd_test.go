package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (Debian package %s; tests/deps.sh installs it)", name, pkg)
		}
		t.Skipf("%s is not installed (Debian package %s)", name, pkg)
	}
	return p
}

// unitWithBinary copies systemd/sluice.service with its commands pointing
// at the binary under test, since verify checks that they exist.
func unitWithBinary(t *testing.T, unit string) string {
	text, err := os.ReadFile("../../systemd/" + unit)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), unit)
	os.WriteFile(path, []byte(strings.ReplaceAll(string(text), "/usr/sbin/sluice", sluiceBin)), 0o644)
	return path
}

// units are the unit files the packages ship.
var units = []string{"sluice.service", "sluice-net.service"}

func TestUnitVerifies(t *testing.T) {
	t.Parallel()
	sa := needTool(t, "systemd-analyze", "systemd")
	for _, u := range units {
		out, err := exec.Command(sa, "verify", unitWithBinary(t, u)).CombinedOutput()
		if err != nil || len(out) != 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}
}

func TestUnitSandboxScore(t *testing.T) {
	t.Parallel()
	sa := needTool(t, "systemd-analyze", "systemd")
	for _, u := range units {
		out, _ := exec.Command(sa, "security", "--offline=true", unitWithBinary(t, u)).CombinedOutput()
		m := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no score in:\n%s", u, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		if score > 2.0 {
			t.Errorf("%s: exposure %.1f, want 2.0 or lower:\n%s", u, score, out)
		}
		t.Logf("systemd-analyze security %s: %.1f", u, score)
	}
}

// notifySocket listens where sd_notify messages will be sent and passes
// them on.
func notifySocket(t *testing.T) (string, chan string) {
	t.Helper()
	sock := filepath.Join(filepath.Dir(controlPath(t)), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return sock, msgs
}

// TestNotifySequence captures sd_notify messages on a socket of the
// test's own: READY, then RELOADING with MONOTONIC_USEC and READY with a
// STATUS on reload, then STOPPING.
func TestNotifySequence(t *testing.T) {
	t.Parallel()
	sock, msgs := notifySocket(t)
	next := func(what string) string {
		t.Helper()
		select {
		case m := <-msgs:
			return m
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification (waiting for %s)", what)
			return ""
		}
	}
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin, "NOTIFY_SOCKET="+sock)
	if m := next("READY"); !strings.HasPrefix(m, "READY=1") || !strings.Contains(m, "STATUS=ready: generation 1") {
		t.Errorf("first notification %q, want READY=1 with STATUS", m)
	}
	var before unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	r.cmd.Process.Signal(os.Signal(sigusr2))
	m := next("RELOADING")
	mm := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=(\d+)$`).FindStringSubmatch(m)
	if mm == nil {
		t.Fatalf("reload notification %q, want RELOADING=1 and MONOTONIC_USEC", m)
	}
	usec, _ := strconv.ParseInt(mm[1], 10, 64)
	if usec < before.Nano()/1000 || usec > before.Nano()/1000+5e6 {
		t.Errorf("MONOTONIC_USEC %d is not just after the signal (%d)", usec, before.Nano()/1000)
	}
	if m := next("READY after reload"); !regexp.MustCompile(`^READY=1\nSTATUS=reloaded: generation 2, worker pids \d+`).MatchString(m) {
		t.Errorf("after reload: %q", m)
	}
	r.cmd.Process.Signal(os.Interrupt)
	if m := next("STOPPING"); m != "STOPPING=1" {
		t.Errorf("on stop: %q, want STOPPING=1", m)
	}
}

// TestSocketActivation passes a listening socket the way systemd does
// (descriptor 3, LISTEN_FDS, LISTEN_PID of the service, LISTEN_FDNAMES):
// sluice serves on it instead of binding.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"master", "no-master"} {
		t.Run(mode, func(t *testing.T) {
			a := newBackend(t, "a")
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fe := ln.Addr().String()
			f, _ := ln.(*net.TCPListener).File()
			ln.Close() // only the copy passed to sluice listens now
			path := filepath.Join(t.TempDir(), "s.hcl")
			os.WriteFile(path, []byte(config(fe, servers(a))), 0o644)
			args := "--control " + controlPath(t)
			if mode == "no-master" {
				args = "--no-master"
			}
			cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=`+fe+` exec "$0" run -f "$1" `+args, sluiceBin, path)
			cmd.ExtraFiles = []*os.File{f}
			out := &syncBuffer{}
			cmd.Stdout, cmd.Stderr = out, out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
			eventually(t, 5*time.Second, "sluice to start", func() bool { return strings.Contains(out.String(), "sluice started") })
			if !regexp.MustCompile(`using the socket systemd passed (component=master )?addr=` + regexp.QuoteMeta(fe)).MatchString(out.String()) {
				t.Errorf("the passed socket was not used:\n%s", out.String())
			}
			if g := greet(t, fe); g != "a" {
				t.Errorf("through the activated socket: %q", g)
			}
		})
	}
}

func TestReusePort(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	run := func(reuse bool) (*exec.Cmd, *syncBuffer) {
		path := filepath.Join(t.TempDir(), "s.hcl")
		os.WriteFile(path, []byte(config(fe, servers(a), fmt.Sprintf("reuseport = %v", reuse))), 0o644)
		return startProcess(t, sluiceBin, "run", "--no-master", "-f", path)
	}
	_, out1 := run(true)
	eventually(t, 5*time.Second, "first instance", func() bool { return strings.Contains(out1.String(), "sluice started") })
	_, out2 := run(true)
	eventually(t, 5*time.Second, "second instance on the same address", func() bool { return strings.Contains(out2.String(), "sluice started") })
	cmd3, out3 := run(false)
	err := cmd3.Wait()
	if err == nil || !strings.Contains(out3.String(), "address already in use") {
		t.Errorf("without reuseport a third instance started: %v\n%s", err, out3.String())
	}
	if g := greet(t, fe); g != "a" {
		t.Errorf("got %q", g)
	}
}

// TestWatchdogFollowsWorkerHealth: with WATCHDOG_USEC set, the master pings
// systemd while the current worker answers its probe, and stops when the
// worker hangs (SIGSTOP), so that systemd would restart the service.
func TestWatchdogFollowsWorkerHealth(t *testing.T) {
	t.Parallel()
	sock, msgs := notifySocket(t)
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=300000")
	count := func(d time.Duration) int {
		deadline := time.After(d)
		n := 0
		for {
			select {
			case m := <-msgs:
				if m == "WATCHDOG=1" {
					n++
				}
			case <-deadline:
				return n
			}
		}
	}
	if n := count(time.Second); n < 2 {
		t.Fatalf("%d watchdog pings in 1s with a healthy worker, want about 10", n)
	}
	var workerPID int
	fmt.Sscanf(regexp.MustCompile(`worker ready component=master generation=1 pid=(\d+)`).FindStringSubmatch(r.out.String())[1], "%d", &workerPID)
	syscall.Kill(workerPID, syscall.SIGSTOP)
	count(300 * time.Millisecond) // a ping may be under way
	if n := count(time.Second); n != 0 {
		t.Errorf("%d watchdog pings while the worker is stopped", n)
	}
	syscall.Kill(workerPID, syscall.SIGCONT)
	if n := count(time.Second); n < 2 {
		t.Errorf("%d watchdog pings after the worker resumed", n)
	}
}
