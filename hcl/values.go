package hcl

import (
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	hcl "github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// decoder evaluates attribute expressions and collects diagnostics that
// point at them. Absent optional attributes arrive as null expressions.
type decoder struct {
	ctx   *hcl.EvalContext
	diags hcl.Diagnostics
	pools map[string]*SourcePool // decoded before the proxies that use them
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  &r,
	})
}

func (d *decoder) warnf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagWarning,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  &r,
	})
}

// set reports whether e was written in the configuration.
func set(e hcl.Expression) bool {
	if e == nil {
		return false
	}
	if len(e.Variables()) > 0 {
		return true
	}
	v, diags := e.Value(nil)
	return diags.HasErrors() || !v.IsNull()
}

// pick returns the first expression that was written, or nil: a proxy's
// own setting first, then the defaults section's.
func pick(es ...hcl.Expression) hcl.Expression {
	for _, e := range es {
		if set(e) {
			return e
		}
	}
	return nil
}

// value evaluates e and converts it to want. ok is false when e is absent
// or wrong (the latter with a diagnostic).
func (d *decoder) value(e hcl.Expression, want cty.Type, what string) (cty.Value, bool) {
	if !set(e) {
		return cty.NilVal, false
	}
	v, diags := e.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	if v.IsNull() {
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		d.errorf(e.Range(), "Unknown value", "The value of %s must be known when the configuration is loaded.", what)
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, want)
	if err != nil {
		d.errorf(e.Range(), "Incorrect value type", "Invalid value for %s: %s.", what, err)
		return cty.NilVal, false
	}
	return cv, true
}

func (d *decoder) str(e hcl.Expression, what, def string) string {
	v, ok := d.value(e, cty.String, what)
	if !ok {
		return def
	}
	return v.AsString()
}

func (d *decoder) boolean(e hcl.Expression, what string, def bool) bool {
	v, ok := d.value(e, cty.Bool, what)
	if !ok {
		return def
	}
	return v.True()
}

// integer returns e as an int in [lo, hi], or def when e is absent.
func (d *decoder) integer(e hcl.Expression, what string, def, lo, hi int) int {
	v, ok := d.value(e, cty.Number, what)
	if !ok {
		return def
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if acc != big.Exact {
		d.errorf(e.Range(), "Invalid number", "%s must be a whole number.", what)
		return def
	}
	if i < int64(lo) || i > int64(hi) {
		d.errorf(e.Range(), "Value out of range", "%s must be between %d and %d, not %d.", what, lo, hi, i)
		return def
	}
	return int(i)
}

func (d *decoder) strings(e hcl.Expression, what string) []string {
	v, ok := d.value(e, cty.List(cty.String), what)
	if !ok {
		return nil
	}
	var out []string
	for _, s := range v.AsValueSlice() {
		out = append(out, s.AsString())
	}
	return out
}

// duration reads a duration: a string with units ("300ms", "5s", "1m",
// "1h", "2d") or a number of milliseconds, as in HAProxy.
func (d *decoder) duration(e hcl.Expression, what string, def time.Duration) time.Duration {
	v, ok := d.value(e, cty.String, what)
	if !ok {
		return def
	}
	dur, err := ParseDuration(v.AsString())
	if err != nil {
		d.errorf(e.Range(), "Invalid duration", "%s: %s.", what, err)
		return def
	}
	return dur
}

// ParseDuration parses "300ms", "5s", "1m30s", "2d" or a bare number of
// milliseconds. Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if n, err := strconv.ParseUint(s, 10, 63); err == nil {
		return time.Duration(n) * time.Millisecond, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration like \"300ms\", \"5s\", \"1m\" or \"2d\"", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like \"300ms\", \"5s\", \"1m\" or \"2d\"", s)
	}
	if dur < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return dur, nil
}

// splitPort splits host:port and checks the port.
func splitPort(s string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("port %q of %q is not a number from 1 to 65535", p, s)
	}
	return host, n, nil
}

// checkBindAddress accepts "ip:port", ":port", "*:port" and "[v6]:port".
func checkBindAddress(s string) error {
	host, _, err := splitPort(s)
	if err != nil {
		return err
	}
	if host == "" || host == "*" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%q is not an IP address (bind takes IP:port, :port or [IPv6]:port)", host)
	}
	return nil
}

// checkServerAddress accepts "ip:port", "[v6]:port" and "name:port".
func checkServerAddress(s string) error {
	host, _, err := splitPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("%q is neither an IP address nor a DNS name", host)
	}
	return nil
}

func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// ParseSource parses "ip", "ip:port", "ip:lo-hi", "[v6]:lo-hi".
func ParseSource(s string) (*Source, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return &Source{Addr: a}, nil
	}
	host, ports, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not an address, address:port or address:low-high", s)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IP address", host)
	}
	lo, hi, ok := strings.Cut(ports, "-")
	if !ok {
		hi = lo
	}
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || l < 1 || h > 65535 || l > h {
		return nil, fmt.Errorf("%q is not a port range low-high within 1-65535", ports)
	}
	return &Source{Addr: a, PortLow: uint16(l), PortHigh: uint16(h)}, nil
}

// ParseCPUSet parses "0-3,6" into CPU numbers.
func ParseCPUSet(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || l < 0 || l > h || h > 4095 {
			return nil, fmt.Errorf("%q is not a CPU number or range like \"0-3\"", part)
		}
		for c := l; c <= h; c++ {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// parsePrefix accepts a CIDR or a single address.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "auth2": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "cron2": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// parseLogAddress reads "stderr", "stdout", "udp://h:p", "tcp://h:p",
// "unix:///dev/log", a bare "h:p" (UDP) or an absolute path (unix).
func parseLogAddress(s string) (network, addr string, err error) {
	switch {
	case s == "stderr" || s == "stdout":
		return s, "", nil
	case strings.HasPrefix(s, "/"):
		return "unix", s, nil
	}
	network, addr, ok := strings.Cut(s, "://")
	if !ok {
		network, addr = "udp", s
	}
	switch network {
	case "udp", "tcp":
		if _, _, err := splitPort(addr); err != nil {
			return "", "", err
		}
	case "unix":
		if !strings.HasPrefix(addr, "/") {
			return "", "", fmt.Errorf("unix log address %q must be an absolute path", addr)
		}
	default:
		return "", "", fmt.Errorf("log address %q: scheme must be udp, tcp or unix", s)
	}
	return network, addr, nil
}
