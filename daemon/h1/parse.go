// Package h1 parses and writes HTTP/1.x messages for the proxy, strictly:
// a message whose length could be read two ways is refused, never
// forwarded. Parsing works in place on the connection's buffer and does
// not allocate.
package h1

import (
	"bytes"
	"errors"
)

// Limits bound a message head.
type Limits struct {
	MaxHeaderSize  int // the whole head, start line included
	MaxHeaders     int
	MaxRequestLine int
}

// DefaultLimits are HAProxy's defaults: a 16 KB buffer less its rewrite
// reserve, 101 headers.
var DefaultLimits = Limits{MaxHeaderSize: 15 * 1024, MaxHeaders: 100, MaxRequestLine: 8 * 1024}

// Header is one header field; both slices point into the read buffer.
type Header struct{ Name, Value []byte }

// Message is a parsed request or response head.
type Message struct {
	// Request line.
	Method, Target []byte
	// Status line.
	Status int
	Reason []byte
	Minor  int // HTTP/1.Minor
	// Headers in order of arrival.
	Headers []Header
	// ContentLength is -1 when the message has none.
	ContentLength int64
	Chunked       bool
	// Close: the sender will close after this message (Connection: close,
	// or HTTP/1.0 without keep-alive).
	Close   bool
	Upgrade bool // Connection: upgrade with an Upgrade header
	// ConnectionOptions: Connection names other headers (hop-by-hop
	// ones that must not be forwarded).
	ConnectionOptions bool
	Expect100         bool
	Host              []byte
	HeadLen           int
}

// Error is a refused message, with the status to answer.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string { return e.Reason }

// ErrIncomplete means the head has not all arrived yet.
var ErrIncomplete = errors.New("incomplete message head")

func bad(reason string) *Error { return &Error{Status: 400, Reason: reason} }

// Errors returned by the parser. They are values, so that refusing a
// message does not allocate either.
var (
	ErrTooLarge         = &Error{Status: 431, Reason: "header too large"}
	ErrTooMany          = &Error{Status: 431, Reason: "too many headers"}
	ErrLineTooLong      = &Error{Status: 414, Reason: "request line too long"}
	ErrRequestLine      = bad("malformed request line")
	ErrMethod           = bad("invalid character in method")
	ErrTarget           = bad("invalid request target")
	ErrVersion          = bad("unsupported HTTP version")
	ErrStatusLine       = bad("malformed status line")
	ErrHeaderName       = bad("invalid header name")
	ErrHeaderValue      = bad("invalid character in header value")
	ErrSpaceBeforeColon = bad("whitespace before colon")
	ErrObsFold          = bad("obsolete line folding")
	ErrBareCR           = bad("bare CR")
	ErrContentLength    = bad("invalid Content-Length")
	ErrDupLength        = bad("duplicate Content-Length")
	ErrLengthAndTE      = bad("Content-Length with Transfer-Encoding")
	ErrTE               = bad("Transfer-Encoding not ending in chunked")
	ErrTE10             = bad("Transfer-Encoding in HTTP/1.0")
	ErrHost             = bad("missing or duplicate Host")
)

// headEnd returns the length of the head in b (through the empty line),
// or 0 when it is not complete.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		case i+1 >= len(b):
			return 0
		}
	}
}

// nextLine splits the line at the start of b off, without its CRLF (or
// bare LF). A CR elsewhere in the line is an error.
func nextLine(b []byte) (line, rest []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, ErrIncomplete
	}
	line, rest = b[:i], b[i+1:]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, ErrBareCR
	}
	return line, rest, nil
}

// ParseRequest parses the request head at the start of b into m.
func ParseRequest(b []byte, m *Message, lim *Limits) error {
	n := headEnd(b)
	if n == 0 {
		if len(b) >= lim.MaxHeaderSize {
			if bytes.IndexByte(b, '\n') < 0 && len(b) >= lim.MaxRequestLine {
				return ErrLineTooLong
			}
			return ErrTooLarge
		}
		if bytes.IndexByte(b, '\n') < 0 && len(b) > lim.MaxRequestLine {
			return ErrLineTooLong
		}
		return ErrIncomplete
	}
	if n > lim.MaxHeaderSize {
		return ErrTooLarge
	}
	line, rest, err := nextLine(b[:n])
	if err != nil {
		return err
	}
	if len(line) > lim.MaxRequestLine {
		return ErrLineTooLong
	}
	m.reset()
	m.HeadLen = n
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return ErrRequestLine
	}
	m.Method = line[:sp1]
	for _, c := range m.Method {
		if !isTchar(c) {
			return ErrMethod
		}
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 <= 0 {
		return ErrRequestLine
	}
	m.Target = line[sp1+1 : sp1+1+sp2]
	if !validTarget(m.Target) {
		return ErrTarget
	}
	minor, ok := version(line[sp1+2+sp2:])
	if !ok {
		return ErrVersion
	}
	m.Minor = minor
	if err := m.parseHeaders(rest, lim); err != nil {
		return err
	}
	if err := m.framing(true); err != nil {
		return err
	}
	return nil
}

