// Package hcl reads sluice's configuration, written in HCL
// (https://github.com/hashicorp/hcl), into plain typed structs.
//
// Every problem is reported as an hcl.Diagnostic with the file, line and
// column of the offending token. Nothing here opens sockets or starts
// anything: the daemon turns a Config into runtime objects.
package hcl

import (
	"net/netip"
	"regexp"
	"time"

	hcl "github.com/hashicorp/hcl/v2"
)

// Config is one checked configuration: a generation's whole input.
type Config struct {
	// Files lists the files it was read from, in load order.
	Files     []string
	Global    Global
	Frontends []*Frontend // frontend sections, then the frontend half of listen sections
	Backends  []*Backend  // backend sections, then the backend half of listen sections
	// SourcePools are the source_pool blocks, by name.
	SourcePools map[string]*SourcePool
}

// SourcePool is a set of local addresses and a port range that server
// connections are spread over, so that one balancer can hold more than
// one address's worth of connections to one server.
type SourcePool struct {
	Name      string
	Addresses []netip.Addr // CIDRs expanded
	// PortLow and PortHigh bound the ports used on every address; default 1025-65000.
	PortLow, PortHigh uint16
	// Interface is where sluice net apply adds the addresses; empty: none added.
	Interface string
	// NAT: sluice binds only the first address and nftables rewrites the
	// source over the pool (sluice net apply installs the rule).
	NAT   bool
	Range hcl.Range
}

