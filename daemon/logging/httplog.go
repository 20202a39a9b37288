package logging

import (
	"strconv"
)

// HTTPEntry is one request's line in HAProxy's httplog format:
//
//	%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc
//	%ac/%fc/%bc/%sc/%rc %sq/%bq {%hrl} {%hsl} "%r"
type HTTPEntry struct {
	TCPEntry
	// TR: receiving the request head; Tr: the server's response head;
	// Ta: the whole request. Milliseconds, -1 when not reached.
	TR, Tr, Ta int64
	Status     int
	// Cookie is the persistence cookie's two state letters, "--" when
	// the backend uses none.
	Cookie [2]byte
	// Captured request and response headers, nil when none are captured.
	ReqCaptures, RespCaptures [][]byte
	// Request is the request line, cut to a sane length.
	Request []byte
}

// AppendHTTPLog appends e in httplog format, without allocating.
func AppendHTTPLog(b []byte, e *HTTPEntry) []byte {
	b = appendWho(b, &e.TCPEntry)
	for i, t := range [5]int64{e.TR, e.Tw, e.Tc, e.Tr, e.Ta} {
		if i > 0 {
			b = append(b, '/')
		}
		b = strconv.AppendInt(b, t, 10)
	}
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, " - - "...)
	b = append(b, e.Term[0], e.Term[1], e.Cookie[0], e.Cookie[1], ' ')
	b = appendCounts(b, &e.TCPEntry)
	b = appendCaptures(b, e.ReqCaptures)
	b = appendCaptures(b, e.RespCaptures)
	b = append(b, ' ', '"')
	for _, c := range e.Request {
		if c < ' ' || c == '"' || c >= 0x7f {
			c = '#' // as HAProxy escapes the request line
		}
		b = append(b, c)
	}
	return append(b, '"')
}

func appendCaptures(b []byte, caps [][]byte) []byte {
	if caps == nil {
		return b
	}
	b = append(b, " {"...)
	for i, v := range caps {
		if i > 0 {
			b = append(b, '|')
		}
		for _, c := range v {
			if c < ' ' || c == '|' || c == '{' || c == '}' || c >= 0x7f {
				c = '#'
			}
			b = append(b, c)
		}
	}
	return append(b, '}')
}
