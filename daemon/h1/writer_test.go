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

// pairRecorder is a connection that records how it was written to.
type pairRecorder struct {
	writes, sends [][]byte
}

func (p *pairRecorder) Write(b []byte) (int, error) {
	p.writes = append(p.writes, append([]byte(nil), b...))
	return len(b), nil
}

func (p *pairRecorder) Send(a, b []byte) (int, error) {
	p.sends = append(p.sends, append(append([]byte(nil), a...), b...))
	return len(a) + len(b), nil
}

// TestWriterPairSender: on a connection that sends two slices as one
// write, what is pending goes with a large write instead of before it.
func TestWriterPairSender(t *testing.T) {
	var dst pairRecorder
	w := NewWriter(8)
	w.Reset(&dst)
	w.Write([]byte("head"))
	if n, err := w.Write([]byte("0123456789")); n != 10 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if len(dst.writes) != 0 || len(dst.sends) != 1 || string(dst.sends[0]) != "head0123456789" || len(w.Buffered()) != 0 {
		t.Fatalf("writes %q, sends %q, pending %q; want one send of head0123456789", dst.writes, dst.sends, w.Buffered())
	}
	w.Write([]byte("0123456789")) // nothing pending: a plain write
	if len(dst.writes) != 1 || len(dst.sends) != 1 {
		t.Fatalf("writes %q, sends %q; want the second large write alone", dst.writes, dst.sends)
	}
}
