package engine

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"sluice/hcl"
)

// BenchmarkHTTPRequest measures one keep-alive request through the whole
// HTTP path (parse, use_backend, rules, balancing, idle connection reuse,
// forwarding both ways) over loopback, against a minimal server. Run with
// -benchmem: the steady state allocates nothing.
func BenchmarkHTTPRequest(b *testing.B) {
	roundTrip := httpRoundTrip(b)
	for range 100 { // warm the pools
		roundTrip()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}

// TestHTTPRequestAllocs keeps the request path's steady state free of
// allocation, which BenchmarkHTTPRequest shows: a regression there went
// unnoticed once. The count is process-wide, so a stray allocation
// elsewhere (the runtime, the test's server) is allowed for.
func TestHTTPRequestAllocs(t *testing.T) {
	roundTrip := httpRoundTrip(t)
	for range 100 {
		roundTrip()
	}
	if n := testing.AllocsPerRun(1000, roundTrip); n > 0.1 {
		t.Errorf("%.2f allocations per request through sluice, want 0", n)
	}
}

// httpRoundTrip starts an engine in front of a keep-alive test server and
// returns a function that sends one request through it and reads the
// response.
func httpRoundTrip(tb testing.TB) func() {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello")
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go answer(c, resp)
		}
	}()
	fe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := fe.Addr().String()
	fe.Close()
	path := filepath.Join(tb.TempDir(), "bench.hcl")
	os.WriteFile(path, fmt.Appendf(nil, `
defaults {
  mode = "http"
}
frontend "fe" {
  bind = ["%s"]
  forward_for = true
  use_backend "api" { path_prefix = ["/api/"] }
  http_request "set_header" {
    name  = "X-Via"
    value = "sluice"
  }
  http_response "del_header" { name = "Server" }
  default_backend = "web"
}
backend "web" {
  server "a" { address = "%s" }
  server "b" { address = "%[2]s" }
}
backend "api" {
  server "a" { address = "%[2]s" }
}
`, addr, srv.Addr()), 0o644)
	cfg, _, diags := hcl.Load([]string{path})
	if diags.HasErrors() {
		tb.Fatal(diags)
	}
	e, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	if err := e.Listen(nil); err != nil {
		tb.Fatal(err)
	}
	e.Start()
	tb.Cleanup(func() { e.Stop(0) })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	req := []byte("GET /index.html HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, 4096)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			tb.Fatal(err)
		}
		n := 0
		for !bytes.HasSuffix(buf[:n], []byte("hello")) {
			m, err := c.Read(buf[n:])
			if err != nil {
				tb.Fatal(err)
			}
			n += m
		}
	}
	return roundTrip
}

// answer is a minimal keep-alive HTTP server: one fixed response per
// request head.
func answer(c net.Conn, resp []byte) {
	defer c.Close()
	buf := make([]byte, 8192)
	n := 0
	for {
		m, err := c.Read(buf[n:])
		if err != nil {
			return
		}
		n += m
		for {
			i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
			if i < 0 {
				break
			}
			c.Write(resp)
			n = copy(buf, buf[i+4:n])
		}
	}
}
