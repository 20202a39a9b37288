package h1

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/daemon/sock"
)

// Reader is a connection with a read buffer. Heads are parsed in the
// buffer; body bytes that arrived with a head are served from it first.
// Between messages the buffer can be given back (Release) so that an idle
// connection holds none.
type Reader struct {
	Conn net.Conn
	// Raw, when set, is Conn's raw connection: reads go through it as
	// raw system calls (see package sock), and Conn serves for deadlines.
	Raw  syscall.RawConn
	Buf  []byte // nil while released
	r, w int
	// Check, when set, is called about every CheckEvery while a body is
	// copied, whether its bytes flow or the copy waits for them; an error
	// from it ends the copy (as a ReadError).
	Check   func() error
	checked time.Time // when Check was last called
	// Pending, when set, is the writer a body copy from this reader
	// writes to. Before the copy waits for more bytes it sends what
	// Pending holds, so that a body that comes in small parts (a stream of
	// events) reaches the peer as it comes, not once a buffer fills.
	Pending interface{ Flush() error }

	rawStep func(fd uintptr) bool
	n       int // what readStep read
	err     error
}

// flushPending sends what Pending holds, before a body copy reads more.
func (r *Reader) flushPending() error {
	if r.Pending != nil {
		if err := r.Pending.Flush(); err != nil {
			return &WriteError{err}
		}
	}
	return nil
}

// CheckEvery is how often a body copy calls Reader.Check.
const CheckEvery = 200 * time.Millisecond

// due calls Check when CheckEvery has passed since it last did.
func (r *Reader) due() error {
	if r.Check == nil {
		return nil
	}
	if now := time.Now(); now.Sub(r.checked) >= CheckEvery {
		r.checked = now
		return r.Check()
	}
	return nil
}

// Buffered returns the bytes read but not consumed.
func (r *Reader) Buffered() []byte { return r.Buf[r.r:r.w] }

// Reset forgets what is buffered, for a buffer moving to another
// connection; rc is c's raw connection, or nil.
func (r *Reader) Reset(c net.Conn, rc syscall.RawConn) { r.Conn, r.Raw, r.r, r.w = c, rc, 0, 0 }

// Discard consumes n buffered bytes.
func (r *Reader) Discard(n int) {
	r.r += n
	if r.r == r.w {
		r.r, r.w = 0, 0
	}
}

// Fill reads more bytes, moving what is buffered to the front first. It
// returns io.ErrShortBuffer when the buffer is full.
func (r *Reader) Fill() (int, error) {
	if r.r > 0 {
		r.w = copy(r.Buf, r.Buf[r.r:r.w])
		r.r = 0
	}
	if r.w == len(r.Buf) {
		return 0, io.ErrShortBuffer
	}
	var n int
	var err error
	if r.Raw != nil {
		n, err = r.readRaw()
	} else {
		n, err = r.Conn.Read(r.Buf[r.w:])
	}
	r.w += n
	if n > 0 {
		err = nil
	}
	return n, err
}

// readRaw is Conn.Read through Raw: one raw read (sock.Read) each time
// the socket is readable, within Conn's read deadline.
func (r *Reader) readRaw() (int, error) {
	if r.rawStep == nil {
		r.rawStep = r.readStep // bound once: no allocation per read
	}
	r.n, r.err = 0, nil
	if err := r.Raw.Read(r.rawStep); err != nil {
		return 0, err
	}
	return r.n, r.err
}

// readStep is the RawConn.Read callback of readRaw.
func (r *Reader) readStep(fd uintptr) bool {
	n, err := sock.Read(int(fd), r.Buf[r.w:])
	switch {
	case err == unix.EAGAIN:
		return false
	case err != nil:
		r.err = os.NewSyscallError("read", err)
	case n == 0:
		r.err = io.EOF
	}
	r.n = n
	return true
}

// ReadFD reads from the socket fd into the buffer with one read(2), for
// callers that wait for readability themselves (syscall.RawConn).
func (r *Reader) ReadFD(fd uintptr) (int, error) {
	n, err := sock.Read(int(fd), r.Buf[r.w:])
	r.w += n
	return n, err
}

// Release hands the buffer to put when nothing is buffered, and reports
// whether it did.
func (r *Reader) Release(put func([]byte)) bool {
	if r.Buf == nil || r.r != r.w {
		return false
	}
	put(r.Buf)
	r.Buf, r.r, r.w = nil, 0, 0
	return true
}

// ReadHead reads until parse accepts a complete head, and consumes it.
// The message stays valid until the buffer is next filled or consumed.
func (r *Reader) ReadHead(parse func([]byte) error) error {
	for {
		err := parse(r.Buffered())
		if err == nil {
			return nil
		}
		if err != ErrIncomplete {
			return err
		}
		if _, err := r.Fill(); err != nil {
			if err == io.ErrShortBuffer {
				return ErrTooLarge
			}
			return err
		}
	}
}

