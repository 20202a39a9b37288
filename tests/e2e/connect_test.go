package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// silentServer listens with a backlog of 0 and fills its accept queue's
// one place with a connection of its own, so that the kernel drops every
// SYN sent to it: a server that does not answer, on loopback. accept
// frees the queue and returns the listening descriptor.
func silentServer(t *testing.T) (addr string, accept func() int) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	// accept(2) gives up after 5 s rather than block a failing test.
	tv := unix.NsecToTimeval((5 * time.Second).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	sa, _ := unix.Getsockname(fd)
	addr = fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	filler, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a listener with a full accept queue answered: cannot stage a silent server")
	}
	return addr, func() int {
		nfd, _, err := unix.Accept(fd) // the filler, queued
		if err != nil {
			t.Error(err)
		}
		unix.Close(nfd)
		return fd
	}
}

// TestSlowConnect checks a server connection that takes a SYN
// retransmission (about a second) to complete: the session waits for it
// in sluice's poller and then carries bytes both ways, while other
// connections are accepted and served meanwhile.
func TestSlowConnect(t *testing.T) {
	t.Parallel()
	addr, accept := silentServer(t)
	fast := newBackend(t, "fast")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  timeout { connect = "5s" }
  server "slow" { address = %q }
  server "fast" { address = %q }
`, addr, fast.addr)))
	served := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		lfd := accept()
		// The next in the queue is sluice's, once its SYN is sent again.
		nfd, _, err := unix.Accept(lfd)
		if err != nil {
			served <- err
			return
		}
		c := os.NewFile(uintptr(nfd), "server side")
		defer c.Close()
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			_, err = fmt.Fprintf(c, "pong to %s", line)
		}
		served <- err
	}()
	start := time.Now()
	c, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(8 * time.Second))
	fmt.Fprintf(c, "ping\n")
	// Round robin sends the next connection to the other server: it must
	// not wait behind the slow connect.
	time.Sleep(100 * time.Millisecond)
	other := time.Now()
	if g := greet(t, fe); g != "fast" {
		t.Errorf("second connection went to %q, want fast", g)
	}
	if took := time.Since(other); took > 500*time.Millisecond {
		t.Errorf("a connection made during a slow connect took %v: accepting waited for it", took)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	took := time.Since(start)
	if err != nil || got != "pong to ping\n" {
		var serr error
		select {
		case serr = <-served:
		case <-time.After(6 * time.Second):
		}
		t.Fatalf("through a slow connect: %q, %v (server: %v)", got, err, serr)
	}
	if took < 800*time.Millisecond {
		t.Errorf("answered after %v: the connect cannot have waited for a SYN retransmission", took)
	}
	c.Close()
	line := d.waitLog(` fe be/slow \d+/\d+/\d+ \d+ -- `, 3*time.Second)
	tc, _ := strconv.Atoi(regexp.MustCompile(`be/slow \d+/(\d+)/`).FindStringSubmatch(line)[1])
	if tc < 800 {
		t.Errorf("log %q: Tc %d ms, want the time the connect took (about a second)", line, tc)
	}
}

// TestConnectTimeout checks that a server that never answers fails the
// session after timeout connect, once per attempt, with the state sC.
func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	addr, _ := silentServer(t)
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  retries = 1
  timeout { connect = "300ms" }
  server "silent" { address = %q }
`, addr)))
	start := time.Now()
	c, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	if n != 0 || err != io.EOF {
		t.Fatalf("read %d bytes, %v; want the connection closed", n, err)
	}
	if took < 550*time.Millisecond || took > 3*time.Second {
		t.Errorf("closed after %v, want two attempts of 300 ms", took)
	}
	d.waitLog(` fe be/silent \d+/-1/\d+ 0 sC \d+/\d+/\d+/\d+/1 `, 3*time.Second)
}
