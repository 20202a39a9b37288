package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHTTPHashBalancing: uri, url_param and hdr hashing send the same key
// to the same server, and spread different keys.
func TestHTTPHashBalancing(t *testing.T) {
	t.Parallel()
	a, b, c := newWebServer(t, "a"), newWebServer(t, "b"), newWebServer(t, "c")
	servers := fmt.Sprintf(`
  server "a" { address = "%s" }
  server "b" { address = "%s" }
  server "c" { address = "%s" }`, a.addr, b.addr, c.addr)
	ports := map[string]int{"uri": freePort(t), "url_param(user)": freePort(t), "hdr(X-Tenant)": freePort(t)}
	cfg := httpDefaults
	for algo, port := range ports {
		cfg += fmt.Sprintf(`
listen "%s" {
  bind      = ["127.0.0.1:%d"]
  balance   = "%s"
  hash_type = "consistent"
%s
}
`, strings.NewReplacer("(", "_", ")", "").Replace(algo), port, algo, servers)
	}
	startSluice(t, cfg)
	for algo, port := range ports {
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		spread := map[string]bool{}
		for k := range 30 {
			var first string
			for range 3 {
				var resp *http.Response
				switch algo {
				case "uri":
					resp, _ = fetch(t, fmt.Sprintf("%s/item/%d?r=%d", base, k, time.Now().UnixNano()))
				case "url_param(user)":
					resp, _ = fetch(t, fmt.Sprintf("%s/x?other=1&user=u%d", base, k))
				default:
					resp, _ = fetch(t, base+"/", "X-Tenant", fmt.Sprintf("t%d", k))
				}
				s := resp.Header.Get("X-Server")
				if first == "" {
					first = s
				} else if s != first {
					t.Errorf("%s: key %d went to %s then %s", algo, k, first, s)
				}
			}
			spread[first] = true
		}
		if len(spread) != 3 {
			t.Errorf("%s: 30 keys reached only %v", algo, spread)
		}
		// Without the key: round robin.
		if algo != "uri" {
			seen := map[string]bool{}
			for range 6 {
				resp, _ := fetch(t, base+"/nokey")
				seen[resp.Header.Get("X-Server")] = true
			}
			if len(seen) != 3 {
				t.Errorf("%s without key: %v, want round robin over all", algo, seen)
			}
		}
	}
}

// TestHTTPExpectContinue: a client that waits for 100 Continue gets it
// from the server through sluice, then its body goes through; a server
// that refuses early answers without reading the body.
func TestHTTPExpectContinue(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/refuse" {
			http.Error(rw, "too big", 413)
			return
		}
		b, _ := io.ReadAll(r.Body) // net/http sends 100 Continue on the first read
		fmt.Fprintf(rw, "got %d bytes", len(b))
	}
	port, _ := proxyTo(t, web.addr, "")
	c := dialPort(t, port)
	r := bufio.NewReader(c)
	fmt.Fprint(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("interim response: %q %v", line, err)
	}
	r.ReadString('\n') // the empty line ending the 100 head
	fmt.Fprint(c, "hello")
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "got 5 bytes" || resp.Close {
		t.Errorf("final response %d %q (close %v: a request whose body was read keeps the connection)", resp.StatusCode, body, resp.Close)
	}
	fmt.Fprint(c, "POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n")
	resp, err = http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 413 || !resp.Close {
		t.Errorf("early refusal: %v %v (it must close: the body was never read)", resp, err)
	}
}

// TestHTTPForwardedAndCaptures: RFC 7239 Forwarded reaches the server,
// and captured headers appear in the log.
func TestHTTPForwardedAndCaptures(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	port := freePort(t)
	d := startSluice(t, fmt.Sprintf(httpDefaults+`
frontend "fe" {
  bind      = ["127.0.0.1:%d"]
  forwarded = true
  capture "request" {
    header = "User-Agent"
    len    = 8
  }
  capture "response" { header = "X-Server" }
  default_backend = "be"
}
backend "be" {
  server "s" { address = "%s" }
}
`, port, web.addr))
	fetch(t, fmt.Sprintf("http://127.0.0.1:%d/f", port), "Host", "shop.example.com", "User-Agent", "curl/8.0.1-long")
	if got := web.last().Header.Get("Forwarded"); got != `for=127.0.0.1;host="shop.example.com";proto=http` {
		t.Errorf("Forwarded: %q", got)
	}
	d.waitLog(`fe be/s .* 200 \d+ - - ---- .* \{curl/8\.0\} \{web\} "GET /f HTTP/1.1"`, 2*time.Second)
}

