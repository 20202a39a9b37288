package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	neturl "net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// webServer is a real net/http server on loopback that names itself in
// every answer and records what reached it.
type webServer struct {
	name  string
	addr  string
	srv   *http.Server
	conns atomic.Int64 // connections accepted
	mu    sync.Mutex
	reqs  []*http.Request
	// handler, if set, answers instead of the default.
	handler http.HandlerFunc
}

func newWebServer(t *testing.T, name string) *webServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &webServer{name: name, addr: ln.Addr().String()}
	w.srv = &http.Server{
		Handler: http.HandlerFunc(w.serve),
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				w.conns.Add(1)
			}
		},
	}
	go w.srv.Serve(ln)
	t.Cleanup(func() { w.srv.Close() })
	return w
}

func (w *webServer) serve(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	w.reqs = append(w.reqs, r)
	w.mu.Unlock()
	if w.handler != nil {
		w.handler(rw, r)
		return
	}
	rw.Header().Set("X-Server", w.name)
	fmt.Fprintf(rw, "%s %s\n", w.name, r.URL.Path)
}

// paths returns the paths of the requests received.
func (w *webServer) paths() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, r := range w.reqs {
		out = append(out, r.URL.Path)
	}
	return out
}

func (w *webServer) last() *http.Request {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.reqs) == 0 {
		return nil
	}
	return w.reqs[len(w.reqs)-1]
}

