// Package master is sluice's process model: a master whose PID never
// changes owns the listening sockets and runs worker generations, child
// processes of the same binary that inherit those sockets.
//
// A reload re-executes the master's binary from disk (so an upgraded
// package takes over), with its state kept across exec(2): listening
// sockets with FD_CLOEXEC cleared, the worker list, the control socket and
// the connection of whoever asked for the reload. The new image checks the
// configuration; on success it starts worker N+1 on the same socket
// objects, waits until it says it is ready, then tells worker N to stop
// accepting and drain. Since the sockets are never closed and rebound, no
// connection waiting in an accept queue is lost. On failure nothing
// changes and the failure is reported.
package master

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"sluice/daemon/engine"
	"sluice/daemon/listen"
	"sluice/hcl"
	"sluice/version"
)

// EnvState carries the master's state across a re-exec.
const EnvState = "SLUICE_MASTER_STATE"

// EnvControl tells a worker where its master's control socket is, for
// the runtime API's reload command.
const EnvControl = "SLUICE_CONTROL"

// maxDraining caps old generations still draining; the oldest is killed
// first when a reload would exceed it.
const maxDraining = 8

// readyTimeout bounds how long a new worker may take to say it serves.
const readyTimeout = 30 * time.Second

// Options configure a master.
type Options struct {
	Paths   []string // configuration paths, as given to sluice run
	Control string   // path of the control socket (sluice reload talks to it)
	Args    []string // the command line after the program name, for re-exec
	// WorkerArgs are added to each worker's command line (after -f PATH...).
	WorkerArgs []string
	// ExtraAdmin is the path of the admin socket given on the command
	// line (--admin-socket), if any.
	ExtraAdmin string
	Log        *slog.Logger
}

// state is what survives a re-exec, as JSON in EnvState.
type state struct {
	Generation int             `json:"generation"`
	Listeners  []listenerState `json:"listeners"`
	Workers    []workerState   `json:"workers"` // the current one first
	ControlFD  int             `json:"control_fd"`
	ClientFD   int             `json:"client_fd"` // -1: no reload requester
	Started    time.Time       `json:"started"`
	Reloads    int             `json:"reloads"`
}

type listenerState struct {
	Addr string `json:"addr"`
	FD   int    `json:"fd"`
}

type workerState struct {
	PID        int `json:"pid"`
	Generation int `json:"generation"`
	ProbeFD    int `json:"probe_fd"` // -1: none
}

// Master runs worker generations. Its fields are used by Run's goroutine
// only; other goroutines talk to it over channels.
type Master struct {
	opt       Options
	log       *slog.Logger
	gen       int
	listeners map[string]int // bind address to the master's descriptor
	current   *worker
	draining  []*worker
	control   *net.UnixListener
	started   time.Time
	reloads   int
	stopping  bool
	cfg       *hcl.Config
	activated []listen.Activated // sockets systemd passed, used instead of binding
	requests  chan controlRequest
	exited    chan *worker
}

// controlRequest is a command read from the control socket.
type controlRequest struct {
	cmd  string
	conn *net.UnixConn
}

type worker struct {
	pid   int
	gen   int
	proc  *os.Process
	done  chan struct{}
	probe *os.File // our end of the worker's readiness and health socket
}

// Bytes the master sends on a worker's probe socket; the worker echoes
// each one.
const (
	probeAlive = '?' // a health probe
	ProbeStop  = 'S' // stop accepting; echoed once the listeners are closed
)

// alive probes the worker: one byte out, the same back within timeout.
func (w *worker) alive(timeout time.Duration) bool { return w.ask(probeAlive, timeout) }

// ask sends b on the probe socket and waits, up to timeout, for the echo.
func (w *worker) ask(b byte, timeout time.Duration) bool {
	if w.probe == nil {
		return false
	}
	w.probe.SetDeadline(time.Now().Add(timeout))
	defer w.probe.SetDeadline(time.Time{})
	buf := []byte{b}
	if _, err := w.probe.Write(buf); err != nil {
		return false
	}
	_, err := io.ReadFull(w.probe, buf)
	return err == nil && buf[0] == b
}

