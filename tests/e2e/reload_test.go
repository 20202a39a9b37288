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
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"sluice/tests/loadgen"
)

// startReloadable runs bin as a master whose configuration the test rewrites.
func startReloadable(t *testing.T, config string, bin string, env ...string) *daemon {
	t.Helper()
	return launch(t, bin, config, env)
}

// reload rewrites the configuration and runs sluice reload.
func (r *daemon) reload(config string) (stdout, stderr string, code int) {
	r.t.Helper()
	if config != "" {
		os.WriteFile(r.path, []byte(config), 0o644)
	}
	return sluice(r.t, "reload", "--control", r.control)
}

func TestReloadSwitchesConfiguration(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin)
	masterPID := r.cmd.Process.Pid
	held, g := dial(t, fe) // a session of generation 1, kept across the reload
	if g != "a" {
		t.Fatalf("before reload: %q", g)
	}
	out, errOut, code := r.reload(config(fe, servers(b)))
	if code != 0 || !regexp.MustCompile(`^OK generation 2, worker pid \d+`).MatchString(out) {
		t.Fatalf("reload: code %d\n%s%s", code, out, errOut)
	}
	// Once the reload has answered, the old generation accepts nothing.
	for i := range 50 {
		if g := greet(t, fe); g != "b" {
			t.Fatalf("connection %d after the reload got %q, want b", i, g)
		}
	}
	// The old generation's session still works until it ends.
	fmt.Fprintf(held, "still here\n")
	if line, err := held.r.ReadString('\n'); err != nil || line != "still here\n" {
		t.Errorf("session from before the reload: %q, %v", line, err)
	}
	held.Close()
	r.waitLog(`worker exited component=master generation=1 `, 5*time.Second)
	if r.cmd.Process.Pid != masterPID {
		t.Error("master PID changed")
	}
	status, _, _ := sluice(t, "status", "--control", r.control)
	if !strings.Contains(status, fmt.Sprintf("master pid %d", masterPID)) || !strings.Contains(status, "generation 2") {
		t.Errorf("status:\n%s", status)
	}
}

func TestReloadWithBrokenConfigurationKeepsServing(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin)
	t0 := time.Now()
	_, errOut, code := r.reload("frontend \"fe\" {\n  bind = [\"" + fe + "\"]\n  default_backend = \"missing\"\n}\n")
	t.Logf("reload took %v", time.Since(t0))
	if code != 1 || !strings.Contains(errOut, r.path+":3:21: error: Unknown backend") {
		t.Errorf("reload of a broken configuration: code %d, stderr:\n%s", code, errOut)
	}
	for range 5 {
		if g := greet(t, fe); g != "a" {
			t.Fatalf("after a failed reload got %q, want a", g)
		}
	}
	r.waitLog(`reload failed: the running generation keeps serving`, time.Second)
	r.stop()
	t.Log(r.out.String())
}

func TestReloadRunsTheNewBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "sluice")
	build := func(v string) {
		cmd := exec.Command("go", "build", "-trimpath", "-tags", "netgo,osusergo", "-ldflags", "-X sluice/version.Version="+v, "-o", bin+".new", "sluice/cmd/sluice")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		os.Rename(bin+".new", bin) // as a package manager replaces a file
	}
	build("1.0.0-test")
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), bin)
	build("2.0.0-test")
	stop := make(chan struct{})
	failures := load(t, fe, 4, stop)
	time.Sleep(200 * time.Millisecond)
	out, errOut, code := r.reload("")
	time.Sleep(200 * time.Millisecond)
	close(stop)
	if code != 0 || !strings.Contains(out, "version 2.0.0-test") {
		t.Fatalf("reload after replacing the binary: code %d\n%s%s", code, out, errOut)
	}
	status, _, _ := sluice(t, "status", "--control", r.control)
	if !strings.Contains(status, "version 2.0.0-test") {
		t.Errorf("status after upgrade:\n%s", status)
	}
	if n := failures(); n != 0 {
		t.Errorf("%d failed requests during the upgrade", n)
	}
}

