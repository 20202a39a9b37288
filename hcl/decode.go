package hcl

import (
	"net/netip"
	"regexp"

	"github.com/zclconf/go-cty/cty"
	"strconv"
	"strings"
	"time"

	hcl "github.com/hashicorp/hcl/v2"
)

// The schema, as gohcl structs. Attributes are kept as expressions so that
// values are checked here with their source position, and so a proxy's
// setting can fall back to the defaults section's.

type globalBlock struct {
	MaxConn       hcl.Expression `hcl:"maxconn,optional"`
	Threads       hcl.Expression `hcl:"threads,optional"`
	CPUs          hcl.Expression `hcl:"cpus,optional"`
	HardStopAfter hcl.Expression `hcl:"hard_stop_after,optional"`
	BusyPolling   hcl.Expression `hcl:"busy_polling,optional"`
	PollBefore    hcl.Expression `hcl:"poll_before_sleep,optional"`
	Logs          []*logBlock    `hcl:"log,block"`
	AdminSockets  []*adminBlock  `hcl:"admin_socket,block"`
}

type adminBlock struct {
	Path            string         `hcl:"path,label"`
	PathRange       hcl.Range      `hcl:"path,label_range"`
	Mode            hcl.Expression `hcl:"mode,optional"`
	Level           hcl.Expression `hcl:"level,optional"`
	ExposeListeners hcl.Expression `hcl:"expose_listeners,optional"`
	User            hcl.Expression `hcl:"user,optional"`
	Group           hcl.Expression `hcl:"group,optional"`
}

type logBlock struct {
	Address  hcl.Expression `hcl:"address,optional"`
	Facility hcl.Expression `hcl:"facility,optional"`
	Format   hcl.Expression `hcl:"format,optional"`
	Tag      hcl.Expression `hcl:"tag,optional"`
	Range    hcl.Range      `hcl:",def_range"`
}

// proxyBlock is the body of defaults, frontend, backend and listen
// sections; which fields each may use is checked after decoding.
type proxyBlock struct {
	// Settings a defaults section may give.
	Mode       hcl.Expression  `hcl:"mode,optional"`
	MaxConn    hcl.Expression  `hcl:"maxconn,optional"`
	Backlog    hcl.Expression  `hcl:"backlog,optional"`
	Retries    hcl.Expression  `hcl:"retries,optional"`
	Redispatch hcl.Expression  `hcl:"redispatch,optional"`
	Balance    hcl.Expression  `hcl:"balance,optional"`
	HashType   hcl.Expression  `hcl:"hash_type,optional"`
	Log        hcl.Expression  `hcl:"log,optional"`
	Source     hcl.Expression  `hcl:"source,optional"`
	SourcePool hcl.Expression  `hcl:"source_pool,optional"`
	Timeouts   []*timeoutBlock `hcl:"timeout,block"`
	Checks     []*checkBlock   `hcl:"check,block"`

	// Frontend side.
	Bind           hcl.Expression  `hcl:"bind,optional"`
	AcceptProxy    hcl.Expression  `hcl:"accept_proxy,optional"`
	ReusePort      hcl.Expression  `hcl:"reuseport,optional"`
	DefaultBackend hcl.Expression  `hcl:"default_backend,optional"`
	TCPRequest     []*tcpRuleBlock `hcl:"tcp_request,block"`

	// Backend side.
	Servers []*serverBlock `hcl:"server,block"`

	// Services answered by sluice itself (HTTP mode).
	Prometheus []*prometheusBlock `hcl:"prometheus,block"`
	Stats      []*statsBlock      `hcl:"stats,block"`

	// HTTP mode.
	ACLs          []*labelledMatch    `hcl:"acl,block"`
	UseBackends   []*labelledMatch    `hcl:"use_backend,block"`
	HTTPRequest   []*ruleBlock        `hcl:"http_request,block"`
	HTTPResponse  []*ruleBlock        `hcl:"http_response,block"`
	ForwardFor    hcl.Expression      `hcl:"forward_for,optional"`
	Forwarded     hcl.Expression      `hcl:"forwarded,optional"`
	ErrorPages    []*errorPageBlock   `hcl:"error_page,block"`
	MaxHeaderSize hcl.Expression      `hcl:"max_header_size,optional"`
	MaxHeaders    hcl.Expression      `hcl:"max_headers,optional"`
	Compression   []*compressionBlock `hcl:"compression,block"`
	Captures      []*captureBlock     `hcl:"capture,block"`
	HTTPReuse     hcl.Expression      `hcl:"http_reuse,optional"`
	Cookie        []*cookieBlock      `hcl:"cookie,block"`
}

type statsBlock struct {
	URI         hcl.Expression `hcl:"uri,optional"`
	Refresh     hcl.Expression `hcl:"refresh,optional"`
	Realm       hcl.Expression `hcl:"realm,optional"`
	Users       hcl.Expression `hcl:"users,optional"`
	Admin       hcl.Expression `hcl:"admin,optional"`
	HideVersion hcl.Expression `hcl:"hide_version,optional"`
	Range       hcl.Range      `hcl:",def_range"`
}

type prometheusBlock struct {
	URI   hcl.Expression `hcl:"uri,optional"`
	Range hcl.Range      `hcl:",def_range"`
}