// TestHTTPClientAbortLeavesNothingBehind: clients that hang up in the
// middle of big responses do not leave bytes that a later request would
// take for its response.
func TestHTTPClientAbortLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			rw.Header().Set("Content-Length", "1048576")
			io.Copy(rw, io.LimitReader(&pattern{}, 1<<20))
			return
		}
		io.WriteString(rw, "small")
	}
	port := freePort(t)
	startSluice(t, fmt.Sprintf(httpDefaults+`
global { threads = 1 }
listen "fe" {
  bind = ["127.0.0.1:%d"]
  server "s" { address = "%s" }
}
`, port, web.addr))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprint(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 70000)
		io.ReadFull(c, buf) // part of the body, then hang up
		c.Close()
		resp, body := fetch(t, "http://"+addr+"/small")
		if resp.StatusCode != 200 || body != "small" {
			t.Fatalf("after abort %d: %d %q", i, resp.StatusCode, body)
		}
	}
}

// TestHTTPReuseModes: "always" shares one idle server connection between
// client connections, even for a POST; "never" gives each client
// connection its own; "safe" shares it for GETs only.
func TestHTTPReuseModes(t *testing.T) {
	t.Parallel()
	cfg := httpDefaults
	webs := map[string]*webServer{}
	ports := map[string]int{}
	for _, mode := range []string{"always", "never", "safe"} {
		webs[mode], ports[mode] = newWebServer(t, mode), freePort(t)
		cfg += fmt.Sprintf(`
listen "%s" {
  bind       = ["127.0.0.1:%d"]
  http_reuse = "%s"
  server "s" { address = "%s" }
}
`, mode, ports[mode], mode, webs[mode].addr)
	}
	startSluice(t, cfg)
	post := func(port int) {
		resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/", port), "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	for mode, port := range ports {
		for range 5 { // five client connections one after another
			if mode == "safe" {
				fetch(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
			} else {
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
				resp, err := c.Post(fmt.Sprintf("http://127.0.0.1:%d/", port), "text/plain", strings.NewReader("x"))
				if err != nil {
					t.Fatal(err)
				}
				io.ReadAll(resp.Body)
				resp.Body.Close()
			}
		}
	}
	if n := webs["always"].conns.Load(); n != 1 {
		t.Errorf("always: 5 client connections used %d server connections, want 1", n)
	}
	if n := webs["never"].conns.Load(); n != 5 {
		t.Errorf("never: 5 client connections used %d server connections, want 5", n)
	}
	if n := webs["safe"].conns.Load(); n != 1 {
		t.Errorf("safe: 5 GETs on 5 client connections used %d server connections, want 1", n)
	}
	// A first request with a body does not take an idle connection in safe mode.
	post(ports["safe"])
	if n := webs["safe"].conns.Load(); n != 2 {
		t.Errorf("safe: a first POST used %d connections in all, want a new one (2)", n)
	}
}

// TestHTTPQueueTimeout: with the only server at its maxconn, a request
// waits in the queue for timeout queue and then gets 503, logged sQ.
func TestHTTPQueueTimeout(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond)
		io.WriteString(rw, "slow")
	}
	port := freePort(t)
	d := startSluice(t, fmt.Sprintf(httpDefaults+`
listen "fe" {
  bind = ["127.0.0.1:%d"]
  timeout { queue = "300ms" }
  server "s" {
    address = "%s"
    maxconn = 1
  }
}
`, port, web.addr))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	first := make(chan int)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			first <- 0
			return
		}
		resp.Body.Close()
		first <- resp.StatusCode
	}()
	time.Sleep(200 * time.Millisecond) // the first holds the only slot
	start := time.Now()
	resp, _ := fetch(t, url)
	took := time.Since(start)
	if resp.StatusCode != 503 || took < 250*time.Millisecond {
		t.Errorf("queued request: %d after %v, want 503 after about 300ms", resp.StatusCode, took)
	}
	if st := <-first; st != 200 {
		t.Errorf("the request holding the slot got %d", st)
	}
	d.waitLog(`fe fe/<NOSRV> \d+/\d+/-1/-1/\d+ 503 \d+ - - sQ-- `, 2*time.Second)
}