// load runs loadgen's one-connection-per-request workers until stop; the
// returned function waits for them, logs the figures and returns the
// number of failed requests.
func load(t *testing.T, addr string, workers int, stop chan struct{}) func() int64 {
	wait := loadgen.Start(addr, workers, "", stop)
	return func() int64 {
		r := wait()
		t.Logf("%d requests, %d failed", r.OK+r.Failed, r.Failed)
		if r.First != nil {
			t.Logf("first failure: %v", r.First)
		}
		return r.Failed
	}
}

// TestReloadTorture reloads every 100 ms under load, changing the
// configuration each time (weights, a server and a bind address added and
// removed), and demands that nothing fails.
func TestReloadTorture(t *testing.T) {
	t.Parallel()
	length := 30 * time.Second
	if testing.Short() {
		length = 5 * time.Second
	}
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	web1, web2 := newWebServer(t, "web1"), newWebServer(t, "web2")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	extra := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpFe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	gen := func(i int) string {
		binds := fmt.Sprintf("%q", fe)
		if i%2 == 1 {
			binds += fmt.Sprintf(", %q", extra)
		}
		srv := fmt.Sprintf("  server \"a\" {\n    address = %q\n    weight = %d\n  }\n  server \"b\" { address = %q }\n", a.addr, 1+i%5, b.addr)
		if i%3 == 0 {
			srv += fmt.Sprintf("  server \"c\" { address = %q }\n", c.addr)
		}
		return fmt.Sprintf(`
global { hard_stop_after = "60s" }
defaults {
  log = "global"
  timeout {
    client = "60s"
    server = "60s"
  }
}
frontend "fe" {
  bind            = [%s]
  default_backend = "be"
}
backend "be" {
%s}
listen "web" {
  mode = "http"
  bind = [%q]
  server "w1" {
    address = %q
    weight  = %d
  }
  server "w2" { address = %q }
}
`, binds, srv, httpFe, web1.addr, 1+i%3, web2.addr)
	}
	r := startReloadable(t, gen(0), sluiceBin)
	masterPID := r.cmd.Process.Pid
	fdsBefore := openFiles(t, masterPID)

	// Long streams opened before the first reload must stay intact.
	var streams []*client
	for range 3 {
		cl, _ := dial(t, fe)
		streams = append(streams, cl)
	}
	stop := make(chan struct{})
	failures := load(t, fe, 6, stop)
	keepAlive := keepAliveLoad(httpFe, 4, stop)
	deadline := time.Now().Add(length)
	reloads := 0
	for i := 1; time.Now().Before(deadline); i++ {
		os.WriteFile(r.path, []byte(gen(i)), 0o644)
		if err := r.cmd.Process.Signal(os.Signal(sigusr2)); err != nil {
			t.Fatal(err)
		}
		reloads++
		time.Sleep(100 * time.Millisecond)
		for j, s := range streams {
			msg := fmt.Sprintf("stream %d round %d\n", j, i)
			s.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprint(s, msg)
			if line, err := s.r.ReadString('\n'); err != nil || line != msg {
				t.Fatalf("long stream %d broke at reload %d: %q, %v", j, i, line, err)
			}
		}
	}
	close(stop)
	if n := failures(); n != 0 {
		t.Errorf("%d failed requests over %d reloads; sessions not ended normally:\n%s", n, reloads,
			strings.Join(r.logLines(`\] fe be/\S+ \S+ (\d+ [^-][^-]|0 --) | WARN | ERROR `), "\n"))
	}
	ka := keepAlive()
	t.Logf("%s", ka)
	if err := ka.err(); err != nil {
		t.Error(err)
	}
	if ka.closes == 0 || ka.ok < 1000 {
		t.Errorf("keep-alive clients: %s; want drained generations to say connection: close", ka)
	}
	if pid := r.cmd.Process.Pid; pid != masterPID {
		t.Errorf("master PID changed")
	}
	time.Sleep(500 * time.Millisecond)
	if fdsAfter := openFiles(t, masterPID); fdsAfter > fdsBefore+4 {
		t.Errorf("master's open files grew from %d to %d over %d reloads", fdsBefore, fdsAfter, reloads)
	}
	for _, s := range streams {
		s.Close()
	}
	// Every old worker ends once its sessions have.
	eventually(t, 10*time.Second, "only the current worker left", func() bool {
		return countChildren(masterPID) == 1
	})
	t.Logf("%d reloads in %v", reloads, length)
}