// get sends one request through a fresh connection and returns status,
// the X-Server header and the body.
func fetch(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const httpDefaults = `
defaults {
  mode = "http"
  log  = "global"
  timeout {
    connect      = "2s"
    client       = "10s"
    server       = "10s"
    http_request = "1s"
  }
}
`

// TestHTTPContentSwitching routes by host, path, header (user agent) and
// language, and falls back to default_backend.
func TestHTTPContentSwitching(t *testing.T) {
	t.Parallel()
	api, cn, mobile, zh, web := newWebServer(t, "api"), newWebServer(t, "cn"), newWebServer(t, "mobile"), newWebServer(t, "zh"), newWebServer(t, "web")
	port := freePort(t)
	startSluice(t, fmt.Sprintf(httpDefaults+`
frontend "fe" {
  bind = ["127.0.0.1:%d"]
  acl "internal" { source = ["127.0.0.0/8"] }
  use_backend "api"    {
    path_prefix = ["/api/", "/v2/"]
    acl         = ["internal"]
  }
  use_backend "cn"     { host = ["cn.example.com", "*.cn.example.com"] }
  use_backend "mobile" {
    header "User-Agent" { contains = "Mobile" }
  }
  use_backend "zh"     { language = ["zh"] }
  default_backend = "web"
}
backend "api" {
  server "s" { address = "%s" }
}
backend "cn" {
  server "s" { address = "%s" }
}
backend "mobile" {
  server "s" { address = "%s" }
}
backend "zh" {
  server "s" { address = "%s" }
}
backend "web" {
  server "s" { address = "%s" }
}
`, port, api.addr, cn.addr, mobile.addr, zh.addr, web.addr))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cases := []struct {
		path string
		hdr  []string
		want string
	}{
		{"/api/users", nil, "api"},
		{"/v2/x", nil, "api"},
		{"/apix", nil, "web"},
		{"/", []string{"Host", "cn.example.com"}, "cn"},
		{"/", []string{"Host", "WWW.CN.example.com:8080"}, "cn"},
		{"/", []string{"Host", "xcn.example.com"}, "web"},
		{"/", []string{"User-Agent", "Mozilla/5.0 (iPhone) Mobile/15E148"}, "mobile"},
		{"/", []string{"Accept-Language", "zh-CN,zh;q=0.9,en;q=0.8"}, "zh"},
		{"/", []string{"Accept-Language", "en-US,zh;q=0.5"}, "web"},
		{"/", nil, "web"},
	}
	for _, tc := range cases {
		resp, _ := fetch(t, base+tc.path, tc.hdr...)
		if got := resp.Header.Get("X-Server"); got != tc.want || resp.StatusCode != 200 {
			t.Errorf("%s %v: went to %q (status %d), want %q", tc.path, tc.hdr, got, resp.StatusCode, tc.want)
		}
	}
}

// TestHTTPRulesAndRedirects checks header rewrites as the server sees
// them, path rewrites, redirects, return, deny, and response rules.
func TestHTTPRulesAndRedirects(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	port := freePort(t)
	d := startSluice(t, fmt.Sprintf(httpDefaults+`
frontend "fe" {
  bind        = ["127.0.0.1:%d"]
  forward_for = true
  http_request "deny" {
    path_prefix = ["/admin"]
    not { source = ["10.0.0.0/8"] }
  }
  http_request "redirect" {
    path   = ["/old"]
    location = "/new"
    code   = 301
  }
  http_request "redirect" {
    header "X-Forwarded-Proto" { equals = "http" }
    path_prefix = ["/secure/"]
    scheme = "https"
  }
  http_request "return" {
    path         = ["/health"]
    status       = 200
    content_type = "text/plain"
    body         = "ok\n"
  }
  http_request "set_header" {
    name  = "X-Via"
    value = "sluice"
  }
  http_request "del_header" { name = "X-Secret" }
  http_request "replace_path_prefix" {
    from = "/legacy/"
    to   = "/v3/"
  }
  http_request "set_path" {
    query "rewrite" {}
    set = "/rewritten"
  }
  http_request "redirect" {
    path_prefix = ["/v3/old"]
    prefix      = "https://new.example.com"
  }
  http_response "set_header" {
    name  = "X-Frame-Options"
    value = "DENY"
  }
  http_response "del_header" { name = "X-Server" }
  default_backend = "web"
}
backend "web" {
  server "s" { address = "%s" }
}
`, port, web.addr))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)

	resp, _ := fetch(t, base+"/admin/x")
	if resp.StatusCode != 403 {
		t.Errorf("/admin: status %d, want 403", resp.StatusCode)
	}
	resp, _ = fetch(t, base+"/old")
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/new" {
		t.Errorf("/old: %d %q, want 301 to /new", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = fetch(t, base+"/secure/a?b=1", "Host", "shop.example.com", "X-Forwarded-Proto", "http")
	if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://shop.example.com/secure/a?b=1" {
		t.Errorf("scheme redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := fetch(t, base+"/health")
	if resp.StatusCode != 200 || body != "ok\n" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Errorf("/health: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	if n := len(web.paths()); n != 0 {
		t.Errorf("the server got %d requests for answers sluice gives itself: %v", n, web.paths())
	}
	resp, body = fetch(t, base+"/legacy/item?id=7", "X-Secret", "s3cr3t")
	if resp.StatusCode != 200 || body != "web /v3/item\n" {
		t.Errorf("/legacy/item: %d %q", resp.StatusCode, body)
	}
	r := web.last()
	if r.Header.Get("X-Via") != "sluice" || r.Header.Get("X-Secret") != "" || r.URL.RawQuery != "id=7" {
		t.Errorf("server saw headers %v query %q", r.Header, r.URL.RawQuery)
	}
	if r.Header.Get("X-Forwarded-For") != "127.0.0.1" || r.Header.Get("X-Forwarded-Port") != strconv.Itoa(port) {
		t.Errorf("forwarding headers: %v", r.Header)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Server") != "" {
		t.Errorf("response rules not applied: %v", resp.Header)
	}
	resp, _ = fetch(t, base+"/legacy/old?x=1")
	if loc := resp.Header.Get("Location"); resp.StatusCode != 302 || loc != "https://new.example.com/v3/old?x=1" {
		t.Errorf("redirect after a rewrite: %d %q", resp.StatusCode, loc)
	}
	fetch(t, base+"/p?rewrite=1")
	if p := web.last().URL.Path; p != "/rewritten" {
		t.Errorf("set_path: server saw %q", p)
	}
	d.waitLog(`fe fe/<NOSRV> \d+/-1/-1/-1/\d+ 403 \d+ - - PR-- .* "GET /admin/x HTTP/1.1"`, 2*time.Second)
	if n := len(d.logLines(`"GET /admin/x HTTP/1.1"`)); n != 1 {
		t.Errorf("the denied request was logged %d times", n)
	}
	d.waitLog(`fe fe/<NOSRV> .* 200 \d+ - - LR-- .* "GET /health HTTP/1.1"`, 2*time.Second)
	d.waitLog(`fe web/s \d+/0/\d+/\d+/\d+ 200 \d+ - - ---- .* "GET /legacy/item\?id=7 HTTP/1.1"`, 2*time.Second)
}

// TestHTTPKeepAliveReuse sends 1,000 requests one after another on one
// client connection: the server sees only a handful of connections.
func TestHTTPKeepAliveReuse(t *testing.T) {
	t.Parallel()
	a, b := newWebServer(t, "a"), newWebServer(t, "b")
	port := freePort(t)
	startSluice(t, fmt.Sprintf(httpDefaults+`
listen "fe" {
  bind = ["127.0.0.1:%d"]
  log  = "none"
  server "a" { address = "%s" }
  server "b" { address = "%s" }
}
`, port, a.addr, b.addr))
	c := dialPort(t, port)
	r := bufio.NewReader(c)
	seen := map[string]int{}
	for i := range 1000 {
		fmt.Fprintf(c, "GET /r%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[strings.Fields(string(body))[0]]++
		if resp.Close {
			t.Fatalf("request %d: sluice closed the client connection", i)
		}
	}
	if seen["a"] != 500 || seen["b"] != 500 {
		t.Errorf("round robin per request: %v", seen)
	}
	conns := a.conns.Load() + b.conns.Load()
	t.Logf("1000 requests, %d server connections", conns)
	if conns > 4 {
		t.Errorf("1000 sequential requests opened %d server connections, want a handful", conns)
	}
}

// TestHTTPPipelining: requests sent together, before any response, are
// answered in order on the one connection, each as soon as it is ready:
// a slow last one, which asks to close, holds back none of the others.
// (A keep-alive response goes out with the wait for the next request; a
// request already buffered must not hold it back.)
func TestHTTPPipelining(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(2 * time.Second)
		}
		fmt.Fprintf(rw, "web %s\n", r.URL.Path)
	}
	port, _ := proxyTo(t, web.addr, "")
	c := dialPort(t, port)
	var reqs strings.Builder
	const n = 20
	for i := range n - 1 {
		fmt.Fprintf(&reqs, "GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	reqs.WriteString("GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	c.Write([]byte(reqs.String()))
	start := time.Now()
	c.SetReadDeadline(start.Add(5 * time.Second))
	r := bufio.NewReader(c)
	for i := range n {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("web /p%d\n", i)
		if i == n-1 {
			want = "web /slow\n"
		} else if d := time.Since(start); d > time.Second {
			t.Errorf("response %d came after %v, held back by the slow request after it", i, d)
		}
		if string(body) != want {
			t.Fatalf("response %d: body %q, want %q", i, body, want)
		}
	}
	if b, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after the last response: read %q, %v; want the connection closed", b, err)
	}
}

// rss reads a process's resident memory in KB.
func rss(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// pattern is an endless deterministic byte stream for big bodies.
type pattern struct{ n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.n*7 + p.n>>8)
		p.n++
	}
	return len(b), nil
}

// TestHTTPStreamingBigBodies uploads and downloads 200 MB through sluice,
// with Content-Length and chunked, and checks the bytes and that sluice's
// memory stays flat.
func TestHTTPStreamingBigBodies(t *testing.T) {
	t.Parallel()
	const size = 200 << 20
	web := newWebServer(t, "web")
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(rw, "%d %x chunked=%v", n, h.Sum(nil), len(r.TransferEncoding) > 0)
			return
		}
		if r.URL.Query().Get("chunked") == "" {
			rw.Header().Set("Content-Length", strconv.Itoa(size))
		}
		io.Copy(rw, io.LimitReader(&pattern{}, size))
	}
	port, d := proxyTo(t, web.addr, "", "--no-master")
	pid := d.cmd.Process.Pid
	base := rss(t, pid)
	want := sha256.New()
	io.Copy(want, io.LimitReader(&pattern{}, size))
	wantSum := fmt.Sprintf("%x", want.Sum(nil))
	peak := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				peak = max(peak, rss(t, pid))
			}
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	client := &http.Client{Timeout: 60 * time.Second}
	for _, chunked := range []bool{false, true} {
		var body io.Reader = io.LimitReader(&pattern{}, size)
		req, _ := http.NewRequest("POST", url, body)
		if !chunked {
			req.ContentLength = size
		} else {
			req.ContentLength = -1
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("%d %s chunked=%v", size, wantSum, chunked); string(got) != want {
			t.Errorf("upload (chunked %v): server got %q, want %q", chunked, got, want)
		}
		q := ""
		if chunked {
			q = "?chunked=1"
		}
		resp, err = client.Get(url + q)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || fmt.Sprintf("%x", h.Sum(nil)) != wantSum {
			t.Errorf("download (chunked %v): %d bytes, err %v", chunked, n, err)
		}
		if chunked != (len(resp.TransferEncoding) > 0) {
			t.Errorf("download (chunked %v): transfer-encoding %v", chunked, resp.TransferEncoding)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("sluice RSS %d KB before, peak %d KB while moving 4 x 200 MB", base, peak)
	if peak-base > 40*1024 {
		t.Errorf("memory grew by %d KB while streaming: bodies are being buffered", peak-base)
	}
}

// TestHTTPWebSocket upgrades through sluice and talks both ways.
func TestHTTPWebSocket(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "ws")
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(rw, "no upgrade", 400)
			return
		}
		c, brw, err := rw.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nwelcome\n")
		brw.Flush()
		io.Copy(c, brw) // echo
	}
	port, d := proxyTo(t, web.addr, `
  timeout { tunnel = "1h" }
`)
	c := dialPort(t, port)
	fmt.Fprint(c, "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	line, _ := r.ReadString('\n')
	if line != "welcome\n" {
		t.Fatalf("first server frame %q", line)
	}
	for i := range 3 {
		// Longer than http_request: the tunnel's timeout applies now.
		time.Sleep(400 * time.Millisecond)
		fmt.Fprintf(c, "ping %d\n", i)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if line, err := r.ReadString('\n'); err != nil || line != fmt.Sprintf("ping %d\n", i) {
			t.Fatalf("echo %d: %q %v", i, line, err)
		}
	}
	c.Close()
	d.waitLog(`fe fe/s .* 101 \d+ - - (--|CD)-- .*"GET /chat HTTP/1.1"`, 3*time.Second)
}