type timeoutBlock struct {
	Connect   hcl.Expression `hcl:"connect,optional"`
	Client    hcl.Expression `hcl:"client,optional"`
	Server    hcl.Expression `hcl:"server,optional"`
	Queue     hcl.Expression `hcl:"queue,optional"`
	Tunnel    hcl.Expression `hcl:"tunnel,optional"`
	ClientFin hcl.Expression `hcl:"client_fin,optional"`
	ServerFin hcl.Expression `hcl:"server_fin,optional"`
	Check     hcl.Expression `hcl:"check,optional"`
	// HTTP mode: the whole request head must arrive within HTTPRequest;
	// HTTPKeepAlive bounds the wait for the next request.
	HTTPRequest   hcl.Expression `hcl:"http_request,optional"`
	HTTPKeepAlive hcl.Expression `hcl:"http_keep_alive,optional"`
	Range         hcl.Range      `hcl:",def_range"`
}

type checkBlock struct {
	Enabled      hcl.Expression    `hcl:"enabled,optional"`
	Interval     hcl.Expression    `hcl:"interval,optional"`
	FastInterval hcl.Expression    `hcl:"fast_interval,optional"`
	DownInterval hcl.Expression    `hcl:"down_interval,optional"`
	Rise         hcl.Expression    `hcl:"rise,optional"`
	Fall         hcl.Expression    `hcl:"fall,optional"`
	Timeout      hcl.Expression    `hcl:"timeout,optional"`
	Send         hcl.Expression    `hcl:"send,optional"`
	Expect       hcl.Expression    `hcl:"expect,optional"`
	ExpectRegex  hcl.Expression    `hcl:"expect_regex,optional"`
	HTTP         []*httpCheckBlock `hcl:"http,block"`
	Range        hcl.Range         `hcl:",def_range"`
}

type sourcePoolBlock struct {
	Addresses hcl.Expression `hcl:"addresses"`
	Ports     hcl.Expression `hcl:"ports,optional"`
	Interface hcl.Expression `hcl:"interface,optional"`
	NAT       hcl.Expression `hcl:"nat,optional"`
}

type tcpRuleBlock struct {
	Action      string         `hcl:"action,label"`
	ActionRange hcl.Range      `hcl:"action,label_range"`
	Source      hcl.Expression `hcl:"source,optional"`
}

type serverBlock struct {
	Name          string         `hcl:"name,label"`
	NameRange     hcl.Range      `hcl:"name,label_range"`
	Range         hcl.Range      `hcl:",def_range"`
	Address       hcl.Expression `hcl:"address"`
	Weight        hcl.Expression `hcl:"weight,optional"`
	MaxConn       hcl.Expression `hcl:"maxconn,optional"`
	MaxQueue      hcl.Expression `hcl:"maxqueue,optional"`
	Backup        hcl.Expression `hcl:"backup,optional"`
	Disabled      hcl.Expression `hcl:"disabled,optional"`
	SendProxy     hcl.Expression `hcl:"send_proxy,optional"`
	Source        hcl.Expression `hcl:"source,optional"`
	SourcePoolRef hcl.Expression `hcl:"source_pool,optional"`
	Checks        []*checkBlock  `hcl:"check,block"`
}

// section is one decoded top-level proxy block.
type section struct {
	kind  string // frontend, backend, listen
	name  string
	block *hcl.Block
	body  *proxyBlock
}

func decode(body hcl.Body, ctx *hcl.EvalContext) (*Config, hcl.Diagnostics) {
	d := &decoder{ctx: ctx}
	content, diags := body.Content(rootSchema)
	d.diags = append(d.diags, diags...)
	if content == nil {
		return nil, d.diags
	}

	cfg := &Config{}
	defer func() { cfg.SourcePools = d.pools }()
	var global *globalBlock
	defaults := &proxyBlock{}
	var sections []section
	seen := map[string]*hcl.Block{}
	pools := map[string]*SourcePool{}
	d.pools = pools
	for _, blk := range content.Blocks {
		switch blk.Type {
		case "global":
			if prev := seen["global"]; prev != nil {
				d.errorf(blk.DefRange, "Duplicate global section", "The global section was already given at %s.", prev.DefRange)
				continue
			}
			seen["global"] = blk
			global = &globalBlock{}
			d.decodeBlock(blk.Body, global)
		case "source_pool":
			name := blk.Labels[0]
			if prev, dup := pools[name]; dup {
				d.errorf(blk.LabelRanges[0], "Duplicate source pool", "A source_pool named %q was already given at %s.", name, prev.Range)
				continue
			}
			pb := &sourcePoolBlock{}
			if d.decodeBlock(blk.Body, pb) {
				pools[name] = d.sourcePool(name, blk, pb)
			}
		case "defaults":
			if prev := seen["defaults"]; prev != nil {
				d.errorf(blk.DefRange, "Duplicate defaults section", "The defaults section was already given at %s.", prev.DefRange)
				continue
			}
			seen["defaults"] = blk
			d.decodeBlock(blk.Body, defaults)
			d.onlyDefaults(defaults)
			// Check the defaults' values even when no proxy uses them.
			d.check(d.timeouts(defaults, &proxyBlock{}), single(d, defaults.Checks, func(c *checkBlock) hcl.Range { return c.Range }, "check"))
		default:
			pb := &proxyBlock{}
			if d.decodeBlock(blk.Body, pb) {
				sections = append(sections, section{kind: blk.Type, name: blk.Labels[0], block: blk, body: pb})
			}
		}
	}
	if global == nil {
		global = &globalBlock{} // every setting at its default
	}
	cfg.Global = d.global(global)
	if len(cfg.Global.Logs) == 0 {
		cfg.Global.Logs = []LogTarget{{Network: "stderr", Format: "raw", Tag: "sluice", Facility: facilities["local0"]}}
	}

	frontNames := map[string]hcl.Range{}
	backNames := map[string]hcl.Range{}
	for _, s := range sections {
		nameRange := s.block.LabelRanges[0]
		if s.name == "" {
			d.errorf(nameRange, "Empty name", "A %s section needs a name.", s.kind)
			continue
		}
		if s.kind != "backend" {
			if prev, dup := frontNames[s.name]; dup {
				d.errorf(nameRange, "Duplicate proxy name", "A frontend or listen section named %q was already given at %s.", s.name, prev)
			}
			frontNames[s.name] = nameRange
		}
		if s.kind != "frontend" {
			if prev, dup := backNames[s.name]; dup {
				d.errorf(nameRange, "Duplicate proxy name", "A backend or listen section named %q was already given at %s.", s.name, prev)
			}
			backNames[s.name] = nameRange
		}
	}

	for _, s := range sections {
		switch s.kind {
		case "frontend":
			d.onlyFrontend(s)
			cfg.Frontends = append(cfg.Frontends, d.frontend(s, defaults))
		case "backend":
			d.onlyBackend(s)
			cfg.Backends = append(cfg.Backends, d.backend(s, defaults))
		}
	}
	for _, s := range sections {
		if s.kind == "listen" {
			fe := d.frontend(s, defaults)
			cfg.Frontends = append(cfg.Frontends, fe)
			if (fe.Stats != nil || fe.Prometheus != nil) && len(s.body.Servers) == 0 {
				continue // a service sluice answers itself: no backend half
			}
			if fe.DefaultBackend == "" {
				fe.DefaultBackend = s.name
			}
			cfg.Backends = append(cfg.Backends, d.backend(s, defaults))
		}
	}
	d.references(cfg, sections)
	// A listen section is decoded twice (as frontend and as backend):
	// report each problem once.
	d.diags = dedupe(d.diags)
	if d.diags.HasErrors() {
		return nil, d.diags
	}
	return cfg, d.diags
}

