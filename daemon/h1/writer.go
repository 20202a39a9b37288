package h1

import (
	"io"

	"sluice/daemon/sock"
)

// Writer is a connection with a write buffer, as bufio.Writer, whose
// pending bytes a caller that waits on the socket itself can send without
// waiting (WriteFD): a message and the wait for its answer then go in one
// round on the socket (see the HTTP proxy's replyWait).
type Writer struct {
	W   io.Writer
	buf []byte // len: the pending bytes
}

// NewWriter returns a Writer with a buffer of size bytes.
func NewWriter(size int) *Writer { return &Writer{buf: make([]byte, 0, size)} }

// Reset forgets what is pending and writes to w from now on.
func (w *Writer) Reset(c io.Writer) { w.W, w.buf = c, w.buf[:0] }

// Buffered returns the bytes written but not yet sent.
func (w *Writer) Buffered() []byte { return w.buf }

// AvailableBuffer returns an empty slice with the free space as capacity,
// to append to and then Write.
func (w *Writer) AvailableBuffer() []byte { return w.buf[len(w.buf):] }

// PairSender is a connection that sends two slices as one write
// (sock.SendNow), returning how much of both went.
type PairSender interface {
	Send(a, b []byte) (int, error)
}

// Write buffers p, sending what is pending first when p does not fit;
// a p as large as the buffer goes straight to the connection, together
// with what is pending when the connection is a PairSender.
func (w *Writer) Write(p []byte) (int, error) {
	if len(w.buf)+len(p) > cap(w.buf) {
		if ps, ok := w.W.(PairSender); ok && len(p) >= cap(w.buf) && len(w.buf) > 0 {
			pending := len(w.buf)
			n, err := ps.Send(w.buf, p)
			w.buf = w.buf[:0]
			if err == nil && n < pending+len(p) {
				err = io.ErrShortWrite
			}
			return max(n-pending, 0), err
		}
		if err := w.Flush(); err != nil {
			return 0, err
		}
		if len(p) >= cap(w.buf) {
			return w.W.Write(p)
		}
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

// Flush sends what is pending. After an error the connection is done
// with, so nothing stays pending.
func (w *Writer) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.W.Write(w.buf)
	if err == nil && n < len(w.buf) {
		err = io.ErrShortWrite
	}
	w.buf = w.buf[:0]
	return err
}

// WriteFD sends what is pending on the non-blocking socket fd without
// waiting, and reports whether all of it went; what the socket did not
// take stays pending (for Flush).
func (w *Writer) WriteFD(fd uintptr) (bool, error) {
	n, err := sock.WriteNow(int(fd), w.buf)
	w.buf = w.buf[:copy(w.buf, w.buf[n:])]
	return len(w.buf) == 0 && err == nil, err
}