// TestHTTPSlowClient: a request head that does not arrive within
// timeout http_request gets 408, and the connection is closed.
func TestHTTPSlowClient(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	port, d := proxyTo(t, web.addr, "")
	c := dialPort(t, port)
	start := time.Now()
	// One header line every 300 ms: each within client timeout, but the
	// whole head never within http_request (1s).
	go func() {
		fmt.Fprint(c, "GET / HTTP/1.1\r\n")
		for i := range 20 {
			time.Sleep(300 * time.Millisecond)
			if _, err := fmt.Fprintf(c, "X-Slow-%d: y\r\n", i); err != nil {
				return
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if resp.StatusCode != 408 || took > 1800*time.Millisecond {
		t.Errorf("got %d after %v, want 408 after about 1s", resp.StatusCode, took)
	}
	d.waitLog(`fe fe/<NOSRV> -1/-1/-1/-1/\d+ 408 \d+ - - cR-- `, 2*time.Second)
	if n := len(web.paths()); n != 0 {
		t.Errorf("the server got %d requests", n)
	}
}

// TestHTTPSlowReader: a client that stops reading a large response is
// dropped once timeout client passes without progress (logged cD), as
// HAProxy's client timeout bounds sending too, and the server connection
// it held is closed.
func TestHTTPSlowReader(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	served := make(chan error, 1)
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Length", strconv.Itoa(800*len(chunk))) // 50 MiB
		for range 800 {
			if _, err := rw.Write(chunk); err != nil {
				served <- err
				return
			}
		}
		served <- nil
	}
	port, d := proxyTo(t, web.addr, "  timeout { client = \"1s\" }\n")
	c := dialPort(t, port)
	c.(*net.TCPConn).SetReadBuffer(4096)
	start := time.Now()
	fmt.Fprint(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	d.waitLog(` fe fe/s \S+ 200 \d+ - - cD`, 6*time.Second)
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the reader that stopped was dropped after %v, want about 1 s", took.Round(time.Millisecond))
	}
	select {
	case err := <-served:
		if err == nil {
			t.Error("the server wrote the whole response to a client that read none of it")
		}
	case <-time.After(3 * time.Second):
		t.Error("the server is still sending: its connection was not closed")
	}
}

// TestHTTPServerStopsReading: a server that stops taking a request body
// is given up after timeout server without progress: 504, logged sD, and
// the client connection closed.
func TestHTTPServerStopsReading(t *testing.T) {
	t.Parallel()
	server := rawServer(t, func(c net.Conn) {
		c.(*net.TCPConn).SetReadBuffer(4096)
		<-t.Context().Done() // reads nothing, answers nothing
	})
	port, d := proxyTo(t, server, "  timeout { server = \"1s\" }\n")
	c := dialPort(t, port)
	start := time.Now()
	go func() {
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 64<<20)
		c.Write(make([]byte, 64<<20))
	}()
	d.waitLog(` fe fe/s \S+ 504 \d+ - - sD`, 6*time.Second)
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("the upload to a server that stopped reading ended after %v, want about 1 s", took.Round(time.Millisecond))
	}
}