// Backend returns the backend named name, or nil.
func (c *Config) Backend(name string) *Backend {
	for _, b := range c.Backends {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// Global holds process-wide settings.
type Global struct {
	// MaxConn caps concurrent client connections over all frontends.
	// Zero means: derived at start from the open-files limit.
	MaxConn int
	// Threads sets GOMAXPROCS; zero means all CPUs.
	Threads int
	// CPUs pins the process to these CPU numbers; nil means no pinning.
	CPUs []int
	// HardStopAfter bounds a graceful stop; zero means wait for ever.
	HardStopAfter time.Duration
	// BusyPolling keeps the threads polling instead of sleeping when
	// idle (HAProxy's busy-polling): lower latency on virtual machines,
	// a whole CPU per thread spent. A draining generation stops.
	BusyPolling bool
	// PollBeforeSleep keeps the threads polling for this long after the
	// last request, connection or socket event before they sleep: busy
	// polling's latency while traffic flows, no CPU when idle. Zero:
	// they sleep at once.
	PollBeforeSleep time.Duration
	// PollWhenBusy applies PollBeforeSleep only while the threads spend
	// most of their time on work anyway (poll_before_sleep = "auto", the
	// default), so that a lightly loaded process sleeps between requests.
	PollWhenBusy bool
	// Logs are the destinations of proxies that say log = "global".
	// When the configuration names none, it is one stderr target.
	Logs []LogTarget
	// AdminSockets are the runtime API's unix sockets.
	AdminSockets []AdminSocket
}

// AdminSocket is one socket of the runtime API.
type AdminSocket struct {
	// Path is a unix socket path, or "tcp://IP:port" for a TCP listener
	// (meant for loopback).
	Path string
	// User and Group own the unix socket file; empty keeps sluice's.
	User, Group string
	// Mode is the socket file's permissions; default 0600.
	Mode uint32
	// Level is "user" (read), "operator" (read, states, weights) or
	// "admin" (everything); default "admin".
	Level string
	// ExposeListeners lets a successor fetch the listening sockets over
	// this socket (sluice run --takeover), as HAProxy's "expose-fd listeners".
	ExposeListeners bool
}

// LogTarget is one place log lines are sent to.
type LogTarget struct {
	// Network is "stderr", "stdout", "udp", "tcp" or "unix" (datagram socket).
	Network string
	// Address is host:port for udp and tcp, a path for unix, empty otherwise.
	Address string
	// Facility is the syslog facility number (local0 is 16).
	Facility int
	// Format is "rfc3164" or "rfc5424"; for stderr and stdout, "raw" (no
	// syslog header) unless set.
	Format string
	// Tag is the syslog APP-NAME; default "sluice".
	Tag   string
	Range hcl.Range
}

// Mode is a proxy's processing mode.
type Mode string

// Modes.
const (
	ModeTCP  Mode = "tcp"
	ModeHTTP Mode = "http"
)

// Timeouts are a proxy's timers. Zero means no timeout.
type Timeouts struct {
	Connect   time.Duration // establishing a server connection; default 5s
	Client    time.Duration // client-side inactivity; default 50s
	Server    time.Duration // server-side inactivity; default 50s
	Queue     time.Duration // waiting in a queue for a server slot; default: Connect
	Tunnel    time.Duration // inactivity once both sides talk; zero: Client and Server apply
	ClientFin time.Duration // client-side inactivity after the client shut its side; zero: Client
	ServerFin time.Duration // server-side inactivity after the server shut its side; zero: Server
	Check     time.Duration // a health check's whole exchange; zero: the check's interval
	// HTTPRequest bounds the arrival of a whole request head; default Client.
	HTTPRequest time.Duration
	// HTTPKeepAlive bounds the wait for the next request on a kept-alive
	// connection; zero: HTTPRequest.
	HTTPKeepAlive time.Duration
}

// Bind is one listening address.
type Bind struct {
	// Address is host:port; an empty host or "*" means every address.
	Address string
	Range   hcl.Range
}

// TCPRule is one tcp_request rule, evaluated in order on accept.
type TCPRule struct {
	// Action is "accept" or "reject".
	Action string
	// Sources are the client prefixes the rule applies to; empty means all.
	Sources []netip.Prefix
}

// Frontend accepts client connections.
type Frontend struct {
	Name  string
	Mode  Mode
	Binds []Bind
	// MaxConn caps this frontend's concurrent connections; zero: only the global cap.
	MaxConn int
	// Backlog is the listen(2) queue length; zero: the kernel's somaxconn.
	Backlog int
	// AcceptProxy expects a PROXY protocol header (v1 or v2) on every connection.
	AcceptProxy bool
	// ReusePort sets SO_REUSEPORT on the binds, for users who run several
	// independent instances on one address.
	ReusePort bool
	// DefaultBackend names the backend connections go to.
	DefaultBackend string
	TCPRequest     []TCPRule
	Timeouts       Timeouts
	// Prometheus, if set, makes this an HTTP service answering metrics at
	// its URI (HTTP proxying comes later).
	Prometheus *Prometheus
	// Stats, if set, serves the HTML stats page at its URI.
	Stats *Stats
	// Log sends one line per connection to the global log targets.
	Log bool
	// HTTP is set in mode "http" (except for sluice's own services).
	HTTP  *HTTP
	Range hcl.Range
}

// Prometheus serves metrics in the Prometheus text format.
type Prometheus struct {
	URI string // default "/metrics"
}

// Stats is the stats page.
type Stats struct {
	URI     string        // default "/stats"; ";csv" and ";json" suffixes give machine forms
	Refresh time.Duration // page auto-refresh; zero: none
	Realm   string        // HTTP basic authentication realm
	// Users maps user names to bcrypt hashes (or, with a warning, plain
	// text). Empty means no authentication.
	Users map[string]string
	// Admin lets authenticated users change servers from the page.
	Admin       bool
	HideVersion bool
}

// Backend is a set of servers and how to choose between them.
type Backend struct {
	Name string
	Mode Mode
	// Balance is one of roundrobin, static-rr, leastconn, first, source, random.
	Balance string
	// HashType is "map-based" (default) or "consistent", for hashing algorithms.
	HashType string
	// Retries is how many times a failed connect is tried again; default 3.
	Retries int
	// Redispatch lets the last retry go to another server.
	Redispatch bool
	// Source is the default source address of server connections; nil: the kernel chooses.
	Source *Source
	// SourcePool, if set, spreads server connections over a pool instead.
	SourcePool *SourcePool
	Servers    []*Server
	Timeouts   Timeouts
	Log        bool
	// HTTP is set in mode "http".
	HTTP  *HTTP
	Range hcl.Range
}

// Server is one upstream address in a backend.
type Server struct {
	Name string
	// Address is host:port; host may be a DNS name, resolved when the
	// configuration is loaded.
	Address string
	// Weight is the share of traffic, 0 to 256; default 1. Zero takes no new
	// connections from load-balancing.
	Weight int
	// MaxConn caps concurrent connections; zero means no cap (and no queue).
	MaxConn int
	// MaxQueue caps connections waiting for this server; zero means no cap.
	MaxQueue int
	Backup   bool
	Disabled bool
	// SendProxy is the PROXY protocol version sent first on each
	// connection: 0 (none), 1 or 2.
	SendProxy int
	// Source overrides the backend's Source.
	Source *Source
	// SourcePool overrides the backend's source settings with a pool.
	SourcePool *SourcePool
	// Check is nil when the server is not health-checked.
	Check *Check
	Range hcl.Range
}

// Source is a local address for server connections, with an optional port range.
type Source struct {
	Addr netip.Addr
	// PortLow and PortHigh bound the ports sluice allocates itself;
	// both zero means the kernel picks the port.
	PortLow, PortHigh uint16
}

// Check is how a server's health is probed.
type Check struct {
	Interval     time.Duration // between checks while the state is stable; default 2s
	FastInterval time.Duration // while rising or falling; default Interval
	DownInterval time.Duration // while down; default Interval
	Rise         int           // consecutive successes to go UP; default 2
	Fall         int           // consecutive failures to go DOWN; default 3
	Timeout      time.Duration // one check's connect plus exchange
	// Send is written after connecting; empty sends nothing.
	Send string
	// Expect must appear in the reply; empty accepts any connect.
	Expect string
	// ExpectRegex, if set, must match the reply.
	ExpectRegex *regexp.Regexp
	// HTTP, if set, makes this an HTTP request checked by its status.
	HTTP *HTTPCheck
}