// Run runs the master until it is stopped and returns the exit code.
func Run(opt Options) int {
	m := &Master{opt: opt, log: opt.Log.With("component", "master"), listeners: map[string]int{},
		requests: make(chan controlRequest, 4), exited: make(chan *worker, 16)}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	UnblockSignals() // after a re-exec they were blocked; pending ones arrive now

	if st, ok, err := loadState(); err != nil {
		m.log.Error("cannot resume after re-exec", "err", err)
		return 1
	} else if ok {
		m.reload(m.adopt(st))
	} else if code := m.start(); code != 0 {
		return code
	} else {
		m.notify("READY=1", m.status("ready"))
	}
	go m.serveControl()
	// With WatchdogSec=, ping systemd only while the current worker answers.
	var watchdog <-chan time.Time
	interval, _ := daemon.SdWatchdogEnabled(false)
	if interval > 0 {
		t := time.NewTicker(interval / 3)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case <-watchdog:
			if m.current != nil && m.current.alive(interval/3) {
				m.notify("WATCHDOG=1")
			} else {
				m.log.Warn("current worker does not answer its health probe: not feeding the watchdog")
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP, syscall.SIGUSR2:
				m.log.Info("reload requested", "signal", sig.String())
				m.beginReload(nil)
			case syscall.SIGTERM, syscall.SIGINT:
				return m.stop(sig.(syscall.Signal))
			}
		case r := <-m.requests:
			if r.cmd == "status" {
				fmt.Fprintf(r.conn, "OK master pid %d, version %s, reloads %d\n%s\nEND\n", os.Getpid(), version.Version, m.reloads, m.status("running"))
				r.conn.Close()
				continue
			}
			m.log.Info("reload requested", "by", "control socket")
			m.beginReload(r.conn)
		case w := <-m.exited:
			m.workerExited(w)
		}
	}
}

// start is the first generation of a fresh master.
func (m *Master) start() int {
	m.started = time.Now()
	cfg, diags := m.load()
	if cfg == nil {
		for _, d := range diags {
			fmt.Fprintln(os.Stderr, d)
		}
		return 1
	}
	m.cfg = cfg
	m.activated = listen.Activation()
	if err := m.bind(cfg); err != nil {
		m.log.Error("cannot start", "err", err)
		return 1
	}
	if err := m.listenControl(); err != nil {
		m.log.Error("cannot open the control socket", "path", m.opt.Control, "err", err)
		return 1
	}
	w, err := m.spawn(1)
	if err != nil {
		m.log.Error("cannot start worker", "err", err)
		return 1
	}
	m.gen, m.current = 1, w
	m.log.Info("sluice started", "version", version.Version, "pid", os.Getpid(), "control", m.opt.Control)
	return 0
}

