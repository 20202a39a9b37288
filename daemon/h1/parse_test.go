package h1

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

func parseReq(s string) (*Message, error) {
	m := &Message{}
	lim := DefaultLimits
	return m, ParseRequest([]byte(s), m, &lim)
}

func TestParseRequest(t *testing.T) {
	m, err := parseReq("POST /a?b=c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 12\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX-Empty:\r\n\r\nbody")
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Method) != "POST" || string(m.Target) != "/a?b=c" || m.Minor != 1 || m.ContentLength != 12 ||
		string(m.Host) != "example.com" || !m.Upgrade || m.Close || m.HeadLen != len("POST /a?b=c HTTP/1.1\r\nHost: example.com\r\nContent-Length: 12\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nX-Empty:\r\n\r\n") {
		t.Errorf("parsed %+v", m)
	}
	if len(m.Headers) != 5 || string(m.Headers[4].Name) != "X-Empty" || len(m.Headers[4].Value) != 0 {
		t.Errorf("headers %q", m.Headers)
	}
	m, err = parseReq("GET / HTTP/1.0\r\n\r\n")
	if err != nil || !m.Close || m.ContentLength != -1 {
		t.Errorf("HTTP/1.0 without keep-alive must close: %+v %v", m, err)
	}
	m, err = parseReq("GET / HTTP/1.1\nHost: x\n\n")
	if err != nil || string(m.Host) != "x" {
		t.Errorf("bare LF line endings: %v", err)
	}
	m, err = parseReq("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
	if err != nil || !m.Chunked {
		t.Errorf("gzip, chunked: %v", err)
	}
	if _, err := parseReq("GET / HTTP/1.1\r\nHost: x\r\n"); err != ErrIncomplete {
		t.Errorf("incomplete head: %v", err)
	}
}

func TestParseRequestRefuses(t *testing.T) {
	cases := map[string]*Error{
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n":          ErrDupLength,
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1,1\r\n\r\n":                             ErrContentLength,
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n":                              ErrContentLength,
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n":            ErrContentLength,
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n": ErrLengthAndTE,
		"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n":                ErrTE,
		"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n":                         ErrTE,
		"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n":                                 ErrTE10,
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n":                                                   ErrSpaceBeforeColon,
		"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n":                                      ErrObsFold,
		"GET / HTTP/1.1\r\nHo\"st: x\r\n\r\n":                                                  ErrHeaderName,
		"GET / HTTP/1.1\r\nHost: x\x01\r\n\r\n":                                                ErrHeaderValue,
		"GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n":                                                 ErrBareCR,
		"GE@T / HTTP/1.1\r\nHost: x\r\n\r\n":                                                   ErrMethod,
		"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n":                                                ErrTarget,
		"GET / HTTP/2.0\r\nHost: x\r\n\r\n":                                                    ErrVersion,
		"GET / http/1.1\r\nHost: x\r\n\r\n":                                                    ErrVersion,
		"GET /\r\n\r\n":                                                                        ErrRequestLine,
		"GET / HTTP/1.1\r\n\r\n":                                                               ErrHost,
	}
	for req, want := range cases {
		if _, err := parseReq(req); err != want {
			t.Errorf("%q: got %v, want %v", req, err, want)
		}
	}
	big := "GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 20000) + "\r\n\r\n"
	if _, err := parseReq(big); err != ErrTooLarge {
		t.Errorf("20 KB head: %v", err)
	}
	var many strings.Builder
	many.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
	for range 120 {
		many.WriteString("A: b\r\n")
	}
	many.WriteString("\r\n")
	if _, err := parseReq(many.String()); err != ErrTooMany {
		t.Errorf("121 headers: %v", err)
	}
}

func TestParseResponse(t *testing.T) {
	m := &Message{}
	lim := DefaultLimits
	if err := ParseResponse([]byte("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n"), m, &lim); err != nil || m.Status != 404 || string(m.Reason) != "Not Found" {
		t.Errorf("%+v %v", m, err)
	}
	if err := ParseResponse([]byte("HTTP/1.1 200\r\n\r\n"), m, &lim); err != nil || m.Status != 200 {
		t.Errorf("no reason: %v", err)
	}
	if ResponseBody(m, []byte("GET")) != (Body{UntilClose: true}) || !ResponseBody(m, []byte("HEAD")).Empty() {
		t.Errorf("framing of a response without length")
	}
	for _, bad := range []string{"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 abc OK\r\n\r\n", "ICY 200 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"} {
		if err := ParseResponse([]byte(bad), m, &lim); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// chunkedThrough decodes a chunked body read from a real socket.
func chunkedThrough(t *testing.T, wire string) (string, error) {
	a, b := tcpPair(t)
	go func() { a.Write([]byte(wire)); a.Close() }()
	r := &Reader{Conn: b, Buf: make([]byte, 64)}
	var out bytes.Buffer
	_, err := Copy(&out, r, Body{Chunked: true}, 0)
	return out.String(), err
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestChunked(t *testing.T) {
	got, err := chunkedThrough(t, "5;name=value;q=\"a;b\"\r\nhello\r\n1A\r\n"+strings.Repeat("x", 26)+"\r\n0\r\nTrailer: yes\r\n\r\n")
	if err != nil || got != "hello"+strings.Repeat("x", 26) {
		t.Errorf("got %q, %v", got, err)
	}
	for _, bad := range []string{"5\nhello\r\n0\r\n\r\n", "x\r\n", "5 5\r\nhello\r\n0\r\n\r\n", "1000000000000000\r\n",
		"5\r\nhelloX\r\n0\r\n\r\n", "5;\r\nhello\r\n0\r\n\r\n", "5\r\nhel"} {
		if _, err := chunkedThrough(t, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	var out bytes.Buffer
	cw := &ChunkWriter{W: &out}
	io.WriteString(cw, "hello")
	cw.Close()
	if out.String() != "5\r\nhello\r\n0\r\n\r\n" {
		t.Errorf("ChunkWriter wrote %q", out.String())
	}
}

// TestChunkedTrailers re-frames a chunked body with its trailer fields,
// leaving out those a trailer must not carry.
func TestChunkedTrailers(t *testing.T) {
	a, b := tcpPair(t)
	go func() {
		a.Write([]byte("4\r\nbody\r\n0\r\nX-Sum: 1\r\nContent-Length: 99\r\nhost: evil\r\nX-Other: 2\r\n\r\n"))
		a.Close()
	}()
	r := &Reader{Conn: b, Buf: make([]byte, 64)}
	var out bytes.Buffer
	cw := &ChunkWriter{W: &out}
	if _, err := Copy(cw, r, Body{Chunked: true}, 0); err != nil {
		t.Fatal(err)
	}
	cw.Close()
	if want := "4\r\nbody\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"; out.String() != want {
		t.Errorf("re-framed as %q, want %q", out.String(), want)
	}
}

func BenchmarkParseRequest(b *testing.B) {
	req := []byte("GET /index.html?x=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: text/html\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n")
	m := &Message{Headers: make([]Header, 0, 128)}
	lim := DefaultLimits
	b.ReportAllocs()
	for range b.N {
		if err := ParseRequest(req, m, &lim); err != nil {
			b.Fatal(err)
		}
	}
}
