// Package backend turns a configured backend into live servers and
// connects sessions to them: load-balancing, backup servers, the queue
// when every server is full, retries and redispatch, source addresses.
package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"sluice/daemon/balance"
	"sluice/daemon/server"
	"sluice/daemon/source"
	"sluice/daemon/stats"
	"sluice/hcl"
)

// Backend is a configured backend's live side.
type Backend struct {
	Name    string
	Config  *hcl.Backend
	Servers []*server.Server
	Stats   stats.Counters
	// balancers is rebuilt when a weight changes at run time; sessions
	// load it once per pick.
	balancers atomic.Pointer[balancers]
	targets   map[*server.Server]*target
	hashKey   bool // the algorithm needs the client address hashed
	reqKey    bool // the algorithm hashes part of the HTTP request
	maxQueue  int64
	queue     queue
	idle      map[*server.Server]*idleList // HTTP connections kept for reuse
	log       *slog.Logger
	// OnNoSource is told when a server's source ports run out; what names
	// the range or pool.
	OnNoSource func(s *server.Server, what string, inUse int)
}

// newTarget builds the way to reach a server from its own source settings,
// else the backend's: a pool, an address with a port range, an address, or
// whatever the kernel picks.
func newTarget(sc *hcl.Server, cfg *hcl.Backend) *target {
	t := &target{sendProxy: sc.SendProxy, inUse: func() int { return 0 }}
	pool, src := sc.SourcePool, sc.Source
	if pool == nil && src == nil {
		pool, src = cfg.SourcePool, cfg.Source
	}
	switch {
	case pool != nil && pool.NAT:
		// sluice binds the first address; the kernel rewrites each slice
		// of its local ports to one pool address (sluice net apply).
		lo, _ := pool.LocalPorts()
		p := source.NewSlicedPool(pool.Addresses[0], lo, int(pool.PortHigh)-int(pool.PortLow)+1, len(pool.Addresses))
		t.dialer, t.inUse = p, p.InUse
		t.source = fmt.Sprintf("nat pool %s (%d addresses, ports %d-%d)", pool.Name, len(pool.Addresses), pool.PortLow, pool.PortHigh)
	case pool != nil:
		p := source.NewPool(pool.Addresses, pool.PortLow, pool.PortHigh)
		t.dialer, t.inUse = p, p.InUse
		t.source = fmt.Sprintf("pool %s (%d addresses, ports %d-%d)", pool.Name, len(pool.Addresses), pool.PortLow, pool.PortHigh)
	case src != nil && src.PortLow != 0:
		d := &source.Dialer{Addr: src.Addr, Ports: source.NewPorts(src.PortLow, src.PortHigh)}
		t.dialer, t.inUse = d, d.Ports.InUse
		t.source = fmt.Sprintf("%s:%d-%d", src.Addr, src.PortLow, src.PortHigh)
	case src != nil:
		t.dialer, t.source = &source.Dialer{Addr: src.Addr}, src.Addr.String()
	default:
		t.dialer = &source.Dialer{}
	}
	return t
}

// balancers choose among the active servers, and among the backups when
// no active server is in service (the first backup in service, as HAProxy
// does without "option allbackups").
type balancers struct {
	active, backup balance.Balancer
	// fallback serves hashing algorithms when a request has no key (no
	// such header or parameter): round robin, as HAProxy does.
	fallback balance.Balancer
}

// Rebalance rebuilds the balancers from the servers' current weights and
// states. Call it when a server goes up or down, into or out of
// maintenance or drain: round robin's sequence holds only servers in
// service, so that a missing server's turns are shared out evenly instead
// of falling to its neighbour.
func (b *Backend) Rebalance() { b.rebalance() }

func (b *Backend) rebalance() error {
	var actives, backups []*server.Server
	rr := b.Config.Balance == "roundrobin" || b.Config.Balance == "static-rr"
	for _, s := range b.Servers {
		if rr && (!s.Running() || s.Drain()) {
			continue
		}
		if s.Backup {
			backups = append(backups, s)
		} else {
			actives = append(actives, s)
		}
	}
	active, err := balance.New(b.Config.Balance, b.Config.HashType, actives)
	if err != nil {
		return err
	}
	backup, _ := balance.New("first", "", backups)
	bl := &balancers{active: active, backup: backup, fallback: active}
	if b.reqKey {
		var running []*server.Server
		for _, s := range actives {
			if s.Running() && !s.Drain() {
				running = append(running, s)
			}
		}
		bl.fallback = balance.NewRoundRobin(running)
	}
	b.balancers.Store(bl)
	return nil
}

// SetWeight changes a server's weight and rebuilds the balancers.
func (b *Backend) SetWeight(s *server.Server, w int) {
	s.SetWeight(w)
	b.rebalance()
	b.Dispatch()
}