// load reads the configuration; diagnostics come back one per line.
func (m *Master) load() (*hcl.Config, []string) {
	cfg, _, diags := hcl.Load(m.opt.Paths)
	var b strings.Builder
	hcl.WriteDiagnostics(&b, diags)
	var lines []string
	for _, l := range strings.Split(b.String(), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return cfg, lines
}

// socket is a listening socket a configuration needs.
type socket struct {
	owner string // for errors: "frontend NAME" or "admin socket"
	addr  string // host:port
	opt   listen.Options
}

// sockets are the listening sockets cfg needs, by the name a worker knows
// each by: the frontends' bind addresses, and the tcp://IP:port of admin
// sockets over TCP. The master holds them all and hands them to each
// generation, so that a reload refuses no connection, nor any command.
func (m *Master) sockets(cfg *hcl.Config) map[string]socket {
	out := map[string]socket{}
	for _, fe := range cfg.Frontends {
		for _, b := range fe.Binds {
			out[b.Address] = socket{"frontend " + fe.Name, b.Address, engine.BindOptions(fe)}
		}
	}
	paths := []string{m.opt.ExtraAdmin}
	for _, a := range cfg.Global.AdminSockets {
		paths = append(paths, a.Path)
	}
	for _, p := range paths {
		// SO_REUSEPORT: a worker of a binary from before this handover
		// may still hold its own socket on the address.
		if addr, ok := strings.CutPrefix(p, "tcp://"); ok {
			out[p] = socket{"admin socket", addr, listen.Options{ReusePort: true}}
		}
	}
	return out
}

// bind opens the sockets of cfg that are not open yet.
func (m *Master) bind(cfg *hcl.Config) error {
	for name, s := range m.sockets(cfg) {
		if _, ok := m.listeners[name]; ok {
			continue
		}
		if fd, ok := listen.Match(s.addr, m.activated); ok {
			m.log.Info("using the socket systemd passed", "addr", s.addr)
			m.listeners[name] = fd
			continue
		}
		fd, err := listen.Socket(s.addr, s.opt)
		if err != nil {
			return fmt.Errorf("%s: cannot bind %s: %w", s.owner, s.addr, err)
		}
		m.listeners[name] = fd
	}
	return nil
}

// spawn starts worker generation gen with every listener of the current
// configuration and waits until it serves.
func (m *Master) spawn(gen int) (*worker, error) {
	var addrs []string
	for name := range m.sockets(m.cfg) {
		addrs = append(addrs, name)
	}
	sort.Strings(addrs)
	// A socketpair: the worker writes one byte when it serves, then echoes
	// each byte the master sends as a health probe (for the watchdog).
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	probe := os.NewFile(uintptr(pair[0]), "probe")
	readyW := os.NewFile(uintptr(pair[1]), "probe-worker")
	// Raw descriptors and StartProcess rather than os/exec: os/exec takes
	// (*os.File).Fd, which would switch the shared sockets to blocking mode
	// under the workers already accepting on them.
	files := []uintptr{0, 1, 2, readyW.Fd()} // descriptors 0-3 in the worker
	for _, a := range addrs {
		files = append(files, uintptr(m.listeners[a]))
	}
	exe, err := os.Executable()
	if err != nil {
		readyW.Close()
		probe.Close()
		return nil, err
	}
	argv := []string{exe, "run", "--worker"}
	for _, p := range m.opt.Paths {
		argv = append(argv, "-f", p)
	}
	argv = append(argv, m.opt.WorkerArgs...)
	env := append(workerEnv(), "SLUICE_READY_FD=3", listen.EnvFDs+"="+listen.Encode(addrs, 4),
		fmt.Sprintf("SLUICE_GENERATION=%d", gen), EnvControl+"="+m.opt.Control)
	pid, err := syscall.ForkExec(exe, argv, &syscall.ProcAttr{Env: env, Files: files})
	readyW.Close()
	if err != nil {
		probe.Close()
		return nil, err
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		probe.Close()
		return nil, err
	}
	w := &worker{pid: pid, gen: gen, proc: proc, done: make(chan struct{}), probe: probe}
	go m.reap(w)

	ready := make(chan bool, 1)
	go func() {
		buf := make([]byte, 1)
		n, _ := probe.Read(buf)
		ready <- n == 1
	}()
	select {
	case ok := <-ready:
		if ok {
			m.log.Info("worker ready", "generation", gen, "pid", w.pid)
			return w, nil
		}
	case <-time.After(readyTimeout):
	}
	w.proc.Kill()
	<-w.done
	probe.Close()
	return nil, fmt.Errorf("worker generation %d (pid %d) did not become ready", gen, w.pid)
}

// workerEnv is the master's environment minus what only the master may use.
func workerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case EnvState, "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID", listen.EnvFDs, EnvControl:
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (m *Master) reap(w *worker) {
	st, err := w.proc.Wait()
	switch {
	case err != nil:
		m.log.Warn("lost track of worker", "generation", w.gen, "pid", w.pid, "err", err)
	case !st.Success():
		m.log.Warn("worker exited", "generation", w.gen, "pid", w.pid, "status", st.String())
	default:
		m.log.Info("worker exited", "generation", w.gen, "pid", w.pid)
	}
	if w.probe != nil {
		w.probe.Close()
	}
	close(w.done)
	m.exited <- w
}

// workerExited forgets a worker; a current worker that dies unasked is
// replaced on the same sockets.
func (m *Master) workerExited(w *worker) {
	for i, d := range m.draining {
		if d == w {
			m.draining = append(m.draining[:i], m.draining[i+1:]...)
			return
		}
	}
	if w != m.current || m.stopping {
		return
	}
	m.log.Error("worker died; starting a new one on the same sockets", "generation", w.gen, "pid", w.pid)
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 10*time.Second) {
		nw, err := m.spawn(w.gen)
		if err == nil {
			m.current = nw
			m.notify(m.status("worker restarted"))
			return
		}
		m.log.Error("cannot restart worker", "err", err, "retry_in", delay.String())
		time.Sleep(delay)
	}
}

