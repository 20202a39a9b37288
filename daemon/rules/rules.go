// Package rules evaluates HTTP conditions (use_backend, acl, the matchers
// of http_request and http_response rules) and applies the header and
// path rewrites, on messages parsed in place, without allocating.
package rules

import (
	"bytes"
	"net/netip"
	"strings"
	"unsafe"

	"sluice/daemon/h1"
	"sluice/hcl"
)

// Request is what conditions look at.
type Request struct {
	M           *h1.Message
	Path, Query []byte
	Host        []byte // without port
	Client      netip.Addr
}

// Split fills Path, Query and Host from the message.
func (r *Request) Split() {
	t := r.M.Target
	// absolute-form: scheme://authority/path
	if i := bytes.Index(t, []byte("://")); i > 0 && t[0] != '/' {
		rest := t[i+3:]
		j := bytes.IndexByte(rest, '/')
		if j < 0 {
			t = []byte{'/'}
		} else {
			t = rest[j:]
		}
	}
	r.Path, r.Query = t, nil
	if i := bytes.IndexByte(t, '?'); i >= 0 {
		r.Path, r.Query = t[:i], t[i+1:]
	}
	r.Host = StripPort(r.M.Host)
}

// StripPort removes a ":port" from a host (IPv6 literals keep their brackets).
func StripPort(h []byte) []byte {
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && !bytes.Contains(h[i:], []byte("]")) {
		return h[:i]
	}
	return h
}

// str views b as a string for comparisons; it must not be kept.
func str(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// Bytes views s as bytes, for writing; they must not be changed.
func Bytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// Match reports whether every matcher of c holds for r. A nil c matches.
func Match(c *hcl.Cond, r *Request) bool {
	if c == nil {
		return true
	}
	if len(c.Hosts) > 0 && !matchHost(c.Hosts, str(r.Host)) {
		return false
	}
	if len(c.Paths) > 0 && !anyOf(c.Paths, func(p string) bool { return str(r.Path) == p }) {
		return false
	}
	if len(c.PathPrefixes) > 0 && !anyOf(c.PathPrefixes, func(p string) bool { return strings.HasPrefix(str(r.Path), p) }) {
		return false
	}
	if len(c.PathRegexes) > 0 {
		ok := false
		for _, re := range c.PathRegexes {
			if re.Match(r.Path) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(c.Methods) > 0 && !anyOf(c.Methods, func(m string) bool { return str(r.M.Method) == m }) {
		return false
	}
	if len(c.Sources) > 0 {
		ok := false
		for _, p := range c.Sources {
			if p.Contains(r.Client.Unmap()) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(c.Languages) > 0 {
		lang := PrimaryLanguage(r.M.Get("accept-language"))
		if !anyOf(c.Languages, func(l string) bool { return strings.EqualFold(str(lang), l) }) {
			return false
		}
	}
	for i := range c.Headers {
		f := &c.Headers[i]
		if !matchField(f, headerValues(r.M, f.Name)) {
			return false
		}
	}
	for i := range c.Queries {
		f := &c.Queries[i]
		if !matchField(f, queryValues(r.Query, f.Name)) {
			return false
		}
	}
	for _, n := range c.Not {
		if Match(n, r) {
			return false
		}
	}
	for _, a := range c.ACLs {
		if Match(a.Cond, r) == a.Negate {
			return false
		}
	}
	return true
}

func anyOf(list []string, f func(string) bool) bool {
	for _, s := range list {
		if f(s) {
			return true
		}
	}
	return false
}

func matchHost(hosts []string, h string) bool {
	for _, want := range hosts {
		if suffix, ok := strings.CutPrefix(want, "*"); ok {
			if len(h) > len(suffix) && strings.EqualFold(h[len(h)-len(suffix):], suffix) {
				return true
			}
		} else if strings.EqualFold(h, want) {
			return true
		}
	}
	return false
}

// values iterates over the values of a header or query parameter.
type values func(yield func([]byte) bool)

func headerValues(m *h1.Message, name string) values {
	return func(yield func([]byte) bool) {
		for _, h := range m.Headers {
			if h1.EqualFold(h.Name, name) && !yield(h.Value) {
				return
			}
		}
	}
}

func queryValues(q []byte, name string) values {
	return func(yield func([]byte) bool) {
		for len(q) > 0 {
			var kv []byte
			if i := bytes.IndexByte(q, '&'); i >= 0 {
				kv, q = q[:i], q[i+1:]
			} else {
				kv, q = q, nil
			}
			k, v, _ := bytes.Cut(kv, []byte("="))
			if str(k) == name && !yield(v) {
				return
			}
		}
	}
}

// QueryParam returns the first value of the query parameter name.
func QueryParam(q []byte, name string) ([]byte, bool) {
	for v := range queryValues(q, name) {
		return v, true
	}
	return nil, false
}

// matchField: some value satisfies every kind of test given.
func matchField(f *hcl.FieldMatch, vals values) bool {
	found := false
	for v := range vals {
		found = true
		if f.Absent {
			return false
		}
		s := str(v)
		if len(f.Equals) > 0 && !anyOf(f.Equals, func(w string) bool { return s == w }) {
			continue
		}
		if len(f.Prefixes) > 0 && !anyOf(f.Prefixes, func(w string) bool { return strings.HasPrefix(s, w) }) {
			continue
		}
		if len(f.Contains) > 0 && !anyOf(f.Contains, func(w string) bool { return strings.Contains(s, w) }) {
			continue
		}
		if len(f.Regexes) > 0 {
			ok := false
			for _, re := range f.Regexes {
				if re.Match(v) {
					ok = true
					break
				}
			}
			if !ok {
				continue
			}
		}
		return true
	}
	return !found && f.Absent
}

// PrimaryLanguage returns the primary subtag of the most preferred
// language in an Accept-Language value ("zh" for "zh-CN,en;q=0.8").
func PrimaryLanguage(v []byte) []byte {
	var best []byte
	bestQ := -1.0
	for tok := range h1.Tokens(v) {
		tag, params, _ := bytes.Cut(tok, []byte(";"))
		q := 1.0
		if p := bytes.TrimSpace(params); bytes.HasPrefix(p, []byte("q=")) {
			q = ParseQ(p[2:])
		}
		if q > bestQ {
			best, bestQ = bytes.TrimSpace(tag), q
		}
	}
	if i := bytes.IndexByte(best, '-'); i >= 0 {
		best = best[:i]
	}
	return best
}

// ParseQ reads a quality value ("0.8") of Accept-style headers.
func ParseQ(b []byte) float64 {
	q, scale, frac := 0.0, 1.0, false
	for _, c := range b {
		switch {
		case c == '.':
			frac = true
		case c >= '0' && c <= '9':
			if frac {
				scale /= 10
				q += float64(c-'0') * scale
			} else {
				q = q*10 + float64(c-'0')
			}
		default:
			return q
		}
	}
	return q
}

// DelHeader removes every header named name.
func DelHeader(m *h1.Message, name string) {
	out := m.Headers[:0]
	for _, h := range m.Headers {
		if !bytes.EqualFold(h.Name, Bytes(name)) {
			out = append(out, h)
		}
	}
	clear(m.Headers[len(out):])
	m.Headers = out
}

// SetHeader replaces every header named name with one value.
func SetHeader(m *h1.Message, name string, value []byte) {
	DelHeader(m, name)
	m.Headers = append(m.Headers, h1.Header{Name: Bytes(name), Value: value})
}