// ParseResponse parses the response head at the start of b into m.
// Errors are to be answered with 502.
func ParseResponse(b []byte, m *Message, lim *Limits) error {
	n := headEnd(b)
	if n == 0 {
		if len(b) >= lim.MaxHeaderSize {
			return ErrTooLarge
		}
		return ErrIncomplete
	}
	if n > lim.MaxHeaderSize {
		return ErrTooLarge
	}
	line, rest, err := nextLine(b[:n])
	if err != nil {
		return err
	}
	m.reset()
	m.HeadLen = n
	if len(line) < 12 || line[8] != ' ' {
		return ErrStatusLine
	}
	minor, ok := version(line[:8])
	if !ok {
		return ErrStatusLine
	}
	m.Minor = minor
	st := line[9:12]
	if !isDigit(st[0]) || !isDigit(st[1]) || !isDigit(st[2]) || (len(line) > 12 && line[12] != ' ') {
		return ErrStatusLine
	}
	m.Status = int(st[0]-'0')*100 + int(st[1]-'0')*10 + int(st[2]-'0')
	if m.Status < 100 {
		return ErrStatusLine
	}
	if len(line) > 13 {
		m.Reason = line[13:]
	}
	if err := m.parseHeaders(rest, lim); err != nil {
		return err
	}
	return m.framing(false)
}

func (m *Message) reset() {
	h := m.Headers[:0]
	*m = Message{Headers: h, ContentLength: -1}
}

func version(v []byte) (minor int, ok bool) {
	if len(v) != 8 || string(v[:7]) != "HTTP/1." {
		return 0, false
	}
	switch v[7] {
	case '0':
		return 0, true
	case '1':
		return 1, true
	}
	return 0, false
}

func (m *Message) parseHeaders(b []byte, lim *Limits) error {
	for {
		line, rest, err := nextLine(b)
		if err != nil {
			return err
		}
		b = rest
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return ErrObsFold
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return ErrHeaderName
		}
		name := line[:colon]
		for _, c := range name {
			if !isTchar(c) {
				if c == ' ' || c == '\t' {
					return ErrSpaceBeforeColon
				}
				return ErrHeaderName
			}
		}
		value := trimOWS(line[colon+1:])
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return ErrHeaderValue
			}
		}
		if len(m.Headers) >= lim.MaxHeaders {
			return ErrTooMany
		}
		m.Headers = append(m.Headers, Header{name, value})
	}
}

// framing reads the headers that decide the body's length and the
// connection's fate, refusing every ambiguous combination.
func (m *Message) framing(request bool) error {
	hosts := 0
	teSeen, chunkedSeen := false, false
	keepAlive := false
	for _, h := range m.Headers {
		switch {
		case EqualFold(h.Name, "content-length"):
			if m.ContentLength >= 0 {
				return ErrDupLength
			}
			n, ok := parseLength(h.Value)
			if !ok {
				return ErrContentLength
			}
			m.ContentLength = n
		case EqualFold(h.Name, "transfer-encoding"):
			teSeen = true
			for tok := range Tokens(h.Value) {
				if chunkedSeen {
					return ErrTE // something after chunked, or chunked twice
				}
				if EqualFold(tok, "chunked") {
					chunkedSeen = true
				}
			}
		case EqualFold(h.Name, "connection"):
			for tok := range Tokens(h.Value) {
				switch {
				case EqualFold(tok, "close"):
					m.Close = true
				case EqualFold(tok, "keep-alive"):
					keepAlive = true
				case EqualFold(tok, "upgrade"):
					m.Upgrade = true
				default:
					m.ConnectionOptions = true
				}
			}
		case EqualFold(h.Name, "host"):
			hosts++
			m.Host = h.Value
		case EqualFold(h.Name, "expect"):
			m.Expect100 = EqualFold(h.Value, "100-continue")
		}
	}
	if teSeen {
		if m.ContentLength >= 0 {
			return ErrLengthAndTE
		}
		if m.Minor == 0 {
			return ErrTE10
		}
		if !chunkedSeen {
			return ErrTE
		}
		m.Chunked = true
	}
	if m.Minor == 0 && !keepAlive {
		m.Close = true
	}
	if m.Upgrade && m.Get("upgrade") == nil {
		m.Upgrade = false
	}
	if request && (hosts > 1 || (hosts == 0 && m.Minor == 1)) {
		return ErrHost
	}
	return nil
}

// Get returns the first value of the header name (lower case), or nil.
func (m *Message) Get(name string) []byte {
	for _, h := range m.Headers {
		if EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return nil
}

// Bodyless reports whether a response to method has no body whatever its
// headers say.
func (m *Message) Bodyless(method []byte) bool {
	return string(method) == "HEAD" || m.Status < 200 || m.Status == 204 || m.Status == 304
}

func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// Tokens iterates over the comma-separated elements of a list header,
// skipping empty ones.
func Tokens(v []byte) func(yield func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(v) > 0 {
			var tok []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				tok, v = v[:i], v[i+1:]
			} else {
				tok, v = v, nil
			}
			if tok = trimOWS(tok); len(tok) > 0 && !yield(tok) {
				return
			}
		}
	}
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// EqualFold compares ASCII case-insensitively, s being lower case.
func EqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// tchar per RFC 9110 section 5.6.2.
var tchars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTchar(c byte) bool { return tchars[c] }

// validTarget accepts origin-form ("/..."), absolute-form, authority-form
// and "*", all of visible ASCII only.
func validTarget(t []byte) bool {
	if len(t) == 0 {
		return false
	}
	for _, c := range t {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
