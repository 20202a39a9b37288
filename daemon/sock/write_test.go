package sock

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestSendNow sends a head and a body in one call on a real socket: both
// arrive, in order; on a socket nobody reads it stops where the socket is
// full (no error) and the rest can follow.
func TestSendNow(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	tc := c.(*net.TCPConn)
	tc.SetWriteBuffer(4096)
	rc, _ := tc.SyscallConn()
	send := func(a, b []byte) (n int, err error) {
		rc.Write(func(fd uintptr) bool {
			n, err = SendNow(int(fd), a, b)
			return true
		})
		return n, err
	}

	if n, err := send([]byte("HEAD "), []byte("body")); n != 9 || err != nil {
		t.Fatalf("SendNow of 9 bytes on an empty socket: %d, %v", n, err)
	}
	got := make([]byte, 9)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "HEAD body" {
		t.Fatalf("peer got %q, %v; want HEAD body", got, err)
	}

	head := []byte("HTTP/1.1 200 OK\r\n\r\n")
	body := bytes.Repeat([]byte("0123456789abcdef"), (512<<10)/16)
	n, err := send(head, body)
	if err != nil || n <= len(head) || n >= len(head)+len(body) {
		t.Fatalf("512 KiB on a socket nobody reads: %d of %d sent, %v; want part, no error", n, len(head)+len(body), err)
	}
	want := append(append([]byte(nil), head...), body...)
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
		done <- b
	}()
	deadline := time.Now().Add(10 * time.Second)
	for n < len(want) && time.Now().Before(deadline) {
		m, err := send(nil, want[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	if b := <-done; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not the %d sent in order", len(b), len(want))
	}
}