func dedupe(diags hcl.Diagnostics) hcl.Diagnostics {
	seen := map[string]bool{}
	var out hcl.Diagnostics
	for _, d := range diags {
		key := d.Summary + "\x00" + d.Detail
		if d.Subject != nil {
			key += "\x00" + d.Subject.String()
		}
		if !seen[key] {
			seen[key] = true
			out = append(out, d)
		}
	}
	return out
}

// notAllowed reports each written expression as misplaced in kind.
func (d *decoder) notAllowed(kind string, attrs map[string]hcl.Expression) {
	for name, e := range attrs {
		if set(e) {
			d.errorf(e.Range(), "Unsupported argument", "%q cannot be used in a %s section.", name, kind)
		}
	}
}

func (d *decoder) onlyDefaults(p *proxyBlock) {
	d.notAllowed("defaults", map[string]hcl.Expression{
		"bind": p.Bind, "accept_proxy": p.AcceptProxy, "default_backend": p.DefaultBackend, "reuseport": p.ReusePort,
	})
	for _, r := range p.TCPRequest {
		d.errorf(r.ActionRange, "Unsupported block type", "tcp_request rules belong in a frontend or listen section.")
	}
	for _, s := range p.Servers {
		d.errorf(s.Range, "Unsupported block type", "Servers belong in a backend or listen section.")
	}
	for _, pb := range p.Prometheus {
		d.errorf(pb.Range, "Unsupported block type", "prometheus belongs in a frontend or listen section.")
	}
	for _, sb := range p.Stats {
		d.errorf(sb.Range, "Unsupported block type", "stats belongs in a frontend or listen section.")
	}
}

func (d *decoder) onlyFrontend(s section) {
	p := s.body
	d.notAllowed("frontend", map[string]hcl.Expression{
		"balance": p.Balance, "hash_type": p.HashType, "retries": p.Retries,
		"redispatch": p.Redispatch, "source": p.Source,
	})
	for _, c := range p.Checks {
		d.errorf(c.Range, "Unsupported block type", "Health checks belong in a backend or listen section.")
	}
	for _, sv := range p.Servers {
		d.errorf(sv.Range, "Unsupported block type", "Servers belong in a backend or listen section; a frontend names its backend with default_backend.")
	}
}

func (d *decoder) onlyBackend(s section) {
	p := s.body
	d.notAllowed("backend", map[string]hcl.Expression{
		"bind": p.Bind, "accept_proxy": p.AcceptProxy, "default_backend": p.DefaultBackend,
		"maxconn": p.MaxConn, "backlog": p.Backlog, "reuseport": p.ReusePort,
	})
	for _, r := range p.TCPRequest {
		d.errorf(r.ActionRange, "Unsupported block type", "tcp_request rules belong in a frontend or listen section.")
	}
	for _, pb := range p.Prometheus {
		d.errorf(pb.Range, "Unsupported block type", "prometheus belongs in a frontend or listen section.")
	}
	for _, sb := range p.Stats {
		d.errorf(sb.Range, "Unsupported block type", "stats belongs in a frontend or listen section.")
	}
}

// AutoPollBeforeSleep is how long poll_before_sleep = "auto" (the
// default) keeps busy threads polling after the last work.
const AutoPollBeforeSleep = 50 * time.Microsecond

// pollBeforeSleep reads poll_before_sleep: "auto" (the default), "off",
// or a duration, "0" being off.
func (d *decoder) pollBeforeSleep(e hcl.Expression) (window time.Duration, whenBusy bool) {
	switch s := d.str(e, "poll_before_sleep", "auto"); s {
	case "auto":
		return AutoPollBeforeSleep, true
	case "off":
		return 0, false
	default:
		dur, err := ParseDuration(s)
		if err != nil {
			d.errorf(e.Range(), "Invalid poll_before_sleep", "%s; it is \"auto\" (poll only while the threads are busy, the default), \"off\", or a duration like \"50us\".", err)
			return AutoPollBeforeSleep, true
		}
		return dur, false
	}
}