func openFiles(t *testing.T, pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// countChildren counts the processes whose parent is pid.
func countChildren(pid int) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		f, err := os.Open(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		line, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		// pid (comm) state ppid ...
		if i := strings.LastIndexByte(line, ')'); i > 0 {
			var state string
			var ppid int
			fmt.Sscan(line[i+1:], &state, &ppid)
			if ppid == pid && state != "Z" {
				n++
			}
		}
	}
	return n
}

func TestCrashedWorkerIsReplaced(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin)
	masterPID := r.cmd.Process.Pid
	var workerPID int
	fmt.Sscanf(regexp.MustCompile(`worker ready component=master generation=1 pid=(\d+)`).FindStringSubmatch(r.out.String())[1], "%d", &workerPID)
	syscall.Kill(workerPID, syscall.SIGKILL)
	r.waitLog(`worker died; starting a new one on the same sockets`, 5*time.Second)
	r.waitLog(`worker ready component=master generation=1 pid=\d+\n(.|\n)*worker ready component=master generation=1 pid=\d+`, 5*time.Second)
	for range 5 {
		if g := greet(t, fe); g != "a" {
			t.Fatalf("after the crash got %q", g)
		}
	}
	if r.cmd.Process.Pid != masterPID || countChildren(masterPID) != 1 {
		t.Errorf("master pid %d (was %d), %d workers", r.cmd.Process.Pid, masterPID, countChildren(masterPID))
	}
}

