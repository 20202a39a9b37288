package hcl

import (
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	hcl "github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// HTTP is the layer-7 side of a frontend or backend in mode "http".
type HTTP struct {
	// UseBackends are evaluated in order; the first whose condition holds
	// picks the backend (frontends only).
	UseBackends []UseBackend
	// Request and Response are the http_request and http_response rules.
	Request, Response []Rule
	// ForwardFor adds X-Forwarded-For, -Proto and -Port; Forwarded adds
	// RFC 7239 Forwarded.
	ForwardFor, Forwarded bool
	// ErrorPages replace the built-in body of an error status: the whole
	// response as sent, status line included.
	ErrorPages map[int][]byte
	// MaxHeaderSize bounds a message head; MaxHeaders its header count.
	MaxHeaderSize, MaxHeaders int
	Compression               *Compression
	// CaptureRequest and CaptureResponse name headers logged in braces.
	CaptureRequest, CaptureResponse []Capture
	// Backend-only settings.
	Reuse  string // "safe", "never", "always"
	Cookie *Cookie
	// HashParam is the url_param name or the header (lower case) of
	// hdr(name) balancing.
	HashParam string
}

// Capture is a header logged with its value cut to Len bytes.
type Capture struct {
	Name string // lower case
	Len  int
}

// Compression compresses responses of the listed types.
type Compression struct {
	Algorithms []string // "gzip", "deflate"
	Types      []string // media types, without parameters
	MinSize    int      // responses declaring fewer bytes stay as they are
}

// Cookie is cookie-based stickiness: the server's name in a cookie.
type Cookie struct {
	Name     string
	Insert   bool // sluice sets the cookie itself
	Indirect bool // the cookie is taken out of requests to the servers
	NoCache  bool // responses carrying it are marked uncacheable
	HTTPOnly bool
	Secure   bool
	MaxAge   int // seconds; zero: a session cookie
}

// UseBackend sends requests matching Cond to Backend.
type UseBackend struct {
	Backend string
	Cond    *Cond
	Range   hcl.Range
}

// Cond is a set of matchers, all of which must hold (values within one
// matcher are alternatives).
type Cond struct {
	Hosts        []string // lower case; "*.example.com" matches subdomains
	Paths        []string
	PathPrefixes []string
	PathRegexes  []*regexp.Regexp
	Methods      []string
	Sources      []netip.Prefix
	Languages    []string // primary language tags, lower case
	Headers      []FieldMatch
	Queries      []FieldMatch
	Not          []*Cond
	ACLs         []ACLRef
}

// ACLRef is a named condition, possibly negated ("!name").
type ACLRef struct {
	Name   string
	Negate bool
	Cond   *Cond
}

// FieldMatch tests a header or query parameter. Every kind given must
// hold; within a kind the values are alternatives.
type FieldMatch struct {
	Name     string // headers: lower case
	Present  bool
	Absent   bool // present = false
	Equals   []string
	Prefixes []string
	Contains []string
	Regexes  []*regexp.Regexp
}

// Rule is one http_request or http_response rule.
type Rule struct {
	// Action is set_header, add_header, del_header, set_path,
	// replace_path_prefix, set_host, redirect, return, deny or allow.
	Action string
	Cond   *Cond
	// Header actions.
	Name, Value string
	// set_path: Path; replace_path_prefix: From and To; set_host: Host.
	Path, From, To, Host string
	// redirect: one of Location, Prefix, Scheme; return and deny: Status.
	Location, Prefix, Scheme string
	Status                   int
	// return: ContentType and Body.
	ContentType string
	Body        []byte
	Range       hcl.Range
}

// HTTPCheck is a health check by HTTP request.
type HTTPCheck struct {
	Method, Path, Host string
	ExpectStatus       []int // empty: any 2xx or 3xx
}

// The HCL side.

type fieldBlock struct {
	Name     string         `hcl:"name,label"`
	Present  hcl.Expression `hcl:"present,optional"`
	Equals   hcl.Expression `hcl:"equals,optional"`
	Prefix   hcl.Expression `hcl:"prefix,optional"`
	Contains hcl.Expression `hcl:"contains,optional"`
	Regex    hcl.Expression `hcl:"regex,optional"`
	Range    hcl.Range      `hcl:",def_range"`
}

type matchBlock struct {
	Host       hcl.Expression `hcl:"host,optional"`
	Path       hcl.Expression `hcl:"path,optional"`
	PathPrefix hcl.Expression `hcl:"path_prefix,optional"`
	PathRegex  hcl.Expression `hcl:"path_regex,optional"`
	Method     hcl.Expression `hcl:"method,optional"`
	Source     hcl.Expression `hcl:"source,optional"`
	Language   hcl.Expression `hcl:"language,optional"`
	ACL        hcl.Expression `hcl:"acl,optional"`
	Headers    []*fieldBlock  `hcl:"header,block"`
	Queries    []*fieldBlock  `hcl:"query,block"`
	Nots       []*notBlock    `hcl:"not,block"`
}

type notBlock struct {
	Body hcl.Body `hcl:",remain"`
}

type labelledMatch struct {
	Name      string    `hcl:"name,label"`
	NameRange hcl.Range `hcl:"name,label_range"`
	Body      hcl.Body  `hcl:",remain"`
}

type ruleBlock struct {
	Action      string         `hcl:"action,label"`
	ActionRange hcl.Range      `hcl:"action,label_range"`
	Name        hcl.Expression `hcl:"name,optional"`
	Value       hcl.Expression `hcl:"value,optional"`
	SetPath     hcl.Expression `hcl:"set,optional"` // set_path
	From        hcl.Expression `hcl:"from,optional"`
	To          hcl.Expression `hcl:"to,optional"`
	Location    hcl.Expression `hcl:"location,optional"`
	Prefix      hcl.Expression `hcl:"prefix,optional"`
	Scheme      hcl.Expression `hcl:"scheme,optional"`
	Code        hcl.Expression `hcl:"code,optional"`
	Status      hcl.Expression `hcl:"status,optional"`
	ContentType hcl.Expression `hcl:"content_type,optional"`
	Body        hcl.Expression `hcl:"body,optional"`
	File        hcl.Expression `hcl:"file,optional"`
	Range       hcl.Range      `hcl:",def_range"`
	Match       hcl.Body       `hcl:",remain"`
}

type errorPageBlock struct {
	Status hcl.Expression `hcl:"status"`
	File   hcl.Expression `hcl:"file"`
	Range  hcl.Range      `hcl:",def_range"`
}

type compressionBlock struct {
	Algorithms hcl.Expression `hcl:"algorithms,optional"`
	Types      hcl.Expression `hcl:"types,optional"`
	MinSize    hcl.Expression `hcl:"min_size,optional"`
	Range      hcl.Range      `hcl:",def_range"`
}

type cookieBlock struct {
	Name     hcl.Expression `hcl:"name"`
	Insert   hcl.Expression `hcl:"insert,optional"`
	Indirect hcl.Expression `hcl:"indirect,optional"`
	NoCache  hcl.Expression `hcl:"nocache,optional"`
	HTTPOnly hcl.Expression `hcl:"httponly,optional"`
	Secure   hcl.Expression `hcl:"secure,optional"`
	MaxAge   hcl.Expression `hcl:"maxage,optional"`
	Range    hcl.Range      `hcl:",def_range"`
}

type captureBlock struct {
	Kind   string         `hcl:"kind,label"` // request or response
	Header hcl.Expression `hcl:"header"`
	Len    hcl.Expression `hcl:"len,optional"`
}

type httpCheckBlock struct {
	Method       hcl.Expression `hcl:"method,optional"`
	Path         hcl.Expression `hcl:"path,optional"`
	Host         hcl.Expression `hcl:"host,optional"`
	ExpectStatus hcl.Expression `hcl:"expect_status,optional"`
	Range        hcl.Range      `hcl:",def_range"`
}

// oneOrMany reads a string or a list of strings.
func (d *decoder) oneOrMany(e hcl.Expression, what string) []string {
	if !set(e) {
		return nil
	}
	v, diags := e.Value(d.ctx)
	if !diags.HasErrors() && v.Type() == cty.String {
		return []string{v.AsString()}
	}
	return d.strings(e, what)
}

func (d *decoder) regexes(e hcl.Expression, what string) []*regexp.Regexp {
	var out []*regexp.Regexp
	for _, s := range d.oneOrMany(e, what) {
		re, err := regexp.Compile(s)
		if err != nil {
			d.errorf(e.Range(), "Invalid regular expression", "%s: %s.", what, err)
			continue
		}
		out = append(out, re)
	}
	return out
}

// cond decodes the matchers of body; acls are the named conditions
// defined so far. It returns nil for a body without matchers.
func (d *decoder) cond(body hcl.Body, acls map[string]*Cond) *Cond {
	mb := &matchBlock{}
	if !d.decodeBlock(body, mb) {
		return nil
	}
	c := &Cond{
		Paths:        d.oneOrMany(mb.Path, "path"),
		PathPrefixes: d.oneOrMany(mb.PathPrefix, "path_prefix"),
		PathRegexes:  d.regexes(mb.PathRegex, "path_regex"),
	}
	for _, h := range d.oneOrMany(mb.Host, "host") {
		c.Hosts = append(c.Hosts, strings.ToLower(h))
	}
	for _, m := range d.oneOrMany(mb.Method, "method") {
		c.Methods = append(c.Methods, strings.ToUpper(m))
	}
	for _, l := range d.oneOrMany(mb.Language, "language") {
		c.Languages = append(c.Languages, strings.ToLower(l))
	}
	for _, s := range d.oneOrMany(mb.Source, "source") {
		pfx, err := parsePrefix(s)
		if err != nil {
			d.errorf(mb.Source.Range(), "Invalid source", "%s.", err)
			continue
		}
		c.Sources = append(c.Sources, pfx)
	}
	for _, p := range append(c.Paths, c.PathPrefixes...) {
		if !strings.HasPrefix(p, "/") {
			d.errorf(pick(mb.Path, mb.PathPrefix).Range(), "Invalid path", "Paths start with \"/\", not %q.", p)
		}
	}
	for _, fb := range mb.Headers {
		c.Headers = append(c.Headers, d.field(fb, true))
	}
	for _, fb := range mb.Queries {
		c.Queries = append(c.Queries, d.field(fb, false))
	}
	for _, nb := range mb.Nots {
		if n := d.cond(nb.Body, acls); n != nil {
			c.Not = append(c.Not, n)
		}
	}
	for _, ref := range d.oneOrMany(mb.ACL, "acl") {
		name, neg := strings.CutPrefix(ref, "!")
		ac, ok := acls[name]
		if !ok {
			d.errorf(mb.ACL.Range(), "Unknown acl", "No acl block named %q comes before this rule.", name)
			continue
		}
		c.ACLs = append(c.ACLs, ACLRef{Name: name, Negate: neg, Cond: ac})
	}
	if c.empty() {
		return nil
	}
	return c
}

func (c *Cond) empty() bool {
	return len(c.Hosts)+len(c.Paths)+len(c.PathPrefixes)+len(c.PathRegexes)+len(c.Methods)+
		len(c.Sources)+len(c.Languages)+len(c.Headers)+len(c.Queries)+len(c.Not)+len(c.ACLs) == 0
}

func (d *decoder) field(fb *fieldBlock, header bool) FieldMatch {
	f := FieldMatch{
		Name:     fb.Name,
		Equals:   d.oneOrMany(fb.Equals, "equals"),
		Prefixes: d.oneOrMany(fb.Prefix, "prefix"),
		Contains: d.oneOrMany(fb.Contains, "contains"),
		Regexes:  d.regexes(fb.Regex, "regex"),
	}
	if header {
		f.Name = strings.ToLower(f.Name)
		if !validToken(f.Name) {
			d.errorf(fb.Range, "Invalid header name", "%q is not a valid header name.", fb.Name)
		}
	}
	if set(fb.Present) {
		if d.boolean(fb.Present, "present", true) {
			f.Present = true
		} else {
			f.Absent = true
		}
	}
	if !f.Present && !f.Absent && len(f.Equals)+len(f.Prefixes)+len(f.Contains)+len(f.Regexes) == 0 {
		f.Present = true // header "X" {} tests presence
	}
	return f
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

var redirectCodes = map[int]bool{301: true, 302: true, 303: true, 307: true, 308: true}

// rules decodes http_request (request true) or http_response blocks.
func (d *decoder) rules(blocks []*ruleBlock, request bool, acls map[string]*Cond, baseDir string) []Rule {
	var out []Rule
	kind := "http_response"
	if request {
		kind = "http_request"
	}
	for _, rb := range blocks {
		r := Rule{Action: rb.Action, Range: rb.Range, Cond: d.cond(rb.Match, acls)}
		allowed := map[string]bool{}
		switch rb.Action {
		case "set_header", "add_header":
			r.Name, r.Value = d.str(rb.Name, "name", ""), d.str(rb.Value, "value", "")
			allowed["name"], allowed["value"] = true, true
			if !validToken(r.Name) {
				d.errorf(rb.Range, "Invalid header name", "%s %q needs name = a valid header name.", rb.Action, rb.Action)
			}
			if strings.ContainsAny(r.Value, "\r\n\x00") {
				d.errorf(rb.Value.Range(), "Invalid header value", "A header value cannot contain CR, LF or NUL.")
			}
		case "del_header":
			r.Name = d.str(rb.Name, "name", "")
			allowed["name"] = true
			if !validToken(r.Name) {
				d.errorf(rb.Range, "Invalid header name", "del_header needs name = a valid header name.")
			}
		case "set_path", "replace_path_prefix", "set_host", "redirect":
			if !request {
				d.errorf(rb.ActionRange, "Request-only action", "%s belongs in http_request rules.", rb.Action)
			}
			switch rb.Action {
			case "set_path":
				r.Path = d.str(rb.SetPath, "set", "")
				allowed["set"] = true
				if !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " \r\n\t") {
					d.errorf(rb.Range, "Invalid path", "set_path needs set = a path starting with \"/\" without spaces.")
				}
			case "replace_path_prefix":
				r.From, r.To = d.str(rb.From, "from", ""), d.str(rb.To, "to", "")
				allowed["from"], allowed["to"] = true, true
				if !strings.HasPrefix(r.From, "/") || !strings.HasPrefix(r.To, "/") || strings.ContainsAny(r.To, " \r\n\t") {
					d.errorf(rb.Range, "Invalid path", "replace_path_prefix needs from and to, both starting with \"/\".")
				}
			case "set_host":
				r.Host = d.str(rb.Value, "value", "")
				allowed["value"] = true
				if r.Host == "" || strings.ContainsAny(r.Host, " \r\n\t/") {
					d.errorf(rb.Range, "Invalid host", "set_host needs value = a host name.")
				}
			case "redirect":
				r.Location, r.Prefix, r.Scheme = d.str(rb.Location, "location", ""), d.str(rb.Prefix, "prefix", ""), d.str(rb.Scheme, "scheme", "")
				r.Status = d.integer(rb.Code, "code", 302, 301, 308)
				allowed["location"], allowed["prefix"], allowed["scheme"], allowed["code"] = true, true, true, true
				n := 0
				for _, s := range []string{r.Location, r.Prefix, r.Scheme} {
					if s != "" {
						n++
					}
					if strings.ContainsAny(s, "\r\n") {
						d.errorf(rb.Range, "Invalid redirect", "A redirect cannot contain CR or LF.")
					}
				}
				if n != 1 {
					d.errorf(rb.Range, "Invalid redirect", "A redirect needs exactly one of location, prefix or scheme.")
				}
				if !redirectCodes[r.Status] {
					d.errorf(rb.Code.Range(), "Invalid redirect code", "code must be 301, 302, 303, 307 or 308.")
				}
			}
		case "return":
			r.Status = d.integer(rb.Status, "status", 200, 200, 599)
			r.ContentType = d.str(rb.ContentType, "content_type", "text/plain")
			allowed["status"], allowed["content_type"], allowed["body"], allowed["file"] = true, true, true, true
			r.Body = []byte(d.str(rb.Body, "body", ""))
			if set(rb.File) {
				if set(rb.Body) {
					d.errorf(rb.File.Range(), "body and file together", "A return rule takes either body or file.")
				}
				r.Body = d.readFile(rb.File, baseDir)
			}
		case "deny":
			r.Status = d.integer(rb.Status, "status", 403, 200, 599)
			allowed["status"] = true
		case "allow":
		default:
			d.errorf(rb.ActionRange, "Unknown "+kind+" action", "The action must be one of set_header, add_header, del_header, set_path, replace_path_prefix, set_host, redirect, return, deny, allow; not %q.", rb.Action)
			continue
		}
		for name, e := range map[string]hcl.Expression{"name": rb.Name, "value": rb.Value, "set": rb.SetPath, "from": rb.From, "to": rb.To,
			"location": rb.Location, "prefix": rb.Prefix, "scheme": rb.Scheme, "code": rb.Code, "status": rb.Status,
			"content_type": rb.ContentType, "body": rb.Body, "file": rb.File} {
			if set(e) && !allowed[name] {
				d.errorf(e.Range(), "Unsupported argument", "%q does not apply to a %s %q rule.", name, kind, rb.Action)
			}
		}
		out = append(out, r)
	}
	return out
}

func (d *decoder) readFile(e hcl.Expression, baseDir string) []byte {
	p := d.str(e, "file", "")
	if p == "" {
		return nil
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(baseDir, p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		d.errorf(e.Range(), "Cannot read file", "%s.", err)
	}
	return b
}

// errorPages reads error_page blocks: the file is a body, sent with the
// status's own line and a text/html type unless it starts with "HTTP/"
// (a whole response, as HAProxy's errorfile).
func (d *decoder) errorPages(blocks []*errorPageBlock, baseDir string) map[int][]byte {
	if len(blocks) == 0 {
		return nil
	}
	out := map[int][]byte{}
	for _, b := range blocks {
		st := d.integer(b.Status, "status", 0, 200, 599)
		body := d.readFile(b.File, baseDir)
		if st == 0 || body == nil {
			continue
		}
		if strings.HasPrefix(string(body), "HTTP/") {
			out[st] = body
			continue
		}
		out[st] = fmt.Appendf(nil, "HTTP/1.1 %d %s\r\ncontent-type: text/html\r\ncontent-length: %d\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n%s",
			st, StatusText(st), len(body), body)
	}
	return out
}

// StatusText is the reason phrase sluice writes for its own responses:
// net/http's, with HAProxy's wording where it differs.
func StatusText(code int) string {
	if t, ok := haproxyReasons[code]; ok {
		return t
	}
	if t := http.StatusText(code); t != "" {
		return t
	}
	return "Status " + strconv.Itoa(code)
}

var haproxyReasons = map[int]string{
	408: "Request Time-out", 413: "Payload Too Large", 414: "URI Too Long", 504: "Gateway Time-out",
}

// size reads a byte size: a number, or a string with a k, m or g suffix
// (powers of 1024), as HAProxy's tune.bufsize-style settings.
func (d *decoder) size(e hcl.Expression, what string, def, lo, hi int) int {
	if !set(e) {
		return def
	}
	v, diags := e.Value(d.ctx)
	if diags.HasErrors() || v.Type() != cty.String {
		return d.integer(e, what, def, lo, hi)
	}
	n, err := ParseSize(v.AsString())
	if err != nil {
		d.errorf(e.Range(), "Invalid size", "%s: %s.", what, err)
		return def
	}
	if n < int64(lo) || n > int64(hi) {
		d.errorf(e.Range(), "Value out of range", "%s must be between %d and %d bytes, not %d.", what, lo, hi, n)
		return def
	}
	return int(n)
}

// ParseSize parses "512", "16k", "1m" or "1g" (units of 1024).
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, t[:len(t)-1]
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, t[:len(t)-1]
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, t[:len(t)-1]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("%q is not a size such as 16384, \"16k\" or \"1m\"", s)
	}
	return n * mult, nil
}