// ReadError and WriteError tell which side of a copy failed.
type ReadError struct{ Err error }
type WriteError struct{ Err error }

func (e *ReadError) Error() string  { return e.Err.Error() }
func (e *WriteError) Error() string { return e.Err.Error() }
func (e *ReadError) Unwrap() error  { return e.Err }
func (e *WriteError) Unwrap() error { return e.Err }

// Malformed chunked encoding.
var ErrChunk = errors.New("malformed chunked encoding")

// Body is how a body is framed on the wire.
type Body struct {
	Length     int64 // with Chunked false and UntilClose false
	Chunked    bool
	UntilClose bool // a response without length: ends with the connection
}

// RequestBody is the framing of m's body as a request.
func RequestBody(m *Message) Body {
	if m.Chunked {
		return Body{Chunked: true}
	}
	return Body{Length: max(m.ContentLength, 0)}
}

// ResponseBody is the framing of m's body as the response to method.
func ResponseBody(m *Message, method []byte) Body {
	switch {
	case m.Bodyless(method):
		return Body{}
	case m.Chunked:
		return Body{Chunked: true}
	case m.ContentLength >= 0:
		return Body{Length: m.ContentLength}
	}
	return Body{UntilClose: true}
}

// Empty reports whether the body has no bytes at all.
func (b Body) Empty() bool { return !b.Chunked && !b.UntilClose && b.Length == 0 }

// Copy copies the body framed as b from r to w, decoding chunks: w gets
// the payload only. idle bounds each read. It returns the payload bytes.
func Copy(w io.Writer, r *Reader, b Body, idle time.Duration) (int64, error) {
	if r.Check != nil {
		r.checked = time.Now()
	}
	switch {
	case b.Chunked:
		return copyChunked(w, r, idle)
	case b.UntilClose:
		return copyN(w, r, -1, idle)
	}
	return copyN(w, r, b.Length, idle)
}

// fill reads more for a body copy, waiting up to idle (none when zero)
// and calling r.Check meanwhile.
func (r *Reader) fill(idle time.Duration) error {
	if r.Check == nil {
		if idle > 0 {
			r.Conn.SetReadDeadline(time.Now().Add(idle))
		}
		_, err := r.Fill()
		return err
	}
	var end time.Time
	if idle > 0 {
		end = time.Now().Add(idle)
	}
	for {
		dl := time.Now().Add(CheckEvery)
		if !end.IsZero() && end.Before(dl) {
			dl = end
		}
		r.Conn.SetReadDeadline(dl)
		_, err := r.Fill()
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() || (!end.IsZero() && !time.Now().Before(end)) {
			return err
		}
		if err := r.due(); err != nil {
			return err
		}
	}
}

// copyN copies n bytes, or until EOF when n < 0.
func copyN(w io.Writer, r *Reader, n int64, idle time.Duration) (int64, error) {
	var done int64
	for n < 0 || done < n {
		if r.r == r.w {
			if err := r.flushPending(); err != nil {
				return done, err
			}
			err := r.fill(idle)
			if err == io.EOF && n < 0 {
				return done, nil
			}
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return done, &ReadError{err}
			}
		}
		if err := r.due(); err != nil {
			return done, &ReadError{err}
		}
		p := r.Buffered()
		if n >= 0 && int64(len(p)) > n-done {
			p = p[:n-done]
		}
		if _, err := w.Write(p); err != nil {
			return done, &WriteError{err}
		}
		r.Discard(len(p))
		done += int64(len(p))
	}
	return done, nil
}

// line returns the next line of the buffer, reading as needed; lines in
// chunked framing are short, so a full buffer is an error.
func (r *Reader) line(idle time.Duration) ([]byte, error) {
	for {
		if i := bytes.IndexByte(r.Buffered(), '\n'); i >= 0 {
			line := r.Buffered()[:i+1]
			r.Discard(i + 1)
			line = line[:i]
			if len(line) == 0 || line[len(line)-1] != '\r' {
				return nil, &ReadError{ErrChunk} // bare LF
			}
			return line[:len(line)-1], nil
		}
		if r.w-r.r > 4096 {
			return nil, &ReadError{ErrChunk}
		}
		if err := r.flushPending(); err != nil {
			return nil, err
		}
		if err := r.fill(idle); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, &ReadError{err}
		}
	}
}