// beginReload re-executes the binary from disk with the state kept; the
// new image finishes the reload. If exec fails, this image does it.
func (m *Master) beginReload(conn *net.UnixConn) {
	m.notify("RELOADING=1", monotonicUsec())
	st := state{Generation: m.gen, ControlFD: -1, ClientFD: -1, Started: m.started, Reloads: m.reloads}
	var dups []int // duplicates made for the exec, closed if it fails
	for addr, fd := range m.listeners {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
		st.Listeners = append(st.Listeners, listenerState{Addr: addr, FD: fd})
	}
	inherit := func(c syscall.Conn) int {
		fd, err := listen.DupFD(c)
		if err != nil {
			return -1
		}
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0)
		dups = append(dups, fd)
		return fd
	}
	st.ControlFD = inherit(m.control)
	if conn != nil {
		st.ClientFD = inherit(conn)
	}
	for _, w := range append([]*worker{m.current}, m.draining...) {
		if w != nil {
			ws := workerState{PID: w.pid, Generation: w.gen, ProbeFD: -1}
			if w.probe != nil {
				ws.ProbeFD = inherit(w.probe)
			}
			st.Workers = append(st.Workers, ws)
		}
	}
	data, _ := json.Marshal(st)
	exe, err := os.Executable()
	if err == nil {
		env := append(os.Environ(), EnvState+"="+string(data))
		undo := blockForExec()
		err = syscall.Exec(exe, append([]string{exe}, m.opt.Args...), env)
		undo()
	}
	// Still here: exec failed. Reload with the running binary.
	m.log.Error("cannot re-execute the binary; reloading the configuration with the running one", "err", err)
	for _, fd := range m.listeners {
		unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
	}
	for _, fd := range dups {
		unix.Close(fd)
	}
	m.reload(conn)
}

func loadState() (state, bool, error) {
	var st state
	v := os.Getenv(EnvState)
	os.Unsetenv(EnvState)
	if v == "" {
		return st, false, nil
	}
	return st, true, json.Unmarshal([]byte(v), &st)
}

