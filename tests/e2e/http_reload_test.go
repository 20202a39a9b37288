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

	var ok, failed, closes, retried atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
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
					if c, err = net.DialTimeout("tcp", fe, 5*time.Second); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, &err)
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
					// A kept-alive connection closed just as the request
					// left: nothing was answered, a client sends it again.
					if reused && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) && br.Buffered() == 0 {
						retried.Add(1)
						continue
					}
					failed.Add(1)
					e := fmt.Errorf("request %d (reused %v): %w", i, reused, err)
					firstErr.CompareAndSwap(nil, &e)
					continue
				}
				if resp.StatusCode != 200 {
					failed.Add(1)
					e := fmt.Errorf("status %d", resp.StatusCode)
					firstErr.CompareAndSwap(nil, &e)
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
	wg.Wait()
	t.Logf("%d requests answered, %d answered with connection: close, %d resent after an idle close, %d failed", ok.Load(), closes.Load(), retried.Load(), failed.Load())
	if failed.Load() > 0 {
		t.Errorf("%d requests failed; first: %v", failed.Load(), *firstErr.Load())
	}
	if retried.Load() > 0 {
		t.Errorf("%d requests met a kept-alive connection closed under them", retried.Load())
	}
	if closes.Load() == 0 {
		t.Error("no response from a draining generation said connection: close")
	}
	if ok.Load() < 500 {
		t.Errorf("only %d requests", ok.Load())
	}
	// Every old generation exits without waiting for hard_stop_after.
	r.waitLog(`worker exited component=master generation=10 `, 10*time.Second)
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}
