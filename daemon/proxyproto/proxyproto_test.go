package proxyproto

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name     string
		src, dst string
	}{
		{"ipv4", "192.0.2.1:51000", "198.51.100.2:443"},
		{"ipv6", "[2001:db8::1]:51000", "[2001:db8::2]:80"},
	}
	for _, tc := range cases {
		for _, v := range []int{1, 2} {
			t.Run(tc.name, func(t *testing.T) {
				src, dst := netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)
				b := Append(nil, v, src, dst)
				b = append(b, "payload"...)
				h, n, err := Parse(b)
				if err != nil {
					t.Fatalf("v%d: %v (%q)", v, err, b)
				}
				if h.Version != v || h.Src != src || h.Dst != dst || h.Local || string(b[n:]) != "payload" {
					t.Errorf("v%d: got %+v, rest %q", v, h, b[n:])
				}
			})
		}
	}
}

func TestV1Text(t *testing.T) {
	b := Append(nil, 1, netip.MustParseAddrPort("192.0.2.1:5"), netip.MustParseAddrPort("192.0.2.2:6"))
	if string(b) != "PROXY TCP4 192.0.2.1 192.0.2.2 5 6\r\n" {
		t.Errorf("v1 = %q", b)
	}
}

func TestRejects(t *testing.T) {
	for _, in := range []string{
		"GET / HTTP/1.1\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n",
		"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 010 80\r\n",
		"PROXY TCP4 " + string(make([]byte, 120)),
		"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + "123456789012", // version 3
	} {
		if _, _, err := Parse([]byte(in)); err != ErrInvalid {
			t.Errorf("Parse(%q) err = %v, want ErrInvalid", in, err)
		}
	}
}

func TestReadLeavesPayload(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		c, _ := net.Dial("tcp", ln.Addr().String())
		defer c.Close()
		hdr := Append(nil, 2, netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("192.0.2.2:2000"))
		// Send the header in two pieces to exercise waiting for the rest.
		c.Write(hdr[:10])
		time.Sleep(50 * time.Millisecond)
		c.Write(append(hdr[10:], "hello"...))
		time.Sleep(100 * time.Millisecond)
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := Read(c.(*net.TCPConn), time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if h.Src.String() != "192.0.2.1:1000" {
		t.Errorf("src = %s", h.Src)
	}
	buf := make([]byte, 5)
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "hello" {
		t.Errorf("payload after header = %q, %v", buf, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r\n"))
	f.Add(Append(nil, 2, netip.MustParseAddrPort("[::1]:1"), netip.MustParseAddrPort("[::1]:2")))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if err == nil && (n > len(b) || n <= 0 || (h.Version != 1 && h.Version != 2)) {
			t.Fatalf("bad result %+v n=%d len=%d", h, n, len(b))
		}
	})
}
