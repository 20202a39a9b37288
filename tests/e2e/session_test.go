package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sluice/daemon/proxyproto"
)

// proxyBackend expects a PROXY header on each connection, passes it on
// through got, writes greeting, then echoes.
func proxyBackend(t *testing.T, greeting string) (*backend, chan proxyproto.Header) {
	got := make(chan proxyproto.Header, 1)
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		defer c.Close()
		h, err := proxyproto.Read(c.(*net.TCPConn), time.Now().Add(2*time.Second))
		if err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		got <- h
		io.WriteString(c, greeting)
		io.Copy(c, c)
	}
	return b, got
}

// header is the PROXY header the backend got, or fails the test when
// none came (sluice never connected, or the backend could not read one).
func header(t *testing.T, got chan proxyproto.Header) proxyproto.Header {
	t.Helper()
	select {
	case h := <-got:
		return h
	case <-time.After(5 * time.Second):
		t.Fatal("the backend got no PROXY header")
		return proxyproto.Header{}
	}
}

func TestSendProxyV2(t *testing.T) {
	t.Parallel()
	b, got := proxyBackend(t, "s\n")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startSluice(t, config(fe, fmt.Sprintf(`
  server "s" {
    address    = %q
    send_proxy = "v2"
  }
`, b.addr)))
	c, _ := dial(t, fe)
	defer c.Close()
	h := header(t, got)
	if h.Version != 2 || h.Local || h.Src.String() != c.LocalAddr().String() || h.Dst.String() != fe {
		t.Errorf("backend got %+v; want v2 PROXY from %s to %s", h, c.LocalAddr(), fe)
	}
	// The payload after the header is intact.
	fmt.Fprintf(c, "ping\n")
	line, err := c.r.ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Errorf("echo after header = %q, %v", line, err)
	}
}