// Server returns the server named name, or nil.
func (b *Backend) Server(name string) *server.Server {
	for _, s := range b.Servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// dialer chooses the sources of a server connection's attempts; release
// gives the source port back once the connection is closed.
type dialer interface {
	Attempts(a source.Attempter) (release func(), err error)
}

// target is how to reach one server.
type target struct {
	dialer    dialer
	source    string     // the range or pool, for logs
	inUse     func() int // source ports held now
	sendProxy int
}

// New resolves the servers' addresses (with Go's own resolver) and builds
// the balancers.
func New(ctx context.Context, cfg *hcl.Backend, log *slog.Logger) (*Backend, error) {
	b := &Backend{
		Name:    cfg.Name,
		Config:  cfg,
		targets: map[*server.Server]*target{},
		hashKey: cfg.Balance == "source",
		reqKey:  cfg.Balance == "uri" || cfg.Balance == "url_param" || cfg.Balance == "hdr",
		idle:    map[*server.Server]*idleList{},
		log:     log.With("backend", cfg.Name),
	}
	allQueued := len(cfg.Servers) > 0
	for i, sc := range cfg.Servers {
		addr, err := resolve(ctx, sc.Address)
		if err != nil {
			return nil, fmt.Errorf("backend %s, server %s: %w", cfg.Name, sc.Name, err)
		}
		s := server.New(cfg.Name, sc.Name, addr, sc.Weight, sc.MaxConn)
		s.ID = i + 1
		s.Backup = sc.Backup
		if sc.Check != nil {
			s.Checked, s.Rise, s.Fall = true, sc.Check.Rise, sc.Check.Fall
		}
		s.SetMaint(sc.Disabled)
		t := newTarget(sc, cfg)
		b.targets[s] = t
		b.idle[s] = &idleList{}
		b.Servers = append(b.Servers, s)
		if sc.MaxQueue == 0 {
			allQueued = false
		}
		b.maxQueue += int64(sc.MaxQueue)
	}
	if !allQueued {
		b.maxQueue = 0
	}
	if err := b.rebalance(); err != nil {
		return nil, err
	}
	return b, nil
}

func resolve(ctx context.Context, hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return hostport, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return "", fmt.Errorf("resolving %s: no address", host)
	}
	return net.JoinHostPort(addrs[0].Unmap().String(), port), nil
}

// Running counts the active and backup servers in service.
func (b *Backend) Running() (active, backup int) {
	for _, s := range b.Servers {
		if s.Running() {
			if s.Backup {
				backup++
			} else {
				active++
			}
		}
	}
	return active, backup
}

// QueueLen is the number of sessions waiting for a server.
func (b *Backend) QueueLen() int64 { return b.queue.len.Load() }

// Conn is an established server connection.
type Conn struct {
	*net.TCPConn
	// FD is the socket of a connection made by ConnectFD, which has no
	// TCPConn.
	FD     int
	Server *server.Server
	// SendProxy is the PROXY protocol version the server expects, or 0.
	SendProxy    int
	Wait         time.Duration // in the queue
	ConnectTime  time.Duration // of the successful attempt
	Retries      int
	Redispatched bool
	BeQueue      int64 // position in the queue on arrival
	// Reused: the connection served earlier requests (HTTP).
	Reused    bool
	idleSince time.Time
	raw       syscall.RawConn // made once (RawConn)
	peekFn    func(fd uintptr) bool
	peekBuf   [1]byte
	quiet     bool
	release   func()
	backend   *Backend
	dialing   dialing // while dial makes attempts
}

// Error is a failed attempt to reach a server, with HAProxy's termination
// state: who gave up (S server, s server timeout, R resource, P proxy) and
// when (C connect, Q queue).
type Error struct {
	Term   [2]byte
	Server *server.Server // nil when none was chosen
	Err    error
	Wait   time.Duration
	// Retries made before giving up.
	Retries int
}

func (e *Error) Error() string { return e.Err.Error() }

// Errors behind the termination states.
var (
	ErrNoServer  = errors.New("no server available")
	ErrQueueFull = errors.New("queue full")
	ErrQueueTime = errors.New("timeout in queue")
)

// pick chooses an eligible server and takes a slot on it: active servers
// first, backups when no active server is in service.
func (b *Backend) pick(key Key, skip *server.Server) *server.Server {
	bal := b.balancers.Load()
	if p := key.Prefer; p != nil && p != skip && p.Running() && p.Acquire() {
		p.Selected.Add(1)
		return p
	}
	active := bal.active
	if b.reqKey && !key.Hashed {
		active = bal.fallback
	}
	for range 4 { // a few tries: the chosen server may fill up meanwhile
		s := active.Pick(key.Hash, skip)
		if s == nil {
			if active, _ := b.Running(); active > 0 {
				return nil // all busy: queue rather than spill to backups
			}
			s = bal.backup.Pick(key.Hash, skip)
		}
		if s == nil {
			return nil
		}
		if s.Acquire() {
			s.Selected.Add(1)
			return s
		}
	}
	return nil
}

