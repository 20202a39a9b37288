package h1

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestWriterBuffers checks that writes are held until Flush, that a
// write larger than the buffer goes straight through after what is
// pending, and that AvailableBuffer appends in place.
func TestWriterBuffers(t *testing.T) {
	var dst bytes.Buffer
	w := NewWriter(8)
	w.Reset(&dst)
	w.Write([]byte("abc"))
	w.Write(append(w.AvailableBuffer(), "de"...))
	if dst.Len() != 0 || string(w.Buffered()) != "abcde" {
		t.Fatalf("sent %q, pending %q; want nothing sent, abcde pending", dst.String(), w.Buffered())
	}
	w.Write([]byte("0123456789"))
	if dst.String() != "abcde0123456789" || len(w.Buffered()) != 0 {
		t.Fatalf("sent %q, pending %q", dst.String(), w.Buffered())
	}
	w.Write([]byte("xyz"))
	if err := w.Flush(); err != nil || dst.String() != "abcde0123456789xyz" {
		t.Fatalf("after Flush sent %q, err %v", dst.String(), err)
	}
}

// TestWriterWriteFD sends pending bytes on a socket directly; what a full
// socket does not take stays pending, and Flush sends it once there is
// room.
func TestWriterWriteFD(t *testing.T) {
	c, peer := tcpPair(t)
	tc := c.(*net.TCPConn)
	tc.SetWriteBuffer(4096)
	rc, _ := tc.SyscallConn()

	w := NewWriter(1 << 20)
	w.Reset(c)
	msg := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	w.Write(msg)
	var all bool
	var err error
	rc.Write(func(fd uintptr) bool {
		all, err = w.WriteFD(fd)
		return true
	})
	if err != nil || all || len(w.Buffered()) == 0 || len(w.Buffered()) == len(msg) {
		t.Fatalf("1 MiB on a socket nobody reads: all %v, err %v, %d of %d pending; want part pending", all, err, len(w.Buffered()), len(msg))
	}
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(msg))))
		got <- b
	}()
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("peer got %d bytes, not the %d written", len(b), len(msg))
	}
}