// TestHTTPKeepAliveAfterLocalAnswer: a connection whose last answer was
// sluice's own (a return rule) and that then stays idle for longer than
// timeout client (within http_keep_alive) still gets its next, proxied,
// response whole: the bound on sending the first answer is not left
// behind to fail the next send.
func TestHTTPKeepAliveAfterLocalAnswer(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	big := bytes.Repeat([]byte("b"), 64<<10) // more than the send buffer: written, not deferred
	web.handler = func(rw http.ResponseWriter, r *http.Request) { rw.Write(big) }
	port, _ := proxyTo(t, web.addr, `  timeout {
    client          = "500ms"
    http_keep_alive = "5s"
  }
  http_request "return" {
    path   = ["/local"]
    status = 200
    body   = "local\n"
  }
`)
	c := dialPort(t, port)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for i, path := range []string{"/local", "/proxied"} {
		if i > 0 {
			time.Sleep(1500 * time.Millisecond)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: status %d, body %q, %v", path, resp.StatusCode, body, err)
		}
	}
}

// TestHTTPTrailers: trailer fields of chunked bodies reach the other side,
// in both directions.
func TestHTTPTrailers(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	reqTrailer := make(chan http.Header, 1)
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		reqTrailer <- r.Trailer.Clone()
		rw.Header().Set("Trailer", "X-Checksum")
		rw.Write([]byte("body"))
		rw.(http.Flusher).Flush()
		rw.Header().Set("X-Checksum", "abc")
	}
	port, _ := proxyTo(t, web.addr, "")
	req, _ := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/up", port), io.NopCloser(strings.NewReader("upload")))
	req.TransferEncoding = []string{"chunked"}
	req.Trailer = http.Header{"X-Req-Sum": {"r1"}}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("response body %q, trailer %v; want body and X-Checksum: abc", body, resp.Trailer)
	}
	if got := <-reqTrailer; got.Get("X-Req-Sum") != "r1" {
		t.Errorf("the server got request trailer %v, want X-Req-Sum: r1", got)
	}
}

