package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func httpConfig(fe, server string) string {
	return fmt.Sprintf(httpDefaults+`
global { hard_stop_after = "30s" }
listen "fe" {
  bind = ["%s"]
  log  = "none"
  # Longer than the test waits: only the reload may close an idle
  # keep-alive connection in time.
  timeout { http_keep_alive = "30s" }
  server "s" { address = "%s" }
}
`, fe, server)
}

// TestHTTPReloadKeepAlive reloads ten times under keep-alive clients: no
// request fails, responses from a draining generation say "connection:
// close", a request sent right after a keep-alive response of a stopping
// generation is answered rather than met by a closed socket, and idle
// keep-alive connections are closed within a second instead of holding
// the old generation until hard_stop_after.
func TestHTTPReloadKeepAlive(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startReloadable(t, httpConfig(fe, web.addr), sluiceBin)

	// An idle keep-alive connection from before the reloads.
	idle, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	fmt.Fprint(idle, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("first request: %v %v", resp, err)
	} else {
		io.ReadAll(resp.Body)
	}

	stop := make(chan struct{})
	result := keepAliveLoad(fe, 8, stop)
	for gen := 2; gen <= 11; gen++ {
		time.Sleep(150 * time.Millisecond)
		if out, errOut, code := r.reload(httpConfig(fe, web.addr)); code != 0 {
			t.Fatalf("reload %d: %s%s", gen, out, errOut)
		}
		if gen == 2 {
			// The idle connection of generation 1 is closed, promptly.
			idle.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := idleR.ReadByte(); !errors.Is(err, io.EOF) && !isReset(err) {
				t.Errorf("idle keep-alive connection after reload: %v, want it closed", err)
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	res := result()
	t.Logf("%s", res)
	if err := res.err(); err != nil {
		t.Error(err)
	}
	if res.closes == 0 {
		t.Error("no response from a draining generation said connection: close")
	}
	if res.ok < 500 {
		t.Errorf("only %d requests", res.ok)
	}
	// Every old generation exits without waiting for hard_stop_after.
	r.waitLog(`worker exited component=master generation=10 `, 10*time.Second)
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// keepAliveResult counts what keep-alive clients saw.
type keepAliveResult struct {
	ok, closes, failed, closedUnder int64
	first                           error
}

func (r keepAliveResult) String() string {
	return fmt.Sprintf("%d keep-alive requests answered (%d with connection: close), %d met a connection closed under them, %d failed",
		r.ok, r.closes, r.closedUnder, r.failed)
}

// err is non-nil when any request failed or met a kept-alive connection
// closed under it.
func (r keepAliveResult) err() error {
	if r.failed+r.closedUnder == 0 {
		return nil
	}
	return fmt.Errorf("keep-alive clients: %s; first: %v", r, r.first)
}

// keepAliveLoad runs HTTP/1.1 clients that send request after request on
// one connection, opening a new one only when a response says
// connection: close, until stop is closed.
func keepAliveLoad(addr string, workers int, stop <-chan struct{}) func() keepAliveResult {
	var ok, failed, closes, closedUnder atomic.Int64
	var first atomic.Pointer[error]
	fail := func(counter *atomic.Int64, err error) {
		counter.Add(1)
		first.CompareAndSwap(nil, &err)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c net.Conn
			var br *bufio.Reader
			for i := 0; ; i++ {
				select {
				case <-stop:
					if c != nil {
						c.Close()
					}
					return
				default:
				}
				reused := c != nil
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
						fail(&failed, err)
						c = nil
						continue
					}
					br = bufio.NewReader(c)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "GET /w%d/%d HTTP/1.1\r\nHost: x\r\n\r\n", w, i)
				resp, err := http.ReadResponse(br, nil)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
				}
				if err != nil {
					c.Close()
					c = nil
					if reused && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) {
						fail(&closedUnder, fmt.Errorf("request %d: %w", i, err))
					} else {
						fail(&failed, fmt.Errorf("request %d (reused %v): %w", i, reused, err))
					}
					continue
				}
				if resp.StatusCode != 200 {
					fail(&failed, fmt.Errorf("status %d", resp.StatusCode))
				} else {
					ok.Add(1)
				}
				if resp.Close {
					closes.Add(1)
					c.Close()
					c = nil
				}
			}
		}()
	}
	return func() keepAliveResult {
		wg.Wait()
		r := keepAliveResult{ok: ok.Load(), closes: closes.Load(), failed: failed.Load(), closedUnder: closedUnder.Load()}
		if f := first.Load(); f != nil {
			r.first = *f
		}
		return r
	}
}