// slowZeros is an endless body sent at about 6 MB/s, as an upload over a
// network: well before its end, the server has answered.
type slowZeros struct{}

func (slowZeros) Read(p []byte) (int, error) {
	time.Sleep(5 * time.Millisecond)
	p = p[:min(len(p), 32<<10)]
	clear(p)
	return len(p), nil
}

// TestHTTPEarlyResponse: a server that answers a large upload before
// reading it (a 413), then closes, stops reading, or reads on (as nginx
// does, here without saying it will close), has its answer reach the
// client at once, as HAProxy forwards it, instead of a 502, a 504 after
// timeout server, or the end of the upload. The server connection, which
// did not get the whole body, is not used again: the next request would
// be read as the rest of it.
func TestHTTPEarlyResponse(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"closes", "stops reading", "reads on", "reads on, upload paused"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			server := rawServer(t, func(c net.Conn) {
				r := bufio.NewReader(c)
				for { // requests, until a POST
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					post := strings.HasPrefix(line, "POST")
					for line != "\r\n" {
						if line, err = r.ReadString('\n'); err != nil {
							return
						}
					}
					if !post {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						continue
					}
					break
				}
				switch mode {
				case "closes":
					io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntoo big")
				case "stops reading":
					io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntoo big")
					time.Sleep(15 * time.Second)
				case "reads on", "reads on, upload paused":
					io.WriteString(c, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\n\r\ntoo big")
					io.Copy(io.Discard, r)
				}
			})
			port, d := proxyTo(t, server, "")
			start := time.Now()
			var upload io.Reader = io.LimitReader(slowZeros{}, 1<<30)
			if mode == "reads on, upload paused" {
				// 64 KB, then nothing for longer than the test waits.
				upload = io.MultiReader(io.LimitReader(slowZeros{}, 64<<10), pause{})
			}
			req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/upload", port), upload)
			req.ContentLength = 1 << 30
			client := &http.Client{Timeout: 8 * time.Second}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("upload: %v (after %v)", err, time.Since(start))
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || string(body) != "too big" {
				t.Errorf("got %d %q, want the server's 413", resp.StatusCode, body)
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("the answer took %v; timeout server is 10s", took)
			}
			d.waitLog(`fe/s [0-9/]+ 413 .*"POST /upload HTTP/1.1"`, 3*time.Second)
			resp, err = client.Get(fmt.Sprintf("http://127.0.0.1:%d/next", port))
			if err != nil {
				t.Fatalf("the next request: %v", err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Errorf("the next request got %d %q, want 200 \"ok\"", resp.StatusCode, body)
			}
		})
	}
}

// TestHTTPLocalAnswerDuringUpload: a request refused by a rule while its
// body is still coming gets the refusal, not a reset: sluice reads and
// drops the rest for a while before closing (lingering close). Without
// it, Go's client uploading as fast as it can fails with "connection
// reset by peer" at once.
func TestHTTPLocalAnswerDuringUpload(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	port, _ := proxyTo(t, web.addr, `  http_request "deny" {
    path_prefix = ["/blocked"]
  }
`)
	for i := range 20 {
		req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/blocked", port), io.LimitReader(fastZeros{}, 1<<30))
		req.ContentLength = 1 << 30
		resp, err := (&http.Client{Timeout: 8 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Errorf("upload %d: got %d, want the rule's 403", i, resp.StatusCode)
		}
	}
}

// pause is a body that sends nothing for 20 s, then ends.
type pause struct{}

func (pause) Read([]byte) (int, error) { time.Sleep(20 * time.Second); return 0, io.EOF }

// fastZeros is an endless body, as fast as it can go.
type fastZeros struct{}

func (fastZeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