func TestAcceptProxyPassesClientOn(t *testing.T) {
	t.Parallel()
	b, got := proxyBackend(t, "")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  server "s" {
    address    = %q
    send_proxy = "v1"
  }
`, b.addr), "accept_proxy = true"))
	c, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "PROXY TCP4 192.0.2.7 198.51.100.1 55555 443\r\nhello\n")
	h := header(t, got)
	if h.Src.String() != "192.0.2.7:55555" || h.Dst.String() != "198.51.100.1:443" {
		t.Errorf("backend got %+v; want the client named in the incoming header", h)
	}
	buf := make([]byte, 6)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello\n" {
		t.Errorf("payload = %q, %v", buf, err)
	}
	c.Close()
	d.waitLog(`192\.0\.2\.7:55555 \[`, 2*time.Second)
}

func TestHalfClose(t *testing.T) {
	t.Parallel()
	// The server reads until the client's FIN, then answers with a digest
	// and closes: only a proxy that passes the half-close on gets the answer.
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		fmt.Fprintf(c, "%x\n", h.Sum(nil))
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, servers(b)))
	c, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answer, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%x\n", sha256.Sum256(payload))
	if string(answer) != want {
		t.Errorf("answer after half-close = %q, want %q", answer, want)
	}
	d.waitLog(` fe be/s \d+/\d+/\d+ 65 -- `, 2*time.Second)
}

// TestStalledReaders has each side stop reading for a while, so that
// sluice's writes find the other socket full and must wait for room, in
// both directions: every byte still arrives once reading resumes.
func TestStalledReaders(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	const stall = 300 * time.Millisecond
	payload := make([]byte, size)
	rand.Read(payload)
	want := fmt.Sprintf("%x", sha256.Sum256(payload))
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		defer c.Close()
		var what [1]byte
		if _, err := io.ReadFull(c, what[:]); err != nil {
			return
		}
		if what[0] == 'd' { // download: send, the client stalls
			c.Write(payload)
			return
		}
		time.Sleep(stall) // upload: stall, then read it all
		h := sha256.New()
		io.Copy(h, c)
		fmt.Fprintf(c, "%x", h.Sum(nil))
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, servers(b)))

	c, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("d"))
	time.Sleep(stall)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("download after a stall: %v (%d of %d bytes)", err, len(got), size)
	}
	if digest := fmt.Sprintf("%x", sha256.Sum256(got)); len(got) != size || digest != want {
		t.Errorf("download after a stall: %d bytes, digest %s; want %d, %s", len(got), digest, size, want)
	}

	c2, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	go func() {
		c2.Write([]byte("u"))
		c2.Write(payload)
		c2.(*net.TCPConn).CloseWrite()
	}()
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	answer, err := io.ReadAll(c2)
	if err != nil || string(answer) != want {
		t.Errorf("upload to a stalled server: answer %q, %v; want %q", answer, err, want)
	}
	d.waitLog(` fe be/s \d+/\d+/\d+ 64 -- `, 2*time.Second)
}

func TestBadClientsDoNotDisturbOthers(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "s")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	proxied := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, fmt.Sprintf(`
defaults {
  log = "global"
  timeout {
    client = "300ms"
    server = "30s"
  }
}
frontend "fe" {
  bind            = [%q]
  default_backend = "be"
}
frontend "pp" {
  bind            = [%q]
  accept_proxy    = true
  default_backend = "be"
}
backend "be" {
  server "s" { address = %q }
}
`, fe, proxied, b.addr))

	// A steady client echoes throughout; its bytes must come back intact.
	steady, _ := dial(t, fe)
	defer steady.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			msg := fmt.Sprintf("message %d\n", i)
			steady.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err := steady.Write([]byte(msg)); err != nil {
				t.Errorf("steady client write: %v", err)
				return
			}
			line, err := steady.r.ReadString('\n')
			if err != nil || line != msg {
				t.Errorf("steady client got %q, %v; want %q", line, err, msg)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	for range 20 {
		// Garbage where a PROXY header is expected: closed, logged PR.
		if c, err := net.Dial("tcp", proxied); err == nil {
			c.Write([]byte("\x16\x03\x01garbage\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if n, err := c.Read(make([]byte, 10)); err == nil {
				t.Errorf("garbage instead of a PROXY header got %d bytes back", n)
			}
			c.Close()
		}
		// Reset right after connecting.
		if c, err := net.Dial("tcp", fe); err == nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		// Random bytes then reset mid-stream.
		if c, err := net.Dial("tcp", fe); err == nil {
			junk := make([]byte, 4096)
			rand.Read(junk)
			c.Write(junk)
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}
	// An idle client is closed after timeout client, logged cD.
	idle, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	start := time.Now()
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	io.Copy(io.Discard, idle) // the greeting, then EOF when sluice gives up
	if took := time.Since(start); took < 250*time.Millisecond || took > 2*time.Second {
		t.Errorf("idle client closed after %v, want about timeout client (300ms)", took)
	}
	close(stop)
	wg.Wait()
	d.waitLog(` fe be/s \d+/\d+/\d+ \d+ cD `, 2*time.Second)
	d.waitLog(` pp be/<NOSRV> -1/-1/\d+ 0 PR `, 2*time.Second)
	if strings.Contains(d.out.String(), "panic") {
		t.Error("sluice panicked")
	}
}

// TestSplicePath runs sluice under strace and checks that a bulk transfer
// moves through splice(2) rather than read(2)/write(2) copies.
func TestSplicePath(t *testing.T) {
	t.Parallel()
	strace, err := exec.LookPath("strace")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("strace is not installed (tests/deps.sh installs it)")
		}
		t.Skip("strace is not installed: cannot observe the splice path")
	}
	const size = 64 << 20
	b := newBackend(t, "sink")
	received := make(chan int64, 1)
	b.handle = func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		received <- n
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	cfgPath := dir + "/sluice.hcl"
	os.WriteFile(cfgPath, []byte(config(fe, servers(b))), 0o644)
	out := dir + "/strace.txt"
	cmd := exec.Command(strace, "-f", "-qq", "-e", "trace=splice,read,write,recvfrom", "-o", out, sluiceBin, "run", "--no-master", "-f", cfgPath)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// strace detaches on SIGINT and leaves its tracee running: stop sluice
	// itself, whose pid starts every line of the trace.
	sluicePID := func() int {
		trace, _ := os.ReadFile(out)
		pid, _ := strconv.Atoi(strings.Fields(string(trace) + " 0")[0])
		return pid
	}
	defer func() {
		if pid := sluicePID(); pid > 0 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	}()
	eventually(t, 10*time.Second, "sluice under strace to listen", func() bool {
		c, err := net.Dial("tcp", fe)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	<-received // the probe connection
	c, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for range size / len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if n := <-received; n != size {
		t.Fatalf("server received %d bytes, want %d", n, size)
	}
	syscall.Kill(sluicePID(), syscall.SIGINT)
	cmd.Wait()
	trace, _ := os.ReadFile(out)
	var spliced, copied int64
	// With -f, a call may be split into "<unfinished ...>" and "<... resumed>" lines.
	rx := regexp.MustCompile(`(?m)^\d+\s+(?:(splice|read|write)\((\d+),|<\.\.\. (splice|read|write) resumed>).*\)\s+= (\d+)`)
	for _, m := range rx.FindAllStringSubmatch(string(trace), -1) {
		call := m[1] + m[3]
		n, _ := strconv.ParseInt(m[4], 10, 64)
		fd, _ := strconv.Atoi(m[2])
		switch {
		case call == "splice":
			spliced += n
		case m[2] == "" || fd > 2: // not the daemon's own stderr log
			copied += n
		}
	}
	// A direction copies through a 16 KiB buffer until one read fills it,
	// then splices: every later byte crosses two splices, socket to pipe
	// and pipe to socket. Allow a few copied buffers (bursts shorter than
	// the buffer before the stream gets going).
	const copiedMax = 64 << 10
	if spliced < 2*(size-copiedMax) {
		t.Errorf("splice(2) moved %d bytes, want at least %d (2 × (%d - %d))", spliced, 2*(size-copiedMax), size, copiedMax)
	}
	if copied > copiedMax {
		t.Errorf("read/write moved %d bytes: the data did not stay on the splice path", copied)
	}
	t.Logf("splice moved %d bytes; read/write on sockets %d bytes", spliced, copied)
}

// TestPooledSessionsStayApart runs many short sessions at once, ending in
// every way (half-close, the client's reset after the answer, the
// client's reset mid-request), while show sess looks at them: sluice
// reuses ended sessions, and each must carry its own bytes only and be
// logged with its own count.
func TestPooledSessionsStayApart(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		data, _ := io.ReadAll(c)
		c.Write(data)
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(b))
	d := startSluice(t, cfg)

	const workers, each, maxLen = 8, 150, 3000
	stop := make(chan struct{})
	looked := make(chan int)
	go func() { // show sess holds the sessions it lists
		n := 0
		for {
			select {
			case <-stop:
				looked <- n
				return
			default:
			}
			ctl(t, admin, "show sess")
			n++
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c, err := net.Dial("tcp", fe)
				if err != nil {
					t.Error(err)
					return
				}
				tc := c.(*net.TCPConn)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				payload := []byte(fmt.Sprintf("%d/%d:", w, i))
				payload = append(payload, make([]byte, (w*each+i*37)%maxLen)...)
				rand.Read(payload[len(fmt.Sprintf("%d/%d:", w, i)):])
				switch i % 3 {
				case 0, 1:
					c.Write(payload)
					tc.CloseWrite()
					got := make([]byte, len(payload))
					if _, err := io.ReadFull(c, got); err != nil || string(got) != string(payload) {
						mu.Lock()
						wrong = append(wrong, fmt.Sprintf("%d/%d: %d bytes back, %v", w, i, len(got), err))
						mu.Unlock()
					}
					if i%3 == 1 {
						tc.SetLinger(0) // a reset once answered
					} else {
						io.ReadAll(c)
					}
				case 2:
					c.Write(payload[:len(payload)/2])
					tc.SetLinger(0) // a reset mid-request
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(stop)
	if n := <-looked; n == 0 {
		t.Error("show sess never ran during the sessions")
	}
	if len(wrong) > 0 {
		t.Fatalf("%d sessions got other bytes than their own, first: %s", len(wrong), wrong[0])
	}
	eventually(t, 5*time.Second, "show sess empty", func() bool {
		out, _ := ctl(t, admin, "show sess")
		return !strings.Contains(out, "fe=fe")
	})
	eventually(t, 5*time.Second, "a log line per session", func() bool {
		return len(d.logLines(` fe be/s `)) == workers*each
	})
	rx := regexp.MustCompile(` fe be/s \d+/\d+/\d+ (\d+) `)
	for _, l := range d.logLines(` fe be/s `) {
		m := rx.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("log line without bytes: %s", l)
		}
		if n, _ := strconv.Atoi(m[1]); n > maxLen+16 {
			t.Fatalf("a session logged %d bytes, more than any sent (counted over reuse?): %s", n, l)
		}
	}
}

// TestTCPSessionsDoNotAllocate reads sluice's own allocation count
// (go_memstats_mallocs_total) over thousands of TCP sessions: ended
// sessions are reused, so a session allocates nothing once a few are
// pooled (before pooling it was about six objects).
func TestTCPSessionsDoNotAllocate(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "s")
	b.handle = func(c net.Conn) {
		c.Write([]byte("x"))
		c.Close()
	}
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mon := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startSluice(t, config(fe, servers(b))+fmt.Sprintf(`
listen "metrics" {
  mode = "http"
  bind = [%q]
  prometheus { uri = "/metrics" }
}
`, mon))
	session := func() {
		c, err := net.Dial("tcp", fe)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	mallocs := func() float64 {
		// A new connection for each scrape, so that each costs the same:
		// a kept one parks and resumes at its own pace.
		http.DefaultClient.CloseIdleConnections()
		v, ok := value(scrape(t, "http://"+mon+"/metrics"), "go_memstats_mallocs_total", nil)
		if !ok {
			t.Fatal("no go_memstats_mallocs_total in /metrics")
		}
		return v
	}
	for range 200 { // fill the pool
		session()
	}
	// The count includes one scrape (1-3 thousand objects) and the
	// worker's own periodic work: of three rounds, the quietest counts.
	const n = 5000
	best := -1.0
	for range 3 {
		m := mallocs()
		for range n {
			session()
		}
		per := (mallocs() - m) / n
		t.Logf("%.2f allocations per session", per)
		if best < 0 || per < best {
			best = per
		}
	}
	if best > 1 {
		t.Errorf("%.2f allocations per TCP session in the quietest of three rounds, want none", best)
	}
}