// TestHTTPStreamedBody: a body that comes in parts reaches the other side
// part by part, not once it is whole or a buffer fills: an event stream
// or a long poll through sluice works. Each case sends a first part, and
// the rest only once the first has arrived on the far side.
func TestHTTPStreamedBody(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	release := make(chan struct{}, 2)
	uploadPart := make(chan string, 1)
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/up":
			part := make([]byte, 5)
			io.ReadFull(r.Body, part)
			uploadPart <- string(part)
			io.Copy(io.Discard, r.Body)
			return
		case "/length":
			rw.Header().Set("Content-Length", "10")
		}
		rw.Write([]byte("first"))
		rw.(http.Flusher).Flush()
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		rw.Write([]byte("after"))
	}
	port, _ := proxyTo(t, web.addr, "")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for _, path := range []string{"/length", "/chunked"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		var got []byte
		buf := make([]byte, 4096)
		for !bytes.Contains(got, []byte("first")) {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("%s: the first part did not come while the server held the rest: got %q (%v)", path, got, err)
			}
		}
		release <- struct{}{}
		for !bytes.Contains(got, []byte("after")) {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				t.Fatalf("%s: the rest did not come: got %q (%v)", path, got, err)
			}
		}
	}

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst")
	select {
	case part := <-uploadPart:
		if part != "first" {
			t.Errorf("the server read %q, want first", part)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first part of the upload did not reach the server while the client held the rest")
	}
	io.WriteString(c, "after")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("upload: %v %v", resp, err)
	}
}