// TestTortureSeesNaiveReload runs the torture test's load against a
// deliberately naive reload, stopping the process and starting a new one
// that binds afresh: the harness must see the connections that refuses.
func TestTortureSeesNaiveReload(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := filepath.Join(t.TempDir(), "sluice.hcl")
	os.WriteFile(path, []byte(config(fe, servers(a))), 0o644)
	start := func() *exec.Cmd {
		cmd := exec.Command(sluiceBin, "run", "--no-master", "-f", path)
		cmd.Start()
		eventually(t, 5*time.Second, "sluice to listen", func() bool {
			c, err := net.Dial("tcp", fe)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		return cmd
	}
	cmd := start()
	stop := make(chan struct{})
	failures := load(t, fe, 4, stop)
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		cmd = start()
	}
	close(stop)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if n := failures(); n == 0 {
		t.Error("the harness saw no failure across 20 naive reloads: it cannot tell a seamless reload from a broken one")
	}
}

// TestTakeover hands the listening sockets of a standalone sluice to a
// successor over the admin socket (SCM_RIGHTS), under load: the
// frontend's, and that of the admin socket over TCP, which answers all
// through.
func TestTakeover(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	admin := filepath.Join(filepath.Dir(controlPath(t)), "admin.sock")
	tcpAdmin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(s *backend) string {
		return fmt.Sprintf("global {\n  admin_socket %q {\n    level = \"admin\"\n    expose_listeners = true\n  }\n  admin_socket \"tcp://%s\" {}\n}\n", admin, tcpAdmin) + config(fe, servers(s))
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/a.hcl", []byte(conf(a)), 0o644)
	os.WriteFile(dir+"/b.hcl", []byte(conf(b)), 0o644)
	first, out1 := startProcess(t, sluiceBin, "run", "--no-master", "-f", dir+"/a.hcl")
	eventually(t, 5*time.Second, "first instance", func() bool { return strings.Contains(out1.String(), "sluice started") })
	sock := listeningInodes(t, tcpAdmin)
	stop := make(chan struct{})
	failures := load(t, fe, 4, stop)
	adminFailures := adminLoad("tcp://"+tcpAdmin, stop)
	time.Sleep(300 * time.Millisecond)
	_, out2 := startProcess(t, sluiceBin, "run", "--no-master", "--takeover", admin, "-f", dir+"/b.hcl")
	eventually(t, 5*time.Second, "the successor", func() bool { return strings.Contains(out2.String(), "sluice started") })
	done := make(chan error, 1)
	go func() { done <- first.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the predecessor did not drain and exit:\n%s", out1.String())
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	if n := failures(); n != 0 {
		t.Errorf("%d failed requests during the takeover", n)
	}
	if n := adminFailures(); n != 0 {
		t.Errorf("%d failed commands over TCP during the takeover", n)
	}
	if got := listeningInodes(t, tcpAdmin); len(sock) != 1 || !slices.Equal(got, sock) {
		t.Errorf("the admin socket over TCP was %v, is %v: want the same one, taken over", sock, got)
	}
	if !strings.Contains(out2.String(), "took the listening sockets over") || !strings.Contains(out1.String(), "drain requested") {
		t.Errorf("logs:\n%s\n%s", out1.String(), out2.String())
	}
	if g := greet(t, fe); g != "b" {
		t.Errorf("after the takeover got %q, want the successor's backend b", g)
	}
}

// TestHardStopAfter: a draining generation holding a long session is
// stopped after hard_stop_after, and so is the master on SIGTERM.
func TestHardStopAfter(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := "global { hard_stop_after = \"1s\" }\n" + config(fe, servers(a))
	r := startReloadable(t, cfg, sluiceBin)
	held, _ := dial(t, fe)
	defer held.Close()
	start := time.Now()
	if _, errOut, code := r.reload(""); code != 0 {
		t.Fatalf("reload: %s", errOut)
	}
	r.waitLog(`hard_stop_after reached`, 3*time.Second)
	r.waitLog(`worker exited component=master generation=1 `, 3*time.Second)
	if took := time.Since(start); took < 900*time.Millisecond || took > 2500*time.Millisecond {
		t.Errorf("old generation ended after %v, want about hard_stop_after (1s)", took)
	}
	held.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := held.r.ReadString('\n'); err == nil {
		t.Error("the long session survived hard_stop_after")
	}
	// SIGTERM: graceful, bounded by hard_stop_after too.
	held2, _ := dial(t, fe)
	defer held2.Close()
	start = time.Now()
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("master did not stop within hard_stop_after")
	}
	if took := time.Since(start); took < 900*time.Millisecond || took > 3*time.Second {
		t.Errorf("graceful stop took %v, want about hard_stop_after (1s)", took)
	}
}

func TestDrainingGenerationsAreCapped(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin)
	var held []*client
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 10; i++ { // each generation keeps one session, so it drains for ever
		c, _ := dial(t, fe)
		held = append(held, c)
		if _, errOut, code := r.reload(""); code != 0 {
			t.Fatalf("reload %d: %s", i, errOut)
		}
		// Let the previous worker close its listener, so that the next
		// session lands on the new generation.
		time.Sleep(100 * time.Millisecond)
	}
	r.waitLog(`too many draining generations: killing the oldest component=master generation=1 `, 3*time.Second)
	r.waitLog(`too many draining generations: killing the oldest component=master generation=2 `, 3*time.Second)
	eventually(t, 3*time.Second, "8 draining workers and the current one", func() bool { return countChildren(r.cmd.Process.Pid) == 9 })
}

func TestWorkerThatCannotStartLeavesTheOldServing(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin)
	// Valid syntax, but the worker cannot resolve the server's name.
	_, errOut, code := r.reload(config(fe, `  server "x" { address = "no-such-host.invalid:80" }`))
	if code != 1 || !strings.Contains(errOut, "did not become ready") {
		t.Errorf("reload to a configuration whose worker fails: code %d\n%s", code, errOut)
	}
	for range 3 {
		if g := greet(t, fe); g != "a" {
			t.Fatalf("after the failed start got %q", g)
		}
	}
}

