package e2e

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// startNginx runs Debian's nginx as one foreground process serving dir on
// a loopback port, with stub_status at /status.
func startNginx(t *testing.T, dir string) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nginx is not installed (apt-get install nginx)")
		}
		t.Skip("nginx is not installed (apt-get install nginx)")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	run := t.TempDir()
	conf := filepath.Join(run, "nginx.conf")
	os.WriteFile(conf, fmt.Appendf(nil, `
daemon off;
master_process off;
user root;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  keepalive_requests 100000;
  server {
    listen %[2]s;
    root %[3]s;
    location = /status { stub_status; }
  }
}
`, run, addr, dir), 0o644)
	cmd, out := startProcess(t, bin, "-c", conf, "-p", run)
	_ = cmd
	eventually(t, 5*time.Second, "nginx to listen", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx output:\n%s", out.String())
		}
	})
	return addr
}

// nginxAccepts reads how many connections nginx has accepted, asking it
// directly.
func nginxAccepts(t *testing.T, addr string) int {
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`\n\s*(\d+)\s+\d+\s+\d+`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("stub_status: %q", b)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestHTTPThroughNginx proxies to nginx from Debian's packages: files come
// back byte for byte, errors pass through, and 1,000 keep-alive requests
// open only a handful of connections to nginx.
func TestHTTPThroughNginx(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	file := make([]byte, 64<<10)
	rand.Read(file)
	os.WriteFile(filepath.Join(dir, "64k.bin"), file, 0o644)
	os.WriteFile(filepath.Join(dir, "index.html"), []byte("<h1>nginx</h1>\n"), 0o644)
	nginx := startNginx(t, dir)
	port := freePort(t)
	startSluice(t, fmt.Sprintf(httpDefaults+`
frontend "fe" {
  bind = ["127.0.0.1:%d"]
  use_backend "nginx" { path_prefix = ["/static/"] }
  http_request "replace_path_prefix" {
    from = "/static/"
    to   = "/"
  }
  default_backend = "nginx"
}
backend "nginx" {
  check {
    interval = "1s"
    http {
      path          = "/index.html"
      expect_status = [200]
    }
  }
  server "n" { address = "%s" }
}
`, port, nginx))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	resp, body := fetch(t, base+"/static/64k.bin")
	if resp.StatusCode != 200 || !bytes.Equal([]byte(body), file) || resp.Header.Get("Server") == "" {
		t.Errorf("64 KB file: status %d, %d bytes, equal %v", resp.StatusCode, len(body), bytes.Equal([]byte(body), file))
	}
	resp, _ = fetch(t, base+"/missing")
	if resp.StatusCode != 404 {
		t.Errorf("missing file: %d", resp.StatusCode)
	}
	before := nginxAccepts(t, nginx)
	c := dialPort(t, port)
	r := bufio.NewReader(c)
	for i := range 1000 {
		fmt.Fprintf(c, "GET /index.html?i=%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "<h1>nginx</h1>\n" {
			t.Fatalf("request %d: %q", i, b)
		}
	}
	// Our own status request and the health checks open a few more.
	opened := nginxAccepts(t, nginx) - before
	t.Logf("1000 requests through sluice: nginx accepted %d connections", opened)
	if opened > 8 {
		t.Errorf("nginx accepted %d connections for 1000 keep-alive requests", opened)
	}
}