// TestHTTPCompression compresses text for clients that accept gzip and
// leaves the rest alone; a compressed stream still comes part by part.
func TestHTTPCompression(t *testing.T) {
	t.Parallel()
	page := strings.Repeat("<p>sluice compresses this page</p>\n", 400)
	web := newWebServer(t, "web")
	release := make(chan struct{})
	web.handler = func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/events":
			rw.Header().Set("Content-Type", "text/plain")
			io.WriteString(rw, "data: first\n\n")
			rw.(http.Flusher).Flush()
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			io.WriteString(rw, "data: after\n\n")
		case "/page":
			rw.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(rw, page)
		case "/small":
			rw.Header().Set("Content-Type", "text/html")
			io.WriteString(rw, "tiny")
		case "/image":
			rw.Header().Set("Content-Type", "image/png")
			io.WriteString(rw, page)
		}
	}
	port, _ := proxyTo(t, web.addr, `
  compression {
    algorithms = ["gzip", "deflate"]
    types      = ["text/html", "text/plain"]
  }
`)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	resp, body := fetch(t, base+"/page", "Accept-Encoding", "gzip, deflate")
	if resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Vary") != "Accept-Encoding" {
		t.Fatalf("not compressed: %v", resp.Header)
	}
	zr, err := gzip.NewReader(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || string(plain) != page {
		t.Errorf("decompressed body differs (%d bytes, %v)", len(plain), err)
	}
	t.Logf("compressed %d bytes to %d", len(page), len(body))
	resp, body = fetch(t, base+"/page", "Accept-Encoding", "deflate")
	if resp.Header.Get("Content-Encoding") != "deflate" {
		t.Fatalf("deflate not chosen: %v", resp.Header)
	}
	zl, err := zlib.NewReader(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if plain, err := io.ReadAll(zl); err != nil || string(plain) != page {
		t.Errorf("deflate body differs (%d bytes, %v)", len(plain), err)
	}
	for _, tc := range []struct{ path, ae string }{{"/page", ""}, {"/page", "gzip;q=0"}, {"/small", "gzip"}, {"/image", "gzip"}} {
		resp, _ := fetch(t, base+tc.path, "Accept-Encoding", tc.ae)
		if resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("%s with Accept-Encoding %q was compressed", tc.path, tc.ae)
		}
	}

	// The server sends the first event and holds the second until the
	// client has decompressed the first.
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err = http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("event stream not compressed: %v %v", resp, err)
	}
	zr, err = gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatalf("the compressed stream's header did not come while the server held the rest: %v", err)
	}
	first := make([]byte, len("data: first\n\n"))
	if _, err := io.ReadFull(zr, first); err != nil || string(first) != "data: first\n\n" {
		t.Fatalf("the first event did not come while the server held the rest: %q %v", first, err)
	}
	close(release)
	if rest, err := io.ReadAll(zr); err != nil || string(rest) != "data: after\n\n" {
		t.Errorf("the rest of the stream: %q %v", rest, err)
	}
}

