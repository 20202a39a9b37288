package proxy

import (
	"fmt"

	"sluice/hcl"
)

// errorBodies are the short bodies of sluice's own error responses, in
// HAProxy's words.
var errorBodies = map[int]string{
	400: "Your browser sent an invalid request.",
	403: "Request forbidden by administrative rules.",
	408: "Your browser didn't send a complete request in time.",
	414: "The request line is too long.",
	431: "The request's headers are too large.",
	500: "An internal server error occurred.",
	502: "The server returned an invalid or incomplete response.",
	503: "No server is available to handle this request.",
	504: "The server didn't respond in time.",
}

// errorResponse is the whole response sent for status: the configured
// error page, else a built-in one. It always closes the connection.
func errorResponse(status int, pages ...map[int][]byte) []byte {
	for _, p := range pages {
		if b, ok := p[status]; ok {
			return b
		}
	}
	if b, ok := builtinErrors[status]; ok {
		return b
	}
	return buildError(status)
}

var builtinErrors = func() map[int][]byte {
	m := map[int][]byte{}
	for st := range errorBodies {
		m[st] = buildError(st)
	}
	return m
}()

func buildError(status int) []byte {
	text := hcl.StatusText(status)
	msg, ok := errorBodies[status]
	if !ok {
		msg = text + "."
	}
	body := fmt.Sprintf("<html><body><h1>%d %s</h1>\n%s\n</body></html>\n", status, text, msg)
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\ncontent-length: %d\r\ncache-control: no-cache\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n%s",
		status, text, len(body), body)
}
