// Package e2e drives the real sluice binary over loopback: real sockets,
// real processes, real backends written in Go in the test process.
package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sluice/tests/serve"
)

var sluiceBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sluice-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	sluiceBin = filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-trimpath", "-tags", "netgo,osusergo", "-o", sluiceBin, "sluice/cmd/sluice")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("SLUICE_E2E_RACE") == "1" {
		// A developer's check: the daemon under the race detector (needs cgo).
		build = exec.Command("go", "build", "-race", "-o", sluiceBin, "sluice/cmd/sluice")
		build.Env = append(os.Environ(), "CGO_ENABLED=1")
	}
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building sluice:", err)
		return 1
	}
	return m.Run()
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemon is a running sluice.
type daemon struct {
	t       *testing.T
	control string // the master's control socket
	path    string // the configuration file
	cmd     *exec.Cmd
	out     *syncBuffer
	exited  chan struct{}
}

// startSluice writes config to a file and runs the binary under test on
// it until the test ends; it returns once sluice says it started.
func startSluice(t *testing.T, config string, args ...string) *daemon {
	t.Helper()
	return launch(t, sluiceBin, config, nil, args...)
}

// launch runs bin (a sluice) on config with extra environment and args.
func launch(t *testing.T, bin, config string, env []string, args ...string) *daemon {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.hcl")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, out: &syncBuffer{}, exited: make(chan struct{}), control: controlPath(t), path: path}
	d.cmd = exec.Command(bin, append([]string{"run", "-f", path, "--control", d.control}, args...)...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.stop()
		if t.Failed() {
			out := d.out.String()
			if len(out) > 20000 {
				out = "...\n" + out[len(out)-20000:]
			}
			t.Logf("sluice output (end):\n%s", out)
		}
	})
	d.waitLog(`INFO sluice started`, 5*time.Second)
	return d
}

// startProcess runs a command with its output collected, stopped with
// SIGINT when the test ends.
func startProcess(t *testing.T, name string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(name, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	})
	return cmd, out
}

func (d *daemon) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// waitLog waits for a line of output matching re and returns it.
func (d *daemon) waitLog(re string, timeout time.Duration) string {
	d.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(timeout)
	for {
		if m := rx.FindString(d.out.String()); m != "" {
			return m
		}
		select {
		case <-d.exited:
			d.t.Fatalf("sluice exited while waiting for %q:\n%s", re, d.out.String())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no output matching %q within %v:\n%s", re, timeout, d.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logLines returns the output lines matching re.
func (d *daemon) logLines(re string) []string {
	rx := regexp.MustCompile(re)
	var out []string
	for _, l := range strings.Split(d.out.String(), "\n") {
		if rx.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// controlPath returns a control socket path short enough for sun_path.
func controlPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "control.sock")
}

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// backend is a test server that greets each connection with its name and
// then echoes, like examples/demo-backends.
type backend struct {
	t        *testing.T
	name     string
	addr     string
	ln       net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
	// handle, if set, replaces greet-and-echo.
	handle func(c net.Conn)
}

// rawServer serves each connection to a loopback listener with handle,
// on its own goroutine, until the test ends, and returns its address.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := serve.Loopback(handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// dialPort connects to a loopback port (sluice's frontend) for raw
// bytes; the connection closes when the test ends.
func dialPort(t *testing.T, port int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{t: t, name: name}
	b.start("127.0.0.1:0")
	t.Cleanup(b.kill)
	return b
}

func (b *backend) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		b.t.Fatal(err)
	}
	b.ln, b.addr = ln, ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			go func() {
				if b.handle != nil {
					b.handle(c)
					return
				}
				defer c.Close()
				fmt.Fprintf(c, "%s\n", b.name)
				io.Copy(c, c)
			}()
		}
	}()
}

// kill closes the listener and every connection, as a crashed server would.
func (b *backend) kill() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

// restart listens again on the same address.
func (b *backend) restart() { b.start(b.addr) }

// client is a connection through sluice and the greeting it got.
type client struct {
	net.Conn
	r *bufio.Reader
}

// dial connects and reads the greeting line; it fails the test on error.
func dial(t *testing.T, addr string) (*client, string) {
	t.Helper()
	c, greet, err := tryDial(addr, 3*time.Second)
	if err != nil {
		t.Fatalf("through %s: %v", addr, err)
	}
	return c, greet
}

func tryDial(addr string, timeout time.Duration) (*client, string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, "", err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("reading greeting: %w (got %q)", err, line)
	}
	return &client{c, r}, strings.TrimSpace(line), nil
}

// greet opens a connection, reads the greeting and closes.
func greet(t *testing.T, addr string) string {
	t.Helper()
	c, g := dial(t, addr)
	c.Close()
	return g
}

// eventually retries f until it returns true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