// adopt rebuilds the master from the state of the image before exec and
// returns the reload requester's connection, if any.
func (m *Master) adopt(st state) *net.UnixConn {
	m.gen, m.started, m.reloads = st.Generation, st.Started, st.Reloads
	for _, l := range st.Listeners {
		unix.FcntlInt(uintptr(l.FD), unix.F_SETFD, unix.FD_CLOEXEC)
		m.listeners[l.Addr] = l.FD
	}
	if st.ControlFD >= 0 {
		f := os.NewFile(uintptr(st.ControlFD), "control")
		if ln, err := net.FileListener(f); err == nil {
			m.control = ln.(*net.UnixListener)
			m.control.SetUnlinkOnClose(true)
		}
		f.Close()
	}
	for i, ws := range st.Workers {
		p, err := os.FindProcess(ws.PID)
		if err != nil {
			continue
		}
		w := &worker{pid: ws.PID, gen: ws.Generation, proc: p, done: make(chan struct{})}
		if ws.ProbeFD >= 0 {
			unix.CloseOnExec(ws.ProbeFD)
			w.probe = os.NewFile(uintptr(ws.ProbeFD), "probe")
		}
		go m.reap(w)
		if i == 0 {
			m.current = w
		} else {
			m.draining = append(m.draining, w)
		}
	}
	// The configuration the current generation runs, for a restart if the
	// reload fails; errors here are the reload's to report.
	m.cfg, _ = m.load()
	var client *net.UnixConn
	if st.ClientFD >= 0 {
		f := os.NewFile(uintptr(st.ClientFD), "client")
		if c, err := net.FileConn(f); err == nil {
			client, _ = c.(*net.UnixConn)
		}
		f.Close()
	}
	return client
}

// reload checks the configuration and, if good, replaces the current
// generation. It answers conn, if any, with the outcome.
func (m *Master) reload(conn *net.UnixConn) {
	start := time.Now()
	reply := func(lines []string) {
		if conn != nil {
			fmt.Fprintln(conn, strings.Join(append(lines, "END"), "\n"))
			conn.Close()
		}
	}
	fail := func(reason string, detail []string) {
		m.log.Error("reload failed: the running generation keeps serving", "reason", reason, "generation", m.gen)
		for _, d := range detail {
			m.log.Error(d)
		}
		m.notify("READY=1", m.status("reload failed: "+reason))
		reply(append([]string{"FAIL " + reason}, detail...))
	}
	cfg, diags := m.load()
	if cfg == nil {
		fail("configuration has errors", diags)
		return
	}
	if err := m.bind(cfg); err != nil {
		fail(err.Error(), nil)
		return
	}
	prev := m.cfg
	m.cfg = cfg
	w, err := m.spawn(m.gen + 1)
	if err != nil {
		m.cfg = prev
		fail(err.Error(), nil)
		return
	}
	old := m.current
	m.gen, m.current = m.gen+1, w
	m.reloads++
	if old != nil {
		// The new worker accepts on the same sockets: the old one stops
		// accepting, and says so before we answer, so that no connection
		// made after the answer reaches the old configuration. Then it
		// drains what it holds. (A worker of an older binary only echoes:
		// SIGTERM stops it as before.)
		if !old.ask(ProbeStop, time.Second) {
			m.log.Warn("the previous worker did not confirm it stopped accepting", "generation", old.gen, "pid", old.pid)
		}
		old.proc.Signal(syscall.SIGTERM)
		m.draining = append(m.draining, old)
		for len(m.draining) > maxDraining {
			oldest := m.draining[0]
			m.log.Warn("too many draining generations: killing the oldest", "generation", oldest.gen, "pid", oldest.pid)
			oldest.proc.Kill()
			m.draining = m.draining[1:]
		}
	}
	m.closeUnused(cfg)
	m.log.Info("reloaded", "generation", m.gen, "pid", w.pid, "took", time.Since(start).String(), "version", version.Version)
	m.notify("READY=1", m.status("reloaded"))
	reply(append([]string{fmt.Sprintf("OK generation %d, worker pid %d, version %s", m.gen, w.pid, version.Version)}, diags...))
}

// closeUnused closes the master's copy of sockets the configuration no
// longer binds; draining workers hold their own until they stop.
func (m *Master) closeUnused(cfg *hcl.Config) {
	used := m.sockets(cfg)
	for addr, fd := range m.listeners {
		if _, ok := used[addr]; !ok {
			unix.Close(fd)
			delete(m.listeners, addr)
			m.log.Info("closed listener no longer configured", "addr", addr)
		}
	}
}