func (d *decoder) global(g *globalBlock) Global {
	out := Global{
		MaxConn:       d.integer(g.MaxConn, "maxconn", 0, 1, 10_000_000),
		Threads:       d.integer(g.Threads, "threads", 0, 0, 4096),
		HardStopAfter: d.duration(g.HardStopAfter, "hard_stop_after", 0),
		BusyPolling:   d.boolean(g.BusyPolling, "busy_polling", false),
	}
	out.PollBeforeSleep, out.PollWhenBusy = d.pollBeforeSleep(g.PollBefore)
	if out.BusyPolling && set(g.PollBefore) && out.PollBeforeSleep > 0 {
		d.errorf(g.PollBefore.Range(), "Conflicting settings", "poll_before_sleep has no effect with busy_polling = true, which polls without end; keep one of them.")
	}
	if s := d.str(g.CPUs, "cpus", ""); s != "" {
		cpus, err := ParseCPUSet(s)
		if err != nil {
			d.errorf(g.CPUs.Range(), "Invalid CPU set", "%s.", err)
		}
		out.CPUs = cpus
	}
	seenAdmin := map[string]bool{}
	for _, a := range g.AdminSockets {
		as := AdminSocket{Path: a.Path, Level: d.str(a.Level, "level", "admin"), ExposeListeners: d.boolean(a.ExposeListeners, "expose_listeners", false),
			User: d.str(a.User, "user", ""), Group: d.str(a.Group, "group", "")}
		if addr, isTCP := strings.CutPrefix(a.Path, "tcp://"); isTCP {
			host, _, err := splitPort(addr)
			ip, perr := netip.ParseAddr(host)
			switch {
			case err != nil:
				d.errorf(a.PathRange, "Invalid admin socket address", "%s.", err)
			case perr != nil:
				d.errorf(a.PathRange, "Invalid admin socket address", "%q is not an IP address.", host)
			case !ip.IsLoopback():
				d.warnf(a.PathRange, "Admin socket reachable from the network", "%s is not a loopback address: anyone who reaches it gets level %q; there is no password.", host, as.Level)
			}
			if set(a.User) || set(a.Group) || set(a.Mode) {
				d.errorf(a.PathRange, "Unix options on a TCP socket", "mode, user and group apply to unix sockets only.")
			}
		} else if !strings.HasPrefix(a.Path, "/") {
			d.errorf(a.PathRange, "Invalid admin socket path", "%q must be an absolute path or tcp://IP:port.", a.Path)
		}
		if seenAdmin[a.Path] {
			d.errorf(a.PathRange, "Duplicate admin socket", "%q is given twice.", a.Path)
		}
		seenAdmin[a.Path] = true
		switch as.Level {
		case "user", "operator", "admin":
		default:
			d.errorf(a.Level.Range(), "Invalid level", "level must be \"user\", \"operator\" or \"admin\", not %q.", as.Level)
		}
		mode := d.str(a.Mode, "mode", "0600")
		m, err := strconv.ParseUint(mode, 8, 32)
		if err != nil || m > 0o777 {
			d.errorf(a.Mode.Range(), "Invalid mode", "mode must be octal permissions such as \"0660\", not %q.", mode)
		}
		as.Mode = uint32(m)
		out.AdminSockets = append(out.AdminSockets, as)
	}
	for _, l := range g.Logs {
		t := LogTarget{Tag: d.str(l.Tag, "tag", "sluice"), Range: l.Range}
		if !set(l.Address) {
			d.errorf(l.Range, "Missing log address", "A log block needs an address such as \"stderr\", \"udp://127.0.0.1:514\" or \"unix:///dev/log\".")
			continue
		}
		network, addr, err := parseLogAddress(d.str(l.Address, "address", ""))
		if err != nil {
			d.errorf(l.Address.Range(), "Invalid log address", "%s.", err)
		}
		t.Network, t.Address = network, addr
		fac := d.str(l.Facility, "facility", "local0")
		n, ok := facilities[fac]
		if !ok {
			d.errorf(l.Facility.Range(), "Unknown syslog facility", "%q is not a syslog facility (kern, user, daemon, local0 to local7, ...).", fac)
		}
		t.Facility = n
		defFormat := "rfc3164"
		if network == "stderr" || network == "stdout" {
			defFormat = "raw"
		}
		t.Format = d.str(l.Format, "format", defFormat)
		switch t.Format {
		case "rfc3164", "rfc5424", "raw":
		default:
			d.errorf(l.Format.Range(), "Unknown log format", "format must be \"rfc3164\", \"rfc5424\" or \"raw\", not %q.", t.Format)
		}
		out.Logs = append(out.Logs, t)
	}
	return out
}

