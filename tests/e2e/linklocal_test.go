package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sluice/tests/serve"
)

// TestLinkLocalServer: a server addressed by an IPv6 link-local address
// and its zone ("[fe80::5%v0]:port") is reached in TCP mode, whose raw
// sockets take the zone as the address's scope, and in HTTP mode, which
// dials with Go's net, and health checks pass. Without the scope, connect
// fails with EINVAL.
func TestLinkLocalServer(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.must("ip", "link", "set", "lo", "up")
	ns.must("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.must("ip", "link", "set", "v0", "up")
	ns.must("ip", "link", "set", "v1", "up")
	ns.must("ip", "-6", "addr", "add", "fe80::5/64", "dev", "v0", "nodad")

	// The test's listeners name the zone by its index: this process's
	// table of interface names may be another namespace's.
	local := "[fe80::5%" + strings.TrimSpace(ns.must("cat", "/sys/class/net/v0/ifindex")) + "]:0"
	var tcpLn, httpLn net.Listener
	inNetns(t, ns, func() {
		var err error
		if tcpLn, err = net.Listen("tcp6", local); err != nil {
			t.Error(err)
			return
		}
		if httpLn, err = net.Listen("tcp6", local); err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		return
	}
	t.Cleanup(func() { tcpLn.Close(); httpLn.Close() })
	serve.Each(tcpLn, func(c net.Conn) { io.WriteString(c, "greetings over link-local\n") })
	go http.Serve(httpLn, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served over link-local\n")
	}))

	// sluice runs in the namespace, through a wrapper that enters it.
	wrapper := filepath.Join(t.TempDir(), "sluice-in-netns")
	os.WriteFile(wrapper, []byte(fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns.name, sluiceBin)), 0o755)
	launch(t, wrapper, fmt.Sprintf(`
defaults {
  timeout {
    connect = "2s"
    client  = "10s"
    server  = "10s"
  }
}
listen "tcp" {
  bind = ["127.0.0.1:8001"]
  server "s" {
    address = %q
    check { interval = "100ms" }
  }
}
listen "web" {
  mode = "http"
  bind = ["127.0.0.1:8002"]
  server "s" {
    address = %q
    check {
      interval = "100ms"
      http { path = "/" }
    }
  }
}
`, linkLocal(tcpLn), linkLocal(httpLn)), nil)

	// Health checks dial the zone too: a failing one would take the
	// servers down within fall (3) intervals.
	time.Sleep(500 * time.Millisecond)
	exchange := func(addr, request string) string {
		var out []byte
		inNetns(t, ns, func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, request)
			out, _ = io.ReadAll(bufio.NewReader(c))
		})
		return string(out)
	}
	if got := exchange("127.0.0.1:8001", ""); got != "greetings over link-local\n" {
		t.Errorf("TCP mode to a link-local server: got %q", got)
	}
	got := exchange("127.0.0.1:8002", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.Contains(got, "served over link-local") {
		t.Errorf("HTTP mode to a link-local server: got %q", got)
	}
}

// linkLocal is ln's address with the zone named as sluice's
// configuration names it, by the interface's name.
func linkLocal(ln net.Listener) string {
	return fmt.Sprintf("[fe80::5%%v0]:%d", ln.Addr().(*net.TCPAddr).Port)
}
