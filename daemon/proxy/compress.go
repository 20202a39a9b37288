package proxy

import (
	"bytes"
	"compress/gzip"
	"io"
	"sync"

	"sluice/daemon/backend"
	"sluice/daemon/h1"
	"sluice/daemon/rules"
)

// gzipWriter is a pooled gzip stream; fast compression, as HAProxy's
// default, since the proxy's CPU is the scarce resource.
type gzipWriter struct{ *gzip.Writer }

var gzips = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return &gzipWriter{w}
}}

func getGzip(dst io.Writer) *gzipWriter {
	z := gzips.Get().(*gzipWriter)
	z.Reset(dst)
	return z
}

func putGzip(z *gzipWriter) {
	z.Reset(io.Discard)
	gzips.Put(z)
}

// compressible decides whether sluice compresses this response: the
// client accepts gzip, the response is a 200 of a listed type, not
// already encoded, not too small, and not marked no-transform.
func (s *httpSession) compressible(be *backend.Backend, body h1.Body) bool {
	c := be.Config.HTTP.Compression
	if c == nil {
		c = s.f.Config.HTTP.Compression
	}
	if c == nil {
		return false
	}
	x := s.x
	r := &x.resp
	if r.Status != 200 || body.Empty() || (!body.Chunked && !body.UntilClose && body.Length < int64(c.MinSize)) {
		return false
	}
	if !acceptsGzip(&x.req) || r.Get("content-encoding") != nil {
		return false
	}
	if cc := r.Get("cache-control"); cc != nil {
		for tok := range h1.Tokens(cc) {
			if h1.EqualFold(tok, "no-transform") {
				return false
			}
		}
	}
	ct := r.Get("content-type")
	for i, ch := range ct {
		if ch == ';' || ch == ' ' {
			ct = ct[:i]
			break
		}
	}
	for _, t := range c.Types {
		if bytes.EqualFold(ct, rules.Bytes(t)) {
			return hasGzip(c.Algorithms)
		}
	}
	return false
}

func hasGzip(algos []string) bool {
	for _, a := range algos {
		if a == "gzip" {
			return true
		}
	}
	return false
}

// acceptsGzip reads Accept-Encoding: gzip (or *) with a non-zero q.
func acceptsGzip(m *h1.Message) bool {
	for _, h := range m.Headers {
		if !h1.EqualFold(h.Name, "accept-encoding") {
			continue
		}
		for tok := range h1.Tokens(h.Value) {
			coding, params := tok, []byte(nil)
			if i := bytes.IndexByte(tok, ';'); i >= 0 {
				coding, params = bytes.TrimSpace(tok[:i]), bytes.TrimSpace(tok[i+1:])
			}
			if !h1.EqualFold(coding, "gzip") && string(coding) != "*" {
				continue
			}
			if len(params) >= 3 && (params[0] == 'q' || params[0] == 'Q') && params[1] == '=' {
				zero := true
				for _, ch := range params[2:] {
					if ch >= '1' && ch <= '9' {
						zero = false
					}
				}
				if zero {
					continue
				}
			}
			return true
		}
	}
	return false
}