func copyChunked(w io.Writer, r *Reader, idle time.Duration) (int64, error) {
	var done int64
	for {
		line, err := r.line(idle)
		if err != nil {
			return done, err
		}
		size, ok := chunkSize(line)
		if !ok {
			return done, &ReadError{ErrChunk}
		}
		if size == 0 {
			break
		}
		n, err := copyN(w, r, size, idle)
		done += n
		if err != nil {
			return done, err
		}
		if line, err = r.line(idle); err != nil {
			return done, err
		}
		if len(line) != 0 {
			return done, &ReadError{ErrChunk}
		}
	}
	// Trailer fields are checked, and passed on when w frames chunks
	// itself (a ChunkWriter); otherwise, or when they would speak of
	// framing or routing, dropped.
	tw, _ := w.(interface{ Trailer([]byte) error })
	for {
		line, err := r.line(idle)
		if err != nil {
			return done, err
		}
		if len(line) == 0 {
			return done, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return done, &ReadError{ErrChunk}
		}
		for _, c := range line[:colon] {
			if !isTchar(c) {
				return done, &ReadError{ErrChunk}
			}
		}
		if tw != nil && !forbiddenTrailer(line[:colon]) {
			if err := tw.Trailer(line); err != nil {
				return done, &WriteError{err}
			}
		}
	}
}

// forbiddenTrailer: fields a trailer must not carry (RFC 9110, 6.5.1):
// framing, routing and connection control, which a recipient merging
// trailers into the head could act on.
func forbiddenTrailer(name []byte) bool {
	for _, f := range [...]string{"content-length", "transfer-encoding", "host", "connection", "keep-alive",
		"te", "trailer", "upgrade", "proxy-connection", "content-type", "content-encoding", "content-range",
		"authorization", "set-cookie", "cookie", "expect", "range"} {
		if EqualFold(name, f) {
			return true
		}
	}
	return false
}

// chunkSize parses "HEX[;ext[=value]]..." strictly: hex digits only, at
// most 15 of them, extensions of tokens or quoted strings.
func chunkSize(line []byte) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, false
		}
		n = n<<4 | int64(v)
	}
ext:
	if i == 0 {
		return 0, false
	}
	return n, validExtensions(line[i:])
}

func validExtensions(b []byte) bool {
	for len(b) > 0 {
		b = trimOWS(b)
		if len(b) == 0 || b[0] != ';' {
			return false
		}
		b = trimOWS(b[1:])
		i := 0
		for i < len(b) && isTchar(b[i]) {
			i++
		}
		if i == 0 {
			return false
		}
		b = trimOWS(b[i:])
		if len(b) == 0 || b[0] != '=' {
			continue
		}
		b = trimOWS(b[1:])
		if len(b) > 0 && b[0] == '"' {
			j := 1
			for ; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
				if j < len(b) && (b[j] < ' ' && b[j] != '\t' || b[j] == 0x7f) {
					return false
				}
			}
			if j >= len(b) {
				return false
			}
			b = b[j+1:]
			continue
		}
		i = 0
		for i < len(b) && isTchar(b[i]) {
			i++
		}
		if i == 0 {
			return false
		}
		b = b[i:]
	}
	return true
}

// ChunkWriter frames what is written to it as chunks; Close writes the
// last chunk.
type ChunkWriter struct {
	W        io.Writer
	hdr      [20]byte
	trailing bool // the last chunk and a trailer field are written
}

func (c *ChunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	h := appendHex(c.hdr[:0], uint64(len(p)))
	h = append(h, '\r', '\n')
	if _, err := c.W.Write(h); err != nil {
		return 0, err
	}
	if _, err := c.W.Write(p); err != nil {
		return 0, err
	}
	if _, err := c.W.Write(crlf); err != nil {
		return 0, err
	}
	return len(p), nil
}

var crlf = []byte("\r\n")
var lastChunk = []byte("0\r\n\r\n")

// Trailer writes one trailer field line (without its CRLF), after the
// last chunk.
func (c *ChunkWriter) Trailer(line []byte) error {
	if !c.trailing {
		c.trailing = true
		if _, err := c.W.Write(lastChunk[:3]); err != nil { // "0\r\n"
			return err
		}
	}
	if _, err := c.W.Write(line); err != nil {
		return err
	}
	_, err := c.W.Write(crlf)
	return err
}

// Close ends the body, after any trailer fields.
func (c *ChunkWriter) Close() error {
	end := lastChunk
	if c.trailing {
		end = crlf
	}
	c.trailing = false
	_, err := c.W.Write(end)
	return err
}

func appendHex(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	if v == 0 {
		return append(b, '0')
	}
	var tmp [16]byte
	i := len(tmp)
	for v > 0 {
		i--
		tmp[i] = digits[v&15]
		v >>= 4
	}
	return append(b, tmp[i:]...)
}