// Key steers the choice of a server.
type Key struct {
	Hash   uint64 // for hashing algorithms
	Hashed bool   // Hash was taken from the request
	// Prefer is the server a persistence cookie names; it is taken when
	// it is running and has room.
	Prefer *server.Server
}

// ClientKey is the key of a session from client: its address's hash when
// the backend balances by source.
func (b *Backend) ClientKey(client netip.AddrPort) Key {
	if !b.hashKey {
		return Key{}
	}
	a := client.Addr().Unmap().As16()
	return Key{Hash: balance.Hash(a[:]), Hashed: true}
}

// HashesRequest reports whether the algorithm wants a key from the request.
func (b *Backend) HashesRequest() bool { return b.reqKey }

// Connect finds a server for a session from client and connects to it.
func (b *Backend) Connect(ctx context.Context, client netip.AddrPort) (*Conn, *Error) {
	return b.connect(ctx, b.ClientKey(client), Reuse{}, nil, nil)
}

// ConnectFD is Connect on a raw socket that w follows through the
// connect, outside Go's network poller: the Conn, into, has FD and no
// TCPConn. into is the caller's (a TCP session holds its own), so that a
// connection costs no allocation here. A w that is also a Queuer is told
// before the session waits in the queue.
func (b *Backend) ConnectFD(ctx context.Context, client netip.AddrPort, w source.Watcher, into *Conn) (*Conn, *Error) {
	return b.connect(ctx, b.ClientKey(client), Reuse{}, w, into)
}

// Queuer is a connect watcher whose goroutine has work to hand over
// before it waits in the queue for a server (the TCP proxy sets a session
// up on the goroutine that accepted it).
type Queuer interface {
	Queued()
}

// Reuse says which existing connections a request may use.
type Reuse struct {
	Idle bool  // an idle connection from the server's pool
	Own  *Conn // the session's own, kept parked between its requests
}

// ConnectKey finds a server by key and connects to it, or reuses a
// connection to that server as reuse allows.
func (b *Backend) ConnectKey(ctx context.Context, key Key, reuse Reuse) (*Conn, *Error) {
	return b.connect(ctx, key, reuse, nil, nil)
}

// connect makes a new connection in into, or in a new Conn when into is
// nil, unless it reuses one.
func (b *Backend) connect(ctx context.Context, key Key, reuse Reuse, w source.Watcher, into *Conn) (*Conn, *Error) {
	t := b.Config.Timeouts
	var c *Conn
	var wait time.Duration
	var beQueue int64
	s := (*server.Server)(nil)
	if b.queue.len.Load() == 0 {
		s = b.pick(key, nil)
	}
	if s == nil {
		active, backup := b.Running()
		if active+backup == 0 {
			return nil, &Error{Term: [2]byte{'S', 'C'}, Err: ErrNoServer}
		}
		if b.maxQueue > 0 && b.queue.len.Load() >= b.maxQueue {
			return nil, &Error{Term: [2]byte{'s', 'Q'}, Err: ErrQueueFull}
		}
		beQueue = b.queue.len.Load()
		if q, ok := w.(Queuer); ok {
			q.Queued()
		}
		// Timed from here: a connection that does not wait reads no
		// clock for its wait.
		start := time.Now()
		var err error
		s, err = b.wait(ctx, key, t.Queue)
		wait = time.Since(start)
		if err != nil {
			return nil, &Error{Term: [2]byte{'s', 'Q'}, Err: err, Wait: wait}
		}
	}
	if reuse.Own != nil && reuse.Own.Server == s && reuse.Own.alive() {
		c = reuse.Own
	}
	if c == nil && reuse.Idle {
		c = b.idle[s].take()
	}
	if c != nil {
		c.Wait, c.BeQueue, c.ConnectTime, c.Retries, c.Redispatched, c.Reused = wait, beQueue, 0, 0, false, true
		return c, nil
	}
	if into == nil {
		into = new(Conn)
	}
	*into = Conn{backend: b, FD: -1, Wait: wait, BeQueue: beQueue}
	return b.dial(ctx, key, s, into, w)
}

// dialing is what the attempts of one dial share, kept in the Conn being
// made, which the dialer is handed as its Attempter: a closure over them
// would cost allocations on every connection.
type dialing struct {
	ctx     context.Context
	to      *server.Server
	timeout time.Duration
	w       source.Watcher // nil: dial with Go's net
}

// connAttempt is a Conn as the source.Attempter of its own dial.
type connAttempt Conn