// TestHTTPCookieStickiness: the inserted cookie keeps a client on its
// server; when that server goes down the client moves and the cookie with it.
func TestHTTPCookieStickiness(t *testing.T) {
	t.Parallel()
	a, b := newWebServer(t, "a"), newWebServer(t, "b")
	port := freePort(t)
	startSluice(t, fmt.Sprintf(httpDefaults+`
listen "fe" {
  bind = ["127.0.0.1:%d"]
  cookie {
    name     = "SRV"
    insert   = true
    indirect = true
  }
  check {
    interval = "100ms"
    fall     = 1
    http { path = "/" }
  }
  server "a" { address = "%s" }
  server "b" { address = "%s" }
}
`, port, a.addr, b.addr))
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	jar.SetCookies(mustURL(url), []*http.Cookie{{Name: "app", Value: "1"}})
	server := func() string {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Server")
	}
	first := server()
	for range 10 {
		if s := server(); s != first {
			t.Fatalf("sticky client moved from %s to %s", first, s)
		}
	}
	// indirect: the servers see the application's cookies, not sluice's.
	if r := map[string]*webServer{"a": a, "b": b}[first].last(); r == nil || r.Header.Get("Cookie") != "app=1" {
		t.Errorf("the server got Cookie %q, want only app=1", r.Header.Get("Cookie"))
	}
	down := map[string]*webServer{"a": a, "b": b}[first]
	down.srv.Close()
	other := map[string]string{"a": "b", "b": "a"}[first]
	eventually(t, 3*time.Second, "the client to move", func() bool { return server() == other })
	for range 5 {
		if s := server(); s != other {
			t.Fatalf("after the move the client went to %s", s)
		}
	}
	for _, c := range jar.Cookies(mustURL(url)) {
		if c.Name == "SRV" && c.Value != other {
			t.Errorf("cookie still names %s", c.Value)
		}
	}
}

// TestHTTPSmuggling sends every ambiguous framing the issue names, each
// followed by a second request that would be smuggled if sluice parsed
// the length differently from the server: sluice answers 400, closes,
// and the server never sees the smuggled request.
func TestHTTPSmuggling(t *testing.T) {
	t.Parallel()
	web := newWebServer(t, "web")
	port, d := proxyTo(t, web.addr, "")
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := map[string]string{
		"duplicate CL":         "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
		"conflicting CL":       "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n",
		"CL list":              "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 38\r\n\r\n",
		"CL and TE":            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"TE not chunked last":  "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
		"TE identity":          "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
		"TE in HTTP/1.0":       "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"TE twice":             "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"TE obfuscated":        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
		"bad chunk size":       "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
		"chunk size overflow":  "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
		"bad chunk extension":  "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\"b\r\nhello\r\n0\r\n\r\n",
		"chunk bare LF":        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
		"space before colon":   "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 38\r\n\r\n",
		"obs-fold":             "POST / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n Content-Length: 38\r\n\r\n",
		"bad header name":      "POST / HTTP/1.1\r\nHost: x\r\nContent[Length: 38\r\n\r\n",
		"NUL in value":         "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
		"bad method":           "G(ET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"bad target":           "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
		"bad version":          "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
		"HTTP/0.9 style":       "GET /\r\n\r\n",
		"bare CR":              "GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
		"double space in line": "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
		"missing host":         "GET / HTTP/1.1\r\n\r\n",
		"two hosts":            "GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	}
	for name, req := range cases {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(req + smuggled))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		all, _ := io.ReadAll(c)
		c.Close()
		if !bytes.HasPrefix(all, []byte("HTTP/1.1 400 ")) {
			t.Errorf("%s: answered %q, want 400", name, firstLine(all))
		}
		if n := bytes.Count(all, []byte("HTTP/1.1 ")); n != 1 {
			t.Errorf("%s: %d responses on the connection, want 1", name, n)
		}
	}
	for _, p := range web.paths() {
		if p == "/smuggled" {
			t.Errorf("the server received a smuggled request")
		}
	}
	eventually(t, 3*time.Second, "a PR or PD log line for each", func() bool {
		return len(d.logLines(` 400 \d+ - - P[RD]-- `)) == len(cases)
	})
	// Too large a head: 431.
	c, _ := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 20000))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	all, _ := io.ReadAll(c)
	if !bytes.HasPrefix(all, []byte("HTTP/1.1 431 ")) {
		t.Errorf("a 20 KB header: answered %q, want 431", firstLine(all))
	}
}