// sourcePool decodes a source_pool block: addresses (IPs or CIDRs, each
// expanded), a port range, and the interface they live on.
func (d *decoder) sourcePool(name string, blk *hcl.Block, pb *sourcePoolBlock) *SourcePool {
	sp := &SourcePool{Name: name, Interface: d.str(pb.Interface, "interface", ""), NAT: d.boolean(pb.NAT, "nat", false), Range: blk.DefRange}
	for _, a := range d.strings(pb.Addresses, "addresses") {
		pfx, err := parsePrefix(a)
		if err != nil {
			d.errorf(pb.Addresses.Range(), "Invalid pool address", "%s.", err)
			continue
		}
		if pfx.Addr().BitLen()-pfx.Bits() > 16 {
			d.errorf(pb.Addresses.Range(), "Pool prefix too large", "%s has more than 65536 addresses.", pfx)
			continue
		}
		for ip := pfx.Addr(); pfx.Contains(ip); ip = ip.Next() {
			sp.Addresses = append(sp.Addresses, ip)
		}
	}
	if len(sp.Addresses) == 0 {
		d.errorf(blk.DefRange, "Empty source pool", "The source_pool %q needs addresses.", name)
	}
	ports := d.str(pb.Ports, "ports", "1025-65000")
	lo, hi, ok := strings.Cut(ports, "-")
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || l < 1 || h > 65535 || l > h {
		d.errorf(pb.Ports.Range(), "Invalid port range", "ports must be \"low-high\" within 1-65535, not %q.", ports)
	}
	sp.PortLow, sp.PortHigh = uint16(l), uint16(h)
	if sp.NAT && len(sp.Addresses) > 0 && !d.diags.HasErrors() {
		// sluice binds the first address, one local port per connection,
		// and each slice of those ports is rewritten to one pool address.
		// A local address has 64K ports: that bounds a nat pool.
		n := len(sp.Addresses) * (h - l + 1)
		if l+n-1 > 65535 {
			d.errorf(pb.Ports.Range(), "nat pool too large", "With nat = true sluice binds only %s and needs one of its local ports per connection: %d addresses x %d ports is %d, more than the %d ports from %d up. Narrow ports (for example \"%d-%d\"), or use nat = false, where sluice binds every address itself.",
				sp.Addresses[0], len(sp.Addresses), h-l+1, n, 65535-l+1, l, l, l+(65535-l+1)/len(sp.Addresses)-1)
		}
		for _, a := range sp.Addresses {
			if !a.Is4() {
				d.errorf(pb.Addresses.Range(), "nat pool needs IPv4", "nat = true rewrites IPv4 sources; %s is not one.", a)
				break
			}
		}
	}
	return sp
}

// LocalPorts is the range of local ports sluice uses on the first address
// of a nat pool: one slice of PortHigh-PortLow+1 ports per pool address.
func (p *SourcePool) LocalPorts() (low, high uint16) {
	n := len(p.Addresses) * (int(p.PortHigh) - int(p.PortLow) + 1)
	return p.PortLow, uint16(int(p.PortLow) + n - 1)
}

// poolRef resolves source_pool = "name"; it cannot be combined with source.
func (d *decoder) poolRef(e hcl.Expression, hasSource bool) *SourcePool {
	name := d.str(e, "source_pool", "")
	if name == "" {
		return nil
	}
	if hasSource {
		d.errorf(e.Range(), "source and source_pool together", "Use either a single source or a source_pool.")
	}
	sp := d.pools[name]
	if sp == nil {
		d.errorf(e.Range(), "Unknown source pool", "No source_pool is named %q.", name)
	}
	return sp
}

// stats decodes a stats page block. Passwords should be bcrypt hashes; a
// plain-text one is accepted with a warning.
func (d *decoder) stats(sb *statsBlock) *Stats {
	st := &Stats{
		URI:         d.str(sb.URI, "uri", "/stats"),
		Refresh:     d.duration(sb.Refresh, "refresh", 0),
		Realm:       d.str(sb.Realm, "realm", "sluice statistics"),
		Admin:       d.boolean(sb.Admin, "admin", false),
		HideVersion: d.boolean(sb.HideVersion, "hide_version", false),
		Users:       map[string]string{},
	}
	if !strings.HasPrefix(st.URI, "/") {
		d.errorf(sb.URI.Range(), "Invalid uri", "The uri must start with \"/\", not %q.", st.URI)
	}
	if v, ok := d.value(sb.Users, cty.Map(cty.String), "users"); ok {
		for name, pw := range v.AsValueMap() {
			hash := pw.AsString()
			if !isBcrypt(hash) {
				d.warnf(sb.Users.Range(), "Plain-text password", "The password of stats user %q is not a bcrypt hash ($2y$...): anyone who reads this file can log in. Generate one with htpasswd -nB %s.", name, name)
			}
			st.Users[name] = hash
		}
	}
	if st.Admin && len(st.Users) == 0 {
		d.errorf(sb.Range, "Stats admin without users", "admin = true needs users: the page would let anyone change servers.")
	}
	return st
}