func (a *connAttempt) Attempt(bd source.Bind) (err error) {
	c, d := (*Conn)(a), &a.dialing
	if d.w == nil {
		c.TCPConn, err = source.DialNet(d.ctx, bd, d.to.Addr(), d.timeout)
		return err
	}
	raddr, ok := d.to.AddrPort()
	if !ok {
		_, err := netip.ParseAddrPort(d.to.Addr())
		return err
	}
	c.FD, err = source.Connect(bd, raddr, d.timeout, d.w)
	return err
}

// dial makes a new connection c to s (whose slot the caller holds), with
// retries and redispatch.
func (b *Backend) dial(ctx context.Context, key Key, s *server.Server, c *Conn, w source.Watcher) (*Conn, *Error) {
	t := b.Config.Timeouts
	c.dialing = dialing{ctx: ctx, timeout: t.Connect, w: w}
	defer func() { c.dialing = dialing{} }() // keep neither ctx nor w
	for attempt := 0; ; attempt++ {
		tg := b.targets[s]
		dialStart := time.Now()
		c.dialing.to = s
		release, err := tg.dialer.Attempts((*connAttempt)(c))
		if err == nil {
			c.release, c.Server, c.SendProxy = release, s, tg.sendProxy
			c.ConnectTime = time.Since(dialStart)
			c.Retries = attempt
			return c, nil
		}
		if errors.Is(err, source.ErrExhausted) {
			s.Stats.SourceExhausted.Add(1)
			b.Stats.SourceExhausted.Add(1)
			if b.OnNoSource != nil {
				b.OnNoSource(s, tg.source, tg.inUse())
			}
			b.Release(s)
			return nil, &Error{Term: [2]byte{'R', 'C'}, Server: s, Err: err, Wait: c.Wait, Retries: attempt}
		}
		s.Stats.ConnErrors.Add(1)
		b.Stats.ConnErrors.Add(1)
		term := [2]byte{'S', 'C'}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			term = [2]byte{'s', 'C'}
		}
		if attempt >= b.Config.Retries || ctx.Err() != nil {
			b.Release(s)
			return nil, &Error{Term: term, Server: s, Err: err, Wait: c.Wait, Retries: attempt}
		}
		s.Stats.Retries.Add(1)
		b.Stats.Retries.Add(1)
		if b.Config.Redispatch && attempt == b.Config.Retries-1 {
			// The last retry goes elsewhere, if anywhere else is possible.
			if other := b.pick(key, s); other != nil {
				b.Release(s)
				s = other
				c.Redispatched = true
				s.Stats.Redispatches.Add(1)
				b.Stats.Redispatches.Add(1)
			}
		}
	}
}

// Release frees a slot on s and hands it to the next queued session.
func (b *Backend) Release(s *server.Server) {
	s.Release()
	if b.queue.len.Load() > 0 {
		b.Dispatch()
	}
}

// Dispatch gives free slots to queued sessions, oldest first. Call it when
// a server has room again, such as when it comes back up.
func (b *Backend) Dispatch() {
	b.queue.mu.Lock()
	defer b.queue.mu.Unlock()
	for len(b.queue.waiters) > 0 {
		w := b.queue.waiters[0]
		s := b.pick(w.key, nil)
		if s == nil {
			return
		}
		b.queue.waiters = b.queue.waiters[1:]
		b.queue.len.Add(-1)
		w.ch <- s
	}
}

// queue is the FIFO of sessions waiting for a free server.
type queue struct {
	mu      sync.Mutex
	waiters []*waiter
	len     atomic.Int64
}

type waiter struct {
	key Key
	ch  chan *server.Server // receives the server whose slot it was given
}

func (b *Backend) wait(ctx context.Context, key Key, timeout time.Duration) (*server.Server, error) {
	w := &waiter{key: key, ch: make(chan *server.Server, 1)}
	b.queue.mu.Lock()
	b.queue.waiters = append(b.queue.waiters, w)
	b.queue.len.Add(1)
	b.queue.mu.Unlock()
	b.Stats.Enqueue()
	defer b.Stats.Dequeue()
	b.Dispatch() // a slot may have freed while we queued

	var expire <-chan time.Time
	if timeout > 0 {
		tm := time.NewTimer(timeout)
		defer tm.Stop()
		expire = tm.C
	}
	select {
	case s := <-w.ch:
		return s, nil
	case <-expire:
	case <-ctx.Done():
	}
	b.queue.mu.Lock()
	for i, x := range b.queue.waiters {
		if x == w {
			b.queue.waiters = append(b.queue.waiters[:i], b.queue.waiters[i+1:]...)
			b.queue.len.Add(-1)
			b.queue.mu.Unlock()
			return nil, ErrQueueTime
		}
	}
	b.queue.mu.Unlock()
	// Dispatched just as we gave up: take the slot after all.
	return <-w.ch, nil
}