// TestSignalStormDuringReexec sends reload signals faster than a re-exec
// takes, so that many land while the master is between execve and its
// signal handler: the master must survive and keep serving (such a signal
// used to kill it).
func TestSignalStormDuringReexec(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, config(fe, servers(a)), sluiceBin)
	for range 60 {
		if err := r.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
			t.Fatalf("the master died during the storm: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(time.Second)
	select {
	case <-r.exited:
		t.Fatal("the master exited during a storm of reload signals")
	default:
	}
	if g := greet(t, fe); g != "a" {
		t.Errorf("after the storm got %q", g)
	}
	eventually(t, 10*time.Second, "one worker left", func() bool { return countChildren(r.cmd.Process.Pid) == 1 })
}

// listeningInodes returns the inodes of the sockets listening on addr
// (127.0.0.1:port), from the calling thread's /proc/thread-self/net/tcp.
// Not /proc/net/tcp: that is the main thread's network namespace, and a
// pool test's inNetns may have left the main thread in its namespace
// (Go keeps a locked main thread instead of ending it), which made this
// read find no socket at all.
func listeningInodes(t *testing.T, addr string) []string {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	want := fmt.Sprintf("0100007F:%04X", ap.Port())
	b, err := os.ReadFile("/proc/thread-self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 9 && f[1] == want && f[3] == "0A" {
			out = append(out, f[9])
		}
	}
	return out
}

// adminLoad runs commands on an admin socket (tcp://IP:port or a unix
// socket path) from 4 clients until stop, and returns the count of those
// that failed or were answered wrongly.
func adminLoad(sock string, stop chan struct{}) func() int64 {
	network, addr := "unix", sock
	if a, ok := strings.CutPrefix(sock, "tcp://"); ok {
		network, addr = "tcp", a
	}
	wait := loadgen.Run(network, addr, 4, stop, func(c net.Conn) error {
		fmt.Fprint(c, "show info\n")
		out, err := io.ReadAll(c)
		if err == nil && !strings.Contains(string(out), "Name: sluice") {
			err = fmt.Errorf("show info answered %q", out)
		}
		return err
	})
	return func() int64 { return wait().Failed }
}

// TestAdminSocketsAcrossReloads: commands sent to admin sockets during
// reloads are all answered. The master holds an admin socket over TCP
// like a frontend's and hands the same socket to each generation; a
// retiring generation answers what waits in its unix socket's queue
// before closing it. Runtime state set over TCP survives the reloads.
func TestAdminSocketsAcrossReloads(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAdmin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	unixAdmin := filepath.Join(filepath.Dir(controlPath(t)), "admin.sock")
	cfg := fmt.Sprintf("global {\n  admin_socket \"tcp://%s\" { level = \"operator\" }\n  admin_socket %q {}\n}\n", tcpAdmin, unixAdmin) + config(fe, servers(a, b))
	r := startReloadable(t, cfg, sluiceBin)
	sock := listeningInodes(t, tcpAdmin)
	if len(sock) != 1 {
		t.Fatalf("%d sockets listening on %s, want 1", len(sock), tcpAdmin)
	}
	if out, code := ctl(t, "tcp://"+tcpAdmin, "set server be/b weight 3"); code != 0 {
		t.Fatalf("set weight: %s", out)
	}
	stop := make(chan struct{})
	tcpFailures, unixFailures := adminLoad("tcp://"+tcpAdmin, stop), adminLoad(unixAdmin, stop)
	const reloads = 20
	for i := range reloads {
		if out, errOut, code := r.reload(""); code != 0 {
			t.Fatalf("reload %d: %s%s", i+1, out, errOut)
		}
		if got := listeningInodes(t, tcpAdmin); !slices.Equal(got, sock) {
			t.Errorf("after reload %d, sockets %v listen on %s; want the same one, %v", i+1, got, tcpAdmin, sock)
		}
	}
	r.waitLog(fmt.Sprintf(`worker exited component=master generation=%d `, reloads), 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	close(stop)
	if n := tcpFailures(); n != 0 {
		t.Errorf("%d commands over TCP failed during the reloads", n)
	}
	if n := unixFailures(); n != 0 {
		t.Errorf("%d commands over the unix socket failed during the reloads", n)
	}
	if rows := stat(t, "tcp://"+tcpAdmin); rows["be/b"]["weight"] != "3" {
		t.Errorf("after the reloads be/b has weight %q, want 3 (set at run time)", rows["be/b"]["weight"])
	}
}