// stop stops every worker (gracefully on SIGTERM) and returns the exit code.
func (m *Master) stop(sig syscall.Signal) int {
	m.stopping = true
	m.notify("STOPPING=1")
	m.log.Info("stopping", "signal", sig.String())
	all := append([]*worker{}, m.draining...)
	if m.current != nil {
		all = append(all, m.current)
	}
	for _, w := range all {
		w.proc.Signal(sig)
	}
	// Close our copies of the listening sockets too, so that new clients
	// are refused at once (and fail over) instead of waiting in an accept
	// queue nobody will serve; sessions under way are the workers'.
	for addr, fd := range m.listeners {
		unix.Close(fd)
		delete(m.listeners, addr)
	}
	grace := 5 * time.Second
	if sig == syscall.SIGTERM {
		grace = 24 * time.Hour
		if m.cfg != nil && m.cfg.Global.HardStopAfter > 0 {
			grace = m.cfg.Global.HardStopAfter + 5*time.Second
		}
	}
	deadline := time.After(grace)
	for _, w := range all {
		select {
		case <-w.done:
		case <-deadline:
			w.proc.Kill()
			<-w.done
		}
	}
	if m.control != nil {
		m.control.Close()
	}
	return 0
}

// status is the STATUS= line for systemd.
func (m *Master) status(what string) string {
	var pids []string
	if m.current != nil {
		pids = append(pids, fmt.Sprint(m.current.pid))
	}
	for _, d := range m.draining {
		pids = append(pids, fmt.Sprint(d.pid))
	}
	return fmt.Sprintf("STATUS=%s: generation %d, worker pids %s", what, m.gen, strings.Join(pids, " "))
}

func monotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return fmt.Sprintf("MONOTONIC_USEC=%d", ts.Nano()/1000)
}

// listenControl opens the control socket, replacing a stale one.
func (m *Master) listenControl() error {
	if i := strings.LastIndexByte(m.opt.Control, '/'); i > 0 {
		os.MkdirAll(m.opt.Control[:i], 0o755)
	}
	if c, err := net.Dial("unix", m.opt.Control); err == nil {
		c.Close()
		return fmt.Errorf("another sluice master answers on %s", m.opt.Control)
	}
	os.Remove(m.opt.Control)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: m.opt.Control, Net: "unix"})
	if err != nil {
		return err
	}
	os.Chmod(m.opt.Control, 0o600)
	m.control = ln
	return nil
}

// serveControl answers "reload" and "status" on the control socket.
func (m *Master) serveControl() {
	if m.control == nil {
		return
	}
	for {
		c, err := m.control.AcceptUnix()
		if err != nil {
			return
		}
		go func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(io.LimitReader(c, 256)).ReadString('\n')
			c.SetReadDeadline(time.Time{})
			switch cmd := strings.TrimSpace(line); cmd {
			case "reload", "status":
				m.requests <- controlRequest{cmd, c} // answered by Run's goroutine
				return
			default:
				fmt.Fprintf(c, "FAIL unknown command %q\nEND\n", cmd)
			}
			c.Close()
		}()
	}
}

// Ask sends cmd ("reload" or "status") to the master's control socket and
// returns its answer's lines without the closing END; ok says the answer
// began with OK. A reload's answer comes once the new generation serves.
func Ask(control, cmd string, timeout time.Duration) (ok bool, lines []string, err error) {
	c, err := net.DialTimeout("unix", control, 5*time.Second)
	if err != nil {
		return false, nil, fmt.Errorf("cannot reach the master at %s: %w", control, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "%s\n", cmd)
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		line = strings.TrimRight(line, "\n")
		if line == "END" {
			return len(lines) > 0 && strings.HasPrefix(lines[0], "OK"), lines, nil
		}
		if err != nil {
			return false, lines, fmt.Errorf("no answer from the master: %w", err)
		}
		lines = append(lines, line)
	}
}