// http decodes the layer-7 settings of a section's frontend half
// (frontend true) or backend half.
func (d *decoder) http(s section, def *proxyBlock, frontend bool) *HTTP {
	p := s.body
	baseDir := filepath.Dir(s.block.DefRange.Filename)
	h := &HTTP{
		ForwardFor:    d.boolean(pick(p.ForwardFor, def.ForwardFor), "forward_for", false),
		Forwarded:     d.boolean(pick(p.Forwarded, def.Forwarded), "forwarded", false),
		MaxHeaderSize: d.size(pick(p.MaxHeaderSize, def.MaxHeaderSize), "max_header_size", 15*1024, 1024, 1<<20),
		MaxHeaders:    d.integer(pick(p.MaxHeaders, def.MaxHeaders), "max_headers", 100, 1, 1000),
		Reuse:         d.str(pick(p.HTTPReuse, def.HTTPReuse), "http_reuse", "safe"),
	}
	if e := pick(p.HTTPReuse, def.HTTPReuse); e != nil && h.Reuse != "safe" && h.Reuse != "never" && h.Reuse != "always" {
		d.errorf(e.Range(), "Invalid http_reuse", "http_reuse must be \"safe\", \"never\" or \"always\", not %q.", h.Reuse)
	}
	pages := p.ErrorPages
	if len(pages) == 0 {
		pages = def.ErrorPages
	}
	h.ErrorPages = d.errorPages(pages, baseDir)
	cb := single(d, p.Compression, func(b *compressionBlock) hcl.Range { return b.Range }, "compression")
	if cb == nil {
		cb = single(d, def.Compression, func(b *compressionBlock) hcl.Range { return b.Range }, "compression")
	}
	if cb != nil {
		c := &Compression{Algorithms: d.oneOrMany(cb.Algorithms, "algorithms"), Types: d.oneOrMany(cb.Types, "types"),
			MinSize: d.size(cb.MinSize, "min_size", 256, 0, 1<<30)}
		if len(c.Algorithms) == 0 {
			c.Algorithms = []string{"gzip"}
		}
		for _, a := range c.Algorithms {
			if a != "gzip" && a != "deflate" {
				d.errorf(cb.Algorithms.Range(), "Unknown compression algorithm", "algorithms are \"gzip\" and \"deflate\", not %q.", a)
			}
		}
		if len(c.Types) == 0 {
			c.Types = []string{"text/html", "text/plain", "text/css", "application/javascript", "application/json"}
		}
		h.Compression = c
	}
	// Rules live in the frontend half of a listen section.
	listenBackend := s.kind == "listen" && !frontend
	acls := map[string]*Cond{}
	if !listenBackend {
		for _, a := range p.ACLs {
			if _, dup := acls[a.Name]; dup {
				d.errorf(a.NameRange, "Duplicate acl", "An acl named %q is already defined in %q.", a.Name, s.name)
			}
			c := d.cond(a.Body, acls)
			if c == nil {
				d.errorf(a.NameRange, "Empty acl", "The acl %q has no matchers.", a.Name)
				c = &Cond{}
			}
			acls[a.Name] = c
		}
		h.Request = d.rules(p.HTTPRequest, true, acls, baseDir)
		h.Response = d.rules(p.HTTPResponse, false, acls, baseDir)
	}
	if frontend {
		for _, ub := range p.UseBackends {
			c := d.cond(ub.Body, acls)
			if c == nil {
				d.errorf(ub.NameRange, "use_backend without condition", "A use_backend block needs at least one matcher; the backend for every other request is default_backend.")
			}
			h.UseBackends = append(h.UseBackends, UseBackend{Backend: ub.Name, Cond: c, Range: ub.NameRange})
		}
		for _, cp := range p.Captures {
			c := Capture{Name: strings.ToLower(d.str(cp.Header, "header", "")), Len: d.integer(cp.Len, "len", 64, 1, 4096)}
			if !validToken(c.Name) {
				d.errorf(cp.Header.Range(), "Invalid header name", "capture needs header = a valid header name.")
			}
			switch cp.Kind {
			case "request":
				h.CaptureRequest = append(h.CaptureRequest, c)
			case "response":
				h.CaptureResponse = append(h.CaptureResponse, c)
			default:
				d.errorf(cp.Header.Range(), "Invalid capture", "capture blocks are capture \"request\" or capture \"response\", not %q.", cp.Kind)
			}
		}
	} else if s.kind == "backend" {
		for _, ub := range p.UseBackends {
			d.errorf(ub.NameRange, "Unsupported block type", "use_backend belongs in a frontend or listen section.")
		}
	}
	if !frontend || s.kind == "listen" {
		if cb := single(d, p.Cookie, func(b *cookieBlock) hcl.Range { return b.Range }, "cookie"); cb != nil {
			c := &Cookie{Name: d.str(cb.Name, "name", ""), Insert: d.boolean(cb.Insert, "insert", false), Indirect: d.boolean(cb.Indirect, "indirect", false),
				NoCache:  d.boolean(cb.NoCache, "nocache", false),
				HTTPOnly: d.boolean(cb.HTTPOnly, "httponly", false), Secure: d.boolean(cb.Secure, "secure", false),
				MaxAge: int(d.duration(cb.MaxAge, "maxage", 0).Seconds())}
			if !validToken(c.Name) {
				d.errorf(cb.Name.Range(), "Invalid cookie name", "%q is not a valid cookie name.", c.Name)
			}
			h.Cookie = c
		}
	} else if s.kind == "frontend" {
		for _, cb := range p.Cookie {
			d.errorf(cb.Range, "Unsupported block type", "cookie belongs in a backend or listen section.")
		}
	}
	return h
}

// tcpOnly reports HTTP settings written in a section that is not in mode
// "http".
func (d *decoder) tcpOnly(s section) {
	p := s.body
	what := ""
	var rng hcl.Range
	switch {
	case len(p.UseBackends) > 0:
		what, rng = "use_backend", p.UseBackends[0].NameRange
	case len(p.HTTPRequest) > 0:
		what, rng = "http_request", p.HTTPRequest[0].Range
	case len(p.HTTPResponse) > 0:
		what, rng = "http_response", p.HTTPResponse[0].Range
	case len(p.ACLs) > 0:
		what, rng = "acl", p.ACLs[0].NameRange
	case len(p.Cookie) > 0:
		what, rng = "cookie", p.Cookie[0].Range
	case len(p.Compression) > 0:
		what, rng = "compression", p.Compression[0].Range
	case set(p.ForwardFor):
		what, rng = "forward_for", p.ForwardFor.Range()
	default:
		return
	}
	d.errorf(rng, "HTTP setting in TCP mode", "%s needs mode = \"http\" in the %s section %q.", what, s.kind, s.name)
}
