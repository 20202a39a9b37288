package h1

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strings"
	"testing"
	"time"
)

// The fuzz tests feed the parsers what a client or a server could send.
// Beyond not crashing, each checks what matters against request
// smuggling: a message sluice accepts is framed the same way by Go's
// net/http, an independent parser, whenever that one accepts it too.
// `make test` runs each for a few seconds (make fuzz); the seeds run in
// every go test.

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET http://a/b HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		lim := DefaultLimits
		if err := ParseRequest(b, &m, &lim); err != nil {
			if err != ErrIncomplete {
				if _, ok := err.(*Error); !ok {
					t.Fatalf("error %v is not an *Error: no status to answer with", err)
				}
			}
			return
		}
		checkMessage(t, b, &m, &lim)
		if m.ContentLength >= 0 && m.Chunked {
			t.Fatalf("accepted with both Content-Length and chunked: %q", b)
		}
		if len(m.Method) == 0 || len(m.Target) == 0 {
			t.Fatalf("accepted without method or target: %q", b)
		}
		// The same head, as net/http reads it.
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:m.HeadLen])))
		if err != nil {
			return // stricter there: nothing to compare
		}
		goChunked := slices.Contains(req.TransferEncoding, "chunked")
		if goChunked != m.Chunked {
			t.Fatalf("chunked: sluice %v, net/http %v: %q", m.Chunked, goChunked, b)
		}
		if !m.Chunked && req.ContentLength != max(m.ContentLength, 0) {
			t.Fatalf("length: sluice %d, net/http %d: %q", m.ContentLength, req.ContentLength, b)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		var m Message
		lim := DefaultLimits
		if err := ParseResponse(b, &m, &lim); err != nil {
			return
		}
		checkMessage(t, b, &m, &lim)
		method := "GET"
		if head {
			method = "HEAD"
		}
		body := ResponseBody(&m, []byte(method))
		if m.Status < 200 {
			return // interim: net/http's ReadResponse has no notion of them
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b[:m.HeadLen])), &http.Request{Method: method})
		if err != nil {
			return
		}
		if resp.Body == http.NoBody {
			// Bodyless for net/http (HEAD, 204, 304), which still reports
			// the length the header gave.
			if !body.Empty() {
				t.Fatalf("sluice expects a body (%+v), net/http none: %q", body, b)
			}
			return
		}
		goChunked := slices.Contains(resp.TransferEncoding, "chunked")
		switch {
		case body.Chunked != goChunked:
			t.Fatalf("chunked: sluice %v, net/http %v: %q", body.Chunked, goChunked, b)
		case body.Chunked:
		case body.UntilClose:
			if resp.ContentLength != -1 {
				t.Fatalf("sluice reads until close, net/http %d bytes: %q", resp.ContentLength, b)
			}
		case resp.ContentLength >= 0 && resp.ContentLength != body.Length:
			t.Fatalf("length: sluice %d, net/http %d: %q", body.Length, resp.ContentLength, b)
		case resp.ContentLength < 0 && body.Length != 0:
			t.Fatalf("length: sluice %d, net/http until close: %q", body.Length, b)
		}
	})
}

// checkMessage checks what any accepted head must be.
func checkMessage(t *testing.T, b []byte, m *Message, lim *Limits) {
	t.Helper()
	if m.HeadLen <= 0 || m.HeadLen > len(b) || m.HeadLen > lim.MaxHeaderSize {
		t.Fatalf("head length %d of %d bytes (limit %d)", m.HeadLen, len(b), lim.MaxHeaderSize)
	}
	if len(m.Headers) > lim.MaxHeaders {
		t.Fatalf("%d headers, limit %d", len(m.Headers), lim.MaxHeaders)
	}
	for _, h := range m.Headers {
		if len(h.Name) == 0 || bytes.ContainsAny(h.Name, " \t:\r\n") || bytes.ContainsAny(h.Value, "\r\n\x00") {
			t.Fatalf("header %q: %q passed as valid", h.Name, h.Value)
		}
	}
}

// pieces is a connection that returns its bytes in reads of at most n,
// so that chunk lines and data cross the reader's refills.
type pieces struct {
	net.Conn
	b []byte
	n int
}

func (p *pieces) Read(b []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(len(b), p.n)], p.b)
	p.b = p.b[n:]
	return n, nil
}

func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;a=b;c=\"d;e\"\r\nhello\r\n1A\r\n" + strings.Repeat("x", 26) + "\r\n0\r\nT: v\r\n\r\n",
		"fffffffffffffff\r\nx\r\n",
		"5\nhello\n0\n\n",
		"0\r\nContent-Length: 1\r\n\r\n",
	} {
		f.Add([]byte(s), uint8(1))
		f.Add([]byte(s), uint8(200))
	}
	f.Fuzz(func(t *testing.T, wire []byte, piece uint8) {
		r := &Reader{Conn: &pieces{b: wire, n: int(piece) + 1}, Buf: make([]byte, 16<<10)}
		var out bytes.Buffer
		var n int64
		var err error
		var got []byte
		var gerr error
		used := -1
		done := make(chan struct{})
		go func() {
			defer close(done)
			n, err = Copy(&out, r, Body{Chunked: true}, 0)
			if err == nil {
				// Accepted: net/http's chunked reader must read the same
				// payload from the same bytes (sluice must not have read
				// past the end).
				used = len(wire) - len(r.Buffered()) - len(r.Conn.(*pieces).b)
				got, gerr = io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(wire[:used])))
			}
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("hangs on %q", wire)
		}
		if n != int64(out.Len()) {
			t.Fatalf("reported %d bytes, wrote %d", n, out.Len())
		}
		if err == nil && (gerr != nil || !bytes.Equal(got, out.Bytes())) {
			t.Fatalf("sluice decoded %q, net/http %q (%v), from %q", out.Bytes(), got, gerr, wire[:used])
		}
	})
}