func isBcrypt(s string) bool {
	return len(s) == 60 && (strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$"))
}

// mode, log and timeouts are shared by both halves of a proxy.
func (d *decoder) mode(p, def *proxyBlock) Mode {
	e := pick(p.Mode, def.Mode)
	m := Mode(d.str(e, "mode", "tcp"))
	switch m {
	case ModeTCP:
	case ModeHTTP: // checked by the frontend and backend: services only, for now
	default:
		d.errorf(e.Range(), "Unknown mode", "mode must be \"tcp\" or \"http\", not %q.", m)
	}
	return m
}

func (d *decoder) log(p, def *proxyBlock) bool {
	e := pick(p.Log, def.Log)
	v := d.str(e, "log", "")
	switch v {
	case "", "none":
		return false
	case "global":
		return true
	}
	d.errorf(e.Range(), "Invalid log setting", "log must be \"global\" or \"none\", not %q.", v)
	return false
}

// single returns the only block of a kind, reporting repeats.
func single[T any](d *decoder, blocks []*T, rangeOf func(*T) hcl.Range, what string) *T {
	if len(blocks) == 0 {
		return nil
	}
	for _, b := range blocks[1:] {
		d.errorf(rangeOf(b), "Duplicate "+what+" block", "Only one %s block is allowed here; the first is at %s.", what, rangeOf(blocks[0]))
	}
	return blocks[0]
}

func (d *decoder) timeouts(p, def *proxyBlock) Timeouts {
	r := func(t *timeoutBlock) hcl.Range { return t.Range }
	own := single(d, p.Timeouts, r, "timeout")
	dflt := single(d, def.Timeouts, r, "timeout")
	if own == nil {
		own = &timeoutBlock{}
	}
	if dflt == nil {
		dflt = &timeoutBlock{}
	}
	field := func(a, b hcl.Expression, name string, fallback time.Duration) time.Duration {
		return d.duration(pick(a, b), "timeout "+name, fallback)
	}
	t := Timeouts{
		Connect:       field(own.Connect, dflt.Connect, "connect", 5*time.Second),
		Client:        field(own.Client, dflt.Client, "client", 50*time.Second),
		Server:        field(own.Server, dflt.Server, "server", 50*time.Second),
		Tunnel:        field(own.Tunnel, dflt.Tunnel, "tunnel", 0),
		ClientFin:     field(own.ClientFin, dflt.ClientFin, "client_fin", 0),
		ServerFin:     field(own.ServerFin, dflt.ServerFin, "server_fin", 0),
		Check:         field(own.Check, dflt.Check, "check", 0),
		HTTPKeepAlive: field(own.HTTPKeepAlive, dflt.HTTPKeepAlive, "http_keep_alive", 0),
	}
	t.HTTPRequest = field(own.HTTPRequest, dflt.HTTPRequest, "http_request", t.Client)
	t.Queue = field(own.Queue, dflt.Queue, "queue", t.Connect)
	return t
}

func (d *decoder) frontend(s section, def *proxyBlock) *Frontend {
	p := s.body
	fe := &Frontend{
		Name:        s.name,
		Mode:        d.mode(p, def),
		MaxConn:     d.integer(pick(p.MaxConn, def.MaxConn), "maxconn", 0, 1, 10_000_000),
		Backlog:     d.integer(pick(p.Backlog, def.Backlog), "backlog", 0, 1, 1<<20),
		AcceptProxy: d.boolean(p.AcceptProxy, "accept_proxy", false),
		ReusePort:   d.boolean(p.ReusePort, "reuseport", false),
		Timeouts:    d.timeouts(p, def),
		Log:         d.log(p, def),
		Range:       s.block.DefRange,
	}
	fe.DefaultBackend = d.str(p.DefaultBackend, "default_backend", "")
	if pb := single(d, p.Prometheus, func(b *prometheusBlock) hcl.Range { return b.Range }, "prometheus"); pb != nil {
		uri := d.str(pb.URI, "uri", "/metrics")
		if !strings.HasPrefix(uri, "/") {
			d.errorf(pb.URI.Range(), "Invalid uri", "The uri must start with \"/\", not %q.", uri)
		}
		fe.Prometheus = &Prometheus{URI: uri}
		if fe.Mode != ModeHTTP {
			d.errorf(pb.Range, "Prometheus needs HTTP mode", "Set mode = \"http\" in the %s section %q to serve metrics.", s.kind, s.name)
		}
	}
	if sb := single(d, p.Stats, func(b *statsBlock) hcl.Range { return b.Range }, "stats"); sb != nil {
		fe.Stats = d.stats(sb)
		if fe.Mode != ModeHTTP {
			d.errorf(sb.Range, "Stats page needs HTTP mode", "Set mode = \"http\" in the %s section %q to serve the stats page.", s.kind, s.name)
		}
	}
	if fe.Mode == ModeHTTP && fe.Prometheus == nil && fe.Stats == nil {
		fe.HTTP = d.http(s, def, true)
	} else {
		d.tcpOnly(s)
	}
	binds := d.strings(p.Bind, "bind")
	if len(binds) == 0 {
		rng := s.block.DefRange
		if set(p.Bind) {
			rng = p.Bind.Range()
		}
		d.errorf(rng, "Missing bind", "The %s section %q needs at least one bind address, such as bind = [\"127.0.0.1:8080\"].", s.kind, s.name)
	}
	seen := map[string]bool{}
	for _, b := range binds {
		if err := checkBindAddress(b); err != nil {
			d.errorf(p.Bind.Range(), "Invalid bind address", "%s.", err)
			continue
		}
		if seen[b] {
			d.errorf(p.Bind.Range(), "Duplicate bind address", "%q is listed twice.", b)
		}
		seen[b] = true
		fe.Binds = append(fe.Binds, Bind{Address: b, Range: p.Bind.Range()})
	}
	for _, r := range p.TCPRequest {
		rule := TCPRule{Action: r.Action}
		if r.Action != "accept" && r.Action != "reject" {
			d.errorf(r.ActionRange, "Unknown tcp_request action", "The action must be \"accept\" or \"reject\", not %q.", r.Action)
		}
		for _, src := range d.strings(r.Source, "source") {
			pfx, err := parsePrefix(src)
			if err != nil {
				d.errorf(r.Source.Range(), "Invalid source", "%s.", err)
				continue
			}
			rule.Sources = append(rule.Sources, pfx)
		}
		fe.TCPRequest = append(fe.TCPRequest, rule)
	}
	return fe
}

var balanceAlgorithms = map[string]bool{
	"roundrobin": true, "static-rr": true, "leastconn": true, "first": true, "source": true, "random": true,
	"uri": true, "url_param": true, "hdr": true,
}

var httpBalance = map[string]bool{"uri": true, "url_param": true, "hdr": true}

// splitBalance splits "hdr(User-Agent)" into the algorithm and its
// parameter.
func splitBalance(s string) (algo, param string) {
	if i := strings.IndexByte(s, '('); i > 0 && strings.HasSuffix(s, ")") {
		return s[:i], s[i+1 : len(s)-1]
	}
	return s, ""
}

func (d *decoder) backend(s section, def *proxyBlock) *Backend {
	p := s.body
	be := &Backend{
		Name:       s.name,
		Mode:       d.mode(p, def),
		Retries:    d.integer(pick(p.Retries, def.Retries), "retries", 3, 0, 100),
		Redispatch: d.boolean(pick(p.Redispatch, def.Redispatch), "redispatch", false),
		Timeouts:   d.timeouts(p, def),
		Log:        d.log(p, def),
		Range:      s.block.DefRange,
	}
	balance := pick(p.Balance, def.Balance)
	be.Balance = d.str(balance, "balance", "roundrobin")
	if algo, param := splitBalance(be.Balance); !balanceAlgorithms[algo] {
		d.errorf(balance.Range(), "Unknown balance algorithm", "balance must be one of roundrobin, static-rr, leastconn, first, source, random, uri, url_param(NAME), hdr(NAME); not %q.", be.Balance)
	} else if httpBalance[algo] && be.Mode != ModeHTTP {
		d.errorf(balance.Range(), "Balance needs HTTP mode", "balance %q hashes part of the request: it needs mode = \"http\".", be.Balance)
	} else if (algo == "url_param" || algo == "hdr") && param == "" {
		d.errorf(balance.Range(), "Missing balance parameter", "Write %s(NAME).", algo)
	}
	hashType := pick(p.HashType, def.HashType)
	be.HashType = d.str(hashType, "hash_type", "map-based")
	if be.HashType != "map-based" && be.HashType != "consistent" {
		d.errorf(hashType.Range(), "Unknown hash type", "hash_type must be \"map-based\" or \"consistent\", not %q.", be.HashType)
	}
	be.Source = d.source(pick(p.Source, def.Source))
	be.SourcePool = d.poolRef(p.SourcePool, be.Source != nil)

	ckr := func(c *checkBlock) hcl.Range { return c.Range }
	backendCheck := single(d, p.Checks, ckr, "check")
	defaultCheck := single(d, def.Checks, ckr, "check")
	d.check(be.Timeouts, backendCheck, defaultCheck) // checked even without servers
	if be.Mode == ModeHTTP {
		be.HTTP = d.http(s, def, false)
		be.Balance, be.HTTP.HashParam = splitBalance(be.Balance)
		if be.Balance == "hdr" {
			be.HTTP.HashParam = strings.ToLower(be.HTTP.HashParam)
		}
	} else if s.kind == "backend" {
		d.tcpOnly(s)
	}
	names := map[string]hcl.Range{}
	for _, sb := range p.Servers {
		if prev, dup := names[sb.Name]; dup {
			d.errorf(sb.NameRange, "Duplicate server name", "A server named %q is already in %q at %s.", sb.Name, s.name, prev)
		}
		names[sb.Name] = sb.NameRange
		own := single(d, sb.Checks, ckr, "check")
		be.Servers = append(be.Servers, d.server(sb, be.Timeouts, own, backendCheck, defaultCheck))
	}
	return be
}

func (d *decoder) source(e hcl.Expression) *Source {
	s := d.str(e, "source", "")
	if s == "" {
		return nil
	}
	src, err := ParseSource(s)
	if err != nil {
		d.errorf(e.Range(), "Invalid source address", "%s.", err)
		return nil
	}
	return src
}

func (d *decoder) server(sb *serverBlock, t Timeouts, checks ...*checkBlock) *Server {
	sv := &Server{
		Name:     sb.Name,
		Address:  d.str(sb.Address, "address", ""),
		Weight:   d.integer(sb.Weight, "weight", 1, 0, 256),
		MaxConn:  d.integer(sb.MaxConn, "maxconn", 0, 0, 10_000_000),
		MaxQueue: d.integer(sb.MaxQueue, "maxqueue", 0, 0, 10_000_000),
		Backup:   d.boolean(sb.Backup, "backup", false),
		Disabled: d.boolean(sb.Disabled, "disabled", false),
		Source:   d.source(sb.Source),
		Range:    sb.Range,
	}
	sv.SourcePool = d.poolRef(sb.SourcePoolRef, sv.Source != nil)
	if err := checkServerAddress(sv.Address); err != nil && set(sb.Address) {
		d.errorf(sb.Address.Range(), "Invalid server address", "%s.", err)
	}
	if set(sb.SendProxy) {
		v, diags := sb.SendProxy.Value(d.ctx)
		d.diags = append(d.diags, diags...)
		switch {
		case diags.HasErrors():
		case v.Type().FriendlyName() == "bool":
			if v.True() {
				sv.SendProxy = 1
			}
		default:
			switch d.str(sb.SendProxy, "send_proxy", "") {
			case "v1":
				sv.SendProxy = 1
			case "v2":
				sv.SendProxy = 2
			default:
				d.errorf(sb.SendProxy.Range(), "Invalid send_proxy", "send_proxy must be \"v1\", \"v2\", true or false.")
			}
		}
	}
	sv.Check = d.check(t, checks...)
	return sv
}

// check merges check blocks field by field, most specific first. Any block
// present turns checking on unless the first to say so sets enabled = false.
func (d *decoder) check(t Timeouts, blocks ...*checkBlock) *Check {
	var present []*checkBlock
	for _, b := range blocks {
		if b != nil {
			present = append(present, b)
		}
	}
	if len(present) == 0 {
		return nil
	}
	field := func(get func(*checkBlock) hcl.Expression) hcl.Expression {
		es := make([]hcl.Expression, len(present))
		for i, b := range present {
			es[i] = get(b)
		}
		return pick(es...)
	}
	if !d.boolean(field(func(c *checkBlock) hcl.Expression { return c.Enabled }), "enabled", true) {
		return nil
	}
	c := &Check{
		Interval: d.duration(field(func(c *checkBlock) hcl.Expression { return c.Interval }), "interval", 2*time.Second),
		Rise:     d.integer(field(func(c *checkBlock) hcl.Expression { return c.Rise }), "rise", 2, 1, 1000),
		Fall:     d.integer(field(func(c *checkBlock) hcl.Expression { return c.Fall }), "fall", 3, 1, 1000),
		Send:     d.str(field(func(c *checkBlock) hcl.Expression { return c.Send }), "send", ""),
		Expect:   d.str(field(func(c *checkBlock) hcl.Expression { return c.Expect }), "expect", ""),
	}
	c.FastInterval = d.duration(field(func(c *checkBlock) hcl.Expression { return c.FastInterval }), "fast_interval", c.Interval)
	c.DownInterval = d.duration(field(func(c *checkBlock) hcl.Expression { return c.DownInterval }), "down_interval", c.Interval)
	deflt := t.Check
	if deflt == 0 {
		deflt = c.Interval
	}
	c.Timeout = d.duration(field(func(c *checkBlock) hcl.Expression { return c.Timeout }), "timeout", deflt)
	for name, v := range map[string]time.Duration{"interval": c.Interval, "fast_interval": c.FastInterval, "down_interval": c.DownInterval, "timeout": c.Timeout} {
		if v < time.Millisecond {
			d.errorf(present[0].Range, "Invalid check "+name, "The check's %s must be at least 1ms.", name)
		}
	}
	var httpBlocks []*httpCheckBlock
	for _, b := range present {
		httpBlocks = append(httpBlocks, b.HTTP...)
	}
	if len(httpBlocks) > 0 {
		hb := httpBlocks[0]
		hc := &HTTPCheck{Method: strings.ToUpper(d.str(hb.Method, "method", "GET")), Path: d.str(hb.Path, "path", "/"), Host: d.str(hb.Host, "host", "")}
		if !strings.HasPrefix(hc.Path, "/") || strings.ContainsAny(hc.Path+hc.Host+hc.Method, " \r\n") {
			d.errorf(hb.Range, "Invalid HTTP check", "path must start with \"/\"; method, path and host cannot contain spaces.")
		}
		if v, ok := d.value(hb.ExpectStatus, cty.List(cty.Number), "expect_status"); ok {
			for _, n := range v.AsValueSlice() {
				i, _ := n.AsBigFloat().Int64()
				if i < 100 || i > 599 {
					d.errorf(hb.ExpectStatus.Range(), "Invalid status", "expect_status holds HTTP status codes (100-599).")
				}
				hc.ExpectStatus = append(hc.ExpectStatus, int(i))
			}
		}
		c.HTTP = hc
	}
	if e := field(func(c *checkBlock) hcl.Expression { return c.ExpectRegex }); e != nil {
		re, err := regexp.Compile(d.str(e, "expect_regex", ""))
		if err != nil {
			d.errorf(e.Range(), "Invalid regular expression", "%s.", err)
		}
		c.ExpectRegex = re
	}
	return c
}

// references checks names that point at other sections.
func (d *decoder) references(cfg *Config, sections []section) {
	for _, s := range sections {
		if s.kind == "backend" {
			continue
		}
		p := s.body
		name := d.str(p.DefaultBackend, "default_backend", "")
		if name == "" {
			if s.kind == "frontend" && len(p.Prometheus) == 0 && len(p.Stats) == 0 && len(p.UseBackends) == 0 && len(p.HTTPRequest) == 0 {
				d.errorf(s.block.DefRange, "Missing default_backend", "The frontend %q must name its backend with default_backend.", s.name)
			}
			continue
		}
		be := cfg.Backend(name)
		if be == nil {
			d.errorf(p.DefaultBackend.Range(), "Unknown backend", "No backend or listen section is named %q.", name)
			continue
		}
		fe := d.frontendNamed(cfg, s.name)
		if fe != nil && fe.Mode != be.Mode {
			d.errorf(p.DefaultBackend.Range(), "Mode mismatch", "The frontend %q is in %s mode but the backend %q is in %s mode.", s.name, fe.Mode, name, be.Mode)
		}
	}
	for _, fe := range cfg.Frontends {
		if fe.HTTP == nil {
			continue
		}
		for _, ub := range fe.HTTP.UseBackends {
			be := cfg.Backend(ub.Backend)
			switch {
			case be == nil:
				d.errorf(ub.Range, "Unknown backend", "No backend or listen section is named %q.", ub.Backend)
			case be.Mode != ModeHTTP:
				d.errorf(ub.Range, "Mode mismatch", "The backend %q is in %s mode; use_backend needs an http backend.", ub.Backend, be.Mode)
			}
		}
	}
	for _, be := range cfg.Backends {
		if len(be.Servers) == 0 && be.Mode != ModeHTTP {
			d.warnf(be.Range, "Backend without servers", "The backend %q has no servers; its connections will fail.", be.Name)
		}
	}
}

func (d *decoder) frontendNamed(cfg *Config, name string) *Frontend {
	for _, f := range cfg.Frontends {
		if f.Name == name {
			return f
		}
	}
	return nil
}
