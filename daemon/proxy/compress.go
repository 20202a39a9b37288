package proxy

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"sync"

	"sluice/daemon/backend"
	"sluice/daemon/h1"
	"sluice/daemon/rules"
)

// compressor is a pooled compressed stream: gzip, or zlib for HTTP's
// "deflate" coding. Fast compression, as HAProxy's default, since the
// proxy's CPU is the scarce resource.
type compressor interface {
	io.WriteCloser
	Reset(io.Writer)
	Flush() error
}

// compressedOut is the response body's Pending while it is compressed:
// before the copy waits for more of the body, what the compressor holds
// goes out too (a sync flush, as HAProxy flushes its compressor at the end
// of each buffer), so that a compressed stream of events is not held until
// the response ends.
type compressedOut struct {
	z   compressor
	out *h1.Writer
}

func (c *compressedOut) Flush() error {
	if err := c.z.Flush(); err != nil {
		return err
	}
	return c.out.Flush()
}

// coding is one content-coding sluice can produce.
type coding struct {
	token []byte
	pool  sync.Pool
}

var (
	gzipCoding = &coding{token: []byte("gzip"), pool: sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
		return compressor(w)
	}}}
	deflateCoding = &coding{token: []byte("deflate"), pool: sync.Pool{New: func() any {
		w, _ := zlib.NewWriterLevel(nil, flate.BestSpeed)
		return compressor(w)
	}}}
)

func (c *coding) get(dst io.Writer) compressor {
	z := c.pool.Get().(compressor)
	z.Reset(dst)
	return z
}

func (c *coding) put(z compressor) {
	z.Reset(io.Discard)
	c.pool.Put(z)
}

// compression decides whether sluice compresses this response, and how:
// the client accepts one of the configured codings, the response is a 200
// of a listed type, not already encoded, not too small, and not marked
// no-transform. It returns nil to leave the response as it is.
func (s *httpSession) compression(be *backend.Backend, body h1.Body) *coding {
	c := be.Config.HTTP.Compression
	if c == nil {
		c = s.f.Config.HTTP.Compression
	}
	if c == nil {
		return nil
	}
	x := s.x
	r := &x.resp
	if r.Status != 200 || body.Empty() || (!body.Chunked && !body.UntilClose && body.Length < int64(c.MinSize)) {
		return nil
	}
	if r.Get("content-encoding") != nil {
		return nil
	}
	if cc := r.Get("cache-control"); cc != nil {
		for tok := range h1.Tokens(cc) {
			if h1.EqualFold(tok, "no-transform") {
				return nil
			}
		}
	}
	ct := r.Get("content-type")
	if i := bytes.IndexAny(ct, "; "); i >= 0 {
		ct = ct[:i]
	}
	listed := false
	for _, t := range c.Types {
		if bytes.EqualFold(ct, rules.Bytes(t)) {
			listed = true
			break
		}
	}
	if !listed {
		return nil
	}
	// The first configured coding the client accepts.
	for _, a := range c.Algorithms {
		switch {
		case a == "gzip" && accepts(&x.req, "gzip"):
			return gzipCoding
		case a == "deflate" && accepts(&x.req, "deflate"):
			return deflateCoding
		}
	}
	return nil
}

// accepts reads Accept-Encoding: the coding (or *) with a non-zero q.
func accepts(m *h1.Message, name string) bool {
	for _, h := range m.Headers {
		if !h1.EqualFold(h.Name, "accept-encoding") {
			continue
		}
		for tok := range h1.Tokens(h.Value) {
			coding, params := tok, []byte(nil)
			if i := bytes.IndexByte(tok, ';'); i >= 0 {
				coding, params = bytes.TrimSpace(tok[:i]), bytes.TrimSpace(tok[i+1:])
			}
			if !h1.EqualFold(coding, name) && string(coding) != "*" {
				continue
			}
			if len(params) >= 3 && (params[0] == 'q' || params[0] == 'Q') && params[1] == '=' && rules.ParseQ(params[2:]) == 0 {
				continue
			}
			return true
		}
	}
	return false
}
