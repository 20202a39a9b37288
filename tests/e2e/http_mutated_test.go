package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Valid messages the mutated traffic starts from: the framings and
// protocol switches sluice must get right.
var (
	requestTemplates = []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nframes",
		"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nCookie: SRV=s; x=1\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip, deflate\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
	}
	responseTemplates = []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300\r\n\r\n" + strings.Repeat("x", 300),
		"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n100\r\n" + strings.Repeat("y", 256) + "\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nframes",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\nSet-Cookie: a=b\r\n\r\nabc",
		"HTTP/1.1 302 Found\r\nLocation: /x\r\nConnection: close\r\n\r\n",
	}
)

// mutate applies one to four random edits to a template: a byte changed,
// a byte that matters to HTTP inserted, a byte deleted, a run repeated,
// or the end cut off.
func mutate(r *rand.Rand, s string) []byte {
	b := []byte(s)
	const special = "\r\n :;,0129afF\x00\x7f\xff\t\""
	for range 1 + r.IntN(4) {
		if len(b) == 0 {
			break
		}
		i := r.IntN(len(b))
		switch r.IntN(5) {
		case 0:
			b[i] = byte(r.IntN(256))
		case 1:
			b = append(b[:i], append([]byte{special[r.IntN(len(special))]}, b[i:]...)...)
		case 2:
			b = append(b[:i], b[i+1:]...)
		case 3:
			j := min(len(b), i+1+r.IntN(16))
			b = append(b[:j], append(append([]byte{}, b[i:j]...), b[j:]...)...)
		case 4:
			b = b[:i]
		}
	}
	return b
}

// TestHTTPMutatedTraffic sends requests with random edits through sluice
// to a server that answers with random edits of valid responses. sluice
// must answer or close each connection, keep running, and serve a clean
// request afterwards. The seed is logged, and SLUICE_TEST_SEED replays it.
func TestHTTPMutatedTraffic(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("SLUICE_TEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (SLUICE_TEST_SEED replays it)", seed)

	// The mangling server: one read, one mutated response, then it reads
	// on until the client or its deadline ends the connection.
	var conns, served atomic.Int64
	mangler := rawServer(t, func(c net.Conn) {
		r := rand.New(rand.NewPCG(seed, uint64(conns.Add(1))))
		c.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64<<10)
		if _, err := c.Read(buf); err != nil {
			return
		}
		served.Add(1)
		c.Write(mutate(r, responseTemplates[r.IntN(len(responseTemplates))]))
		io.Copy(io.Discard, c)
	})
	web := newWebServer(t, "web")
	mangled, clean := freePort(t), freePort(t)
	d := startSluice(t, fmt.Sprintf(httpDefaults+`
listen "mangled" {
  bind = ["127.0.0.1:%d"]
  compression { algorithms = ["gzip", "deflate"] }
  cookie {
    name     = "SRV"
    insert   = true
    indirect = true
  }
  server "s" { address = %q }
}
listen "clean" {
  bind = ["127.0.0.1:%d"]
  server "web" { address = %q }
}
`, mangled, mangler, clean, web.addr))

	const workers, perWorker = 8, 40
	var wg sync.WaitGroup
	var answered atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func(r *rand.Rand) {
			defer wg.Done()
			for range perWorker {
				c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", mangled))
				if err != nil {
					t.Errorf("connecting: %v", err)
					return
				}
				c.SetDeadline(time.Now().Add(500 * time.Millisecond))
				c.Write(mutate(r, requestTemplates[r.IntN(len(requestTemplates))]))
				if b, _ := io.ReadAll(c); len(b) > 0 {
					answered.Add(1)
				}
				c.Close()
			}
		}(rand.New(rand.NewPCG(seed, uint64(1<<32+w))))
	}
	wg.Wait()
	t.Logf("%d connections answered, %d reached the server", answered.Load(), served.Load())
	select {
	case <-d.exited:
		t.Fatalf("sluice exited under mutated traffic (seed %d)", seed)
	default:
	}
	if out := d.out.String(); strings.Contains(out, "panic") || strings.Contains(out, "fatal error") {
		t.Errorf("sluice reported a panic (seed %d)", seed)
	}
	if answered.Load() == 0 || served.Load() == 0 {
		t.Errorf("nothing answered (%d) or nothing reached the server (%d): the traffic did not get through", answered.Load(), served.Load())
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/after", clean))
	if err != nil {
		t.Fatalf("a clean request afterwards: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "web /after\n" {
		t.Errorf("a clean request afterwards: %d %q", resp.StatusCode, body)
	}
}