func firstLine(b []byte) string {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

// TestHTTPServerErrors: a broken response is a 502 (PH), no server a 503
// (SC), a silent server a 504 (sH), each with its log line.
func TestHTTPServerErrors(t *testing.T) {
	t.Parallel()
	garbage := newBackend(t, "garbage")
	garbage.handle = func(c net.Conn) {
		defer c.Close()
		bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
	}
	silent := newBackend(t, "silent")
	silent.handle = func(c net.Conn) {
		defer c.Close()
		time.Sleep(3 * time.Second)
	}
	port := freePort(t)
	dir := t.TempDir()
	os.WriteFile(dir+"/503.html", []byte("<h1>We are down</h1>\n"), 0o644)
	admin := controlPath(t)
	d := startSluice(t, fmt.Sprintf(httpDefaults+`
global {
  admin_socket "%s" {}
}
frontend "fe" {
  bind = ["127.0.0.1:%d"]
  error_page {
    status = 503
    file   = "%s/503.html"
  }
  use_backend "garbage" { path = "/garbage" }
  use_backend "silent"  { path = "/silent" }
  default_backend = "none"
}
backend "garbage" {
  server "s" { address = "%s" }
}
backend "silent" {
  timeout { server = "500ms" }
  server "s" { address = "%s" }
}
backend "none" {
  server "s" { address = "127.0.0.1:1" }
}
`, admin, port, dir, garbage.addr, silent.addr))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	resp, _ := fetch(t, base+"/garbage")
	if resp.StatusCode != 502 {
		t.Errorf("garbage: %d", resp.StatusCode)
	}
	resp, body := fetch(t, base+"/none")
	if resp.StatusCode != 503 || body != "<h1>We are down</h1>\n" {
		t.Errorf("no server: %d %q", resp.StatusCode, body)
	}
	resp, _ = fetch(t, base+"/silent")
	if resp.StatusCode != 504 {
		t.Errorf("silent: %d", resp.StatusCode)
	}
	d.waitLog(`fe garbage/s .* 502 \d+ - - PH-- .*"GET /garbage HTTP/1.1"`, 2*time.Second)
	d.waitLog(`fe none/s .* 503 \d+ - - SC-- .*"GET /none HTTP/1.1"`, 2*time.Second)
	d.waitLog(`fe silent/s \d+/0/\d+/-1/\d+ 504 \d+ - - sH-- .*"GET /silent HTTP/1.1"`, 2*time.Second)
	st := stat(t, admin)
	fe, garb := st["fe/FRONTEND"], st["garbage/BACKEND"]
	if fe["req_tot"] != "3" || fe["hrsp_5xx"] != "3" || fe["hrsp_2xx"] != "0" || fe["mode"] != "http" {
		t.Errorf("frontend HTTP counters: req_tot %s hrsp_5xx %s hrsp_2xx %s", fe["req_tot"], fe["hrsp_5xx"], fe["hrsp_2xx"])
	}
	if garb["eresp"] != "1" || st["garbage/s"]["eresp"] != "1" {
		t.Errorf("bad response not counted in eresp: %s %s", garb["eresp"], st["garbage/s"]["eresp"])
	}
}

func mustURL(s string) *neturl.URL {
	u, err := neturl.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// proxyTo starts sluice with one HTTP listen section in front of server,
// extra written inside it, and returns the listen port and the daemon.
func proxyTo(t *testing.T, server, extra string, args ...string) (int, *daemon) {
	t.Helper()
	port := freePort(t)
	d := startSluice(t, fmt.Sprintf(httpDefaults+`
listen "fe" {
  bind = ["127.0.0.1:%d"]
%s  server "s" { address = %q }
}
`, port, extra, server), args...)
	return port, d
}
