// Package proxy runs frontends: it accepts client connections within the
// connection limits, applies PROXY protocol and tcp_request rules, gets a
// server connection from the backend, carries the bytes and logs the
// session in HAProxy's tcplog format.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"sluice/daemon/backend"
	"sluice/daemon/busypoll"
	"sluice/daemon/logging"
	"sluice/daemon/proxyproto"
	"sluice/daemon/sock"
	"sluice/daemon/source"
	"sluice/daemon/stats"
	"sluice/hcl"
)

// Process holds what all frontends share: the global connection limit
// and count.
type Process struct {
	Limit *Limit
	Stats stats.Counters
}

// NewProcess returns a process-wide limit of maxConn connections.
func NewProcess(maxConn int) *Process {
	return &Process{Limit: NewLimit(maxConn)}
}

// MaxConn is the process-wide limit.
func (p *Process) MaxConn() int { return p.Limit.Max() }

// Frontend accepts connections for one frontend section.
type Frontend struct {
	Name    string
	Config  *hcl.Frontend
	Backend *backend.Backend
	// Backends are every backend by name, for use_backend (HTTP mode).
	Backends map[string]*backend.Backend
	Stats    stats.Counters
	process  *Process
	// Limit is this frontend's maxconn; its maximum is zero when only the
	// process limit applies.
	Limit  *Limit
	logs   *logging.Logger
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// handoff passes accepted connections to spare workers.
	handoff chan accepted
	spare   atomic.Int32
	// http lists the HTTP sessions, which Stop tells to close once idle.
	http httpSessions
}

// NewFrontend builds a frontend; logs may be nil when it does not log.
func NewFrontend(cfg *hcl.Frontend, be *backend.Backend, p *Process, logs *logging.Logger, log *slog.Logger) *Frontend {
	f := &Frontend{Name: cfg.Name, Config: cfg, Backend: be, process: p, logs: logs, log: log.With("frontend", cfg.Name)}
	f.Limit = NewLimit(cfg.MaxConn)
	f.ctx, f.cancel = context.WithCancel(context.Background())
	f.handoff = make(chan accepted)
	return f
}

// accepted is a client connection: a raw socket for TCP sessions, whose
// bytes sluice moves itself, or a *net.TCPConn for those read through
// Go's net (HTTP, and the PROXY protocol header).
type accepted struct {
	fd   int
	c    *net.TCPConn
	peer netip.AddrPort // of a raw socket
}

// Serve accepts on ln until Stop. When a limit is reached it stops
// accepting, so new connections wait in the kernel's accept queue instead
// of being accepted and closed.
func (f *Frontend) Serve(ln *net.TCPListener) error {
	accept, raw, done := f.acceptor(ln)
	defer done()
	if !raw {
		f.acceptLoop(accept, false)
		return nil
	}
	// Raw TCP sessions are set up on the accepting goroutine, which may
	// stay with its session (see acceptLoop): Serve itself only waits for
	// the stop, so that it returns at once.
	go f.acceptLoop(accept, true)
	<-f.ctx.Done()
	return nil
}

// acceptLoop accepts until the frontend stops. A connection goes to a
// spare worker goroutine, or, inline, is set up on this one: most TCP
// setups never wait, and one that must (a slow connect, a queue) hands
// accepting over to a new goroutine first and this one stays with its
// session. That saves a goroutine hand-off per connection.
func (f *Frontend) acceptLoop(accept func() (accepted, error), inline bool) {
	delay := time.Duration(0)
	for {
		if !f.acquire() {
			return
		}
		// Count the session before accepting it, so that Wait cannot see
		// zero between accept and the session's start and let the process
		// exit with a connection just accepted.
		f.wg.Add(1)
		a, err := accept()
		if err != nil {
			f.wg.Done()
			f.release()
			if f.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or memory: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			f.log.Warn("accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-f.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		busypoll.Touch()
		switch {
		case inline:
			if f.session(a, accept) {
				return // accepting went on on another goroutine
			}
		default:
			select {
			case f.handoff <- a:
			default:
				go f.worker(a)
			}
		}
	}
}

// acceptor returns how Serve accepts from ln, and what to call when it
// is done. A plain TCP frontend takes raw sockets with accept4: Go's net
// would register each connection with its poller and ask for its
// addresses, calls HAProxy does not make either. A *net.TCPListener's
// RawConn cannot wait, so accept4 runs on a duplicate of the listening
// descriptor opened as an *os.File, which waits in Go's poller; it is
// closed when the frontend stops.
func (f *Frontend) acceptor(ln *net.TCPListener) (accept func() (accepted, error), raw bool, done func()) {
	viaNet := func() (accepted, error) {
		c, err := ln.AcceptTCP()
		return accepted{fd: -1, c: c}, err
	}
	if f.Config.HTTP != nil || f.Config.AcceptProxy {
		return viaNet, false, func() {}
	}
	lrc, err := ln.SyscallConn()
	if err != nil {
		return viaNet, false, func() {}
	}
	fd := -1
	lrc.Control(func(lfd uintptr) { fd, err = unix.FcntlInt(lfd, unix.F_DUPFD_CLOEXEC, 0) })
	if err != nil || fd < 0 {
		return viaNet, false, func() {}
	}
	// Accepted sockets inherit TCP_NODELAY, which Go's net would set on
	// each one.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	file := os.NewFile(uintptr(fd), "listener")
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return viaNet, false, func() {}
	}
	stop := context.AfterFunc(f.ctx, func() { file.Close() })
	var a accepted
	var aerr error
	accept4 := func(lfd uintptr) bool {
		for {
			fd, peer, err := sock.Accept4(int(lfd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			switch err {
			case unix.EINTR, unix.ECONNABORTED:
				continue
			case unix.EAGAIN:
				return false // wait in Go's poller
			}
			a, aerr = accepted{fd: fd, peer: peer}, err
			return true
		}
	}
	accept = func() (accepted, error) {
		if err := rc.Read(accept4); err != nil {
			if f.ctx.Err() != nil {
				return accepted{}, net.ErrClosed
			}
			return accepted{}, err
		}
		return a, os.NewSyscallError("accept4", aerr)
	}
	return accept, true, func() { stop(); file.Close() }
}

// maxSpareWorkers is how many session goroutines wait for the next
// connection once theirs is set up or done, instead of exiting: a new
// session then starts on a stack already grown by dialing, without
// creating a goroutine. More would keep stacks that bursts grew.
// (GOMAXPROCS is read each time: the configuration's threads set it.)
func maxSpareWorkers() int32 { return int32(4 * runtime.GOMAXPROCS(0)) }

// worker runs a's session, then others handed over by acceptLoop while
// it is one of the spare workers.
func (f *Frontend) worker(a accepted) {
	for {
		if f.Config.HTTP != nil {
			f.httpSession(a.c)
		} else {
			f.session(a, nil)
		}
		var ok bool
		if a, ok = f.nextConn(); !ok {
			return
		}
	}
}

// nextConn waits, as a spare worker, for the next connection; false when
// there are spare workers enough or the frontend stops.
func (f *Frontend) nextConn() (accepted, bool) {
	if f.spare.Add(1) > maxSpareWorkers() {
		f.spare.Add(-1)
		return accepted{}, false
	}
	defer f.spare.Add(-1)
	select {
	case a := <-f.handoff:
		return a, true
	case <-f.ctx.Done():
		return accepted{}, false
	}
}

func (f *Frontend) acquire() bool {
	if !f.Limit.Acquire(f.ctx) {
		return false
	}
	if !f.process.Limit.Acquire(f.ctx) {
		f.Limit.Release()
		return false
	}
	return true
}

func (f *Frontend) release() {
	f.process.Limit.Release()
	f.Limit.Release()
}

// Stop makes Serve return; sessions under way go on, and HTTP sessions
// close once idle.
func (f *Frontend) Stop() {
	f.cancel()
	f.http.each((*httpSession).stopping)
}

// Wait waits for the sessions under way to end.
func (f *Frontend) Wait() { f.wg.Wait() }

// session is one client connection from accept to log line.
//
// A goroutine sets the session up (PROXY header, rules, server
// connection), for a raw socket the one that accepted it, then starts the
// tunnel, which holds no goroutine while idle. The last direction to end
// calls finish.
type session struct {
	f *Frontend
	// accept is the accept loop when the session is set up on the
	// accepting goroutine, which hands it over before waiting.
	accept      func() (accepted, error)
	c           *net.TCPConn   // nil for a raw socket
	fd          int            // the client's socket
	client, dst netip.AddrPort // dst: for a raw socket, looked up when sending a PROXY header
	sc          *backend.Conn  // nil until connected; then &conn
	conn        backend.Conn   // what sc points to, when connected here
	beOpen      bool           // counted in the backend's sessions
	tunneled    bool
	e           logging.TCPEntry
	tn          tunnel
	// refs counts what may still reach the session: its own use, each
	// registration not yet retired, and runtime commands holding it
	// (Hold). The last Release returns it to sessionPool.
	refs atomic.Int32
}

// sessionPool keeps ended sessions for new ones. A session is about 700
// bytes with its tunnel and log entry: at tens of thousands of
// connections a second, allocating each made Go's collector run a dozen
// times a second.
var sessionPool = sync.Pool{New: func() any { return new(session) }}

// newSession takes a session from the pool, cleared but for its tunnel's
// timer, which is bound to that tunnel.
func newSession() *session {
	s := sessionPool.Get().(*session)
	timer := s.tn.timer
	*s = session{}
	s.tn.timer = timer
	s.refs.Store(1)
	return s
}

// Hold keeps s from being reused until Release, for a runtime command
// that looks at it outside the server's lock (server.Sessions).
func (s *session) Hold() { s.refs.Add(1) }

// Release drops one of refs; the last returns s to the pool.
func (s *session) Release() {
	if s.refs.Add(-1) == 0 {
		sessionPool.Put(s)
	}
}

// Retired is told when one of the tunnel's registrations can report
// nothing more.
func (s *session) Retired() { s.Release() }

// accept is the accept loop when f runs on the accepting goroutine; the
// result tells whether the session handed accepting over.
func (f *Frontend) session(a accepted, accept func() (accepted, error)) (handedOver bool) {
	f.process.Stats.Open()
	f.Stats.Open()
	s := newSession()
	s.f, s.c, s.fd, s.client, s.accept = f, a.c, a.fd, a.peer, accept
	if a.c != nil {
		s.fd, s.client, s.dst = connFD(a.c), addrPort(a.c.RemoteAddr()), addrPort(a.c.LocalAddr())
	}
	s.tn.prepare()
	s.e = logging.TCPEntry{
		Accept: time.Now(), Frontend: f.Name, Backend: f.Backend.Name, Server: "<NOSRV>",
		Tw: -1, Tc: -1, Term: [2]byte{'-', '-'},
	}
	ok := s.setup()
	// Read now: once started or finished, s may end and be reused.
	handedOver = accept != nil && s.accept == nil
	if !ok {
		s.finish()
	} else {
		s.tunneled = true
		s.sc.Server.Track(s)
		s.tn.start(s.fd, s.sc.FD, s)
	}
	return handedOver
}

// Queued runs before the session first waits (in the backend's queue,
// or for a connect under way): on the accepting goroutine, a new one
// takes accepting over.
func (s *session) Queued() {
	if s.accept != nil {
		go s.f.acceptLoop(s.accept, true)
		s.accept = nil
	}
}

// The session follows its server socket through the connect
// (source.Watcher) with its tunnel, which keeps the registration, and
// hands accepting over before waiting (backend.Queuer).

func (s *session) Watch(fd int) error { return s.tn.Watch(fd) }

func (s *session) Wait(deadline time.Time) bool {
	s.Queued()
	return s.tn.Wait(deadline)
}

func (s *session) Forget() { s.tn.Forget() }

// Kill ends the session at once (shutdown sessions server); it is logged
// with the termination state KD.
func (s *session) Kill() { s.tn.abort('K', 'D') }

// String describes the session for show sess.
func (s *session) String() string {
	proto := "tcpv4"
	if s.client.Addr().Unmap().Is6() {
		proto = "tcpv6"
	}
	return fmt.Sprintf("%p: proto=%s src=%s fe=%s be=%s srv=%s ts=00 age=%s",
		s, proto, s.client, s.f.Name, s.f.Backend.Name, s.sc.Server.Name, time.Since(s.e.Accept).Round(time.Second))
}

// setup runs everything before the tunnel; false ends the session, with
// the termination state set.
func (s *session) setup() bool {
	f, cfg, e := s.f, s.f.Config, &s.e
	if cfg.AcceptProxy {
		deadline := time.Time{}
		if cfg.Timeouts.Client > 0 {
			deadline = time.Now().Add(cfg.Timeouts.Client)
		}
		h, err := proxyproto.Read(s.c, deadline)
		if err != nil {
			f.Stats.ReqErrors.Add(1)
			e.Term = [2]byte{'P', 'R'}
			if isTimeout(err) {
				e.Term = [2]byte{'c', 'R'}
			}
			return false
		}
		if !h.Local {
			s.client, s.dst = h.Src, h.Dst
		}
	}
	if !f.allowed(s.client.Addr()) {
		f.Stats.Denied.Add(1)
		e.Term = [2]byte{'P', 'R'}
		return false
	}

	be := f.Backend
	be.Stats.Open()
	s.beOpen = true
	// Not f.ctx: stopping to accept (a reload) must not abort sessions
	// already accepted, even those still waiting for a server.
	sc, cerr := be.ConnectFD(context.Background(), s.client, s, &s.conn)
	if cerr != nil {
		e.Tw = cerr.Wait.Milliseconds()
		e.Term = cerr.Term
		e.Retries = cerr.Retries
		if cerr.Server != nil {
			e.Server = cerr.Server.Name
		}
		return false
	}
	s.sc = sc
	e.Server = sc.Server.Name
	e.Tw, e.Tc = sc.Wait.Milliseconds(), sc.ConnectTime.Milliseconds()
	e.Retries, e.Redispatched, e.BeQueue = sc.Retries, sc.Redispatched, sc.BeQueue

	if sc.SendProxy > 0 {
		if !s.dst.IsValid() {
			if sa, err := unix.Getsockname(s.fd); err == nil {
				s.dst = source.AddrPort(sa)
			}
		}
		// A socket just connected has room for a header of 108 bytes at
		// most: a short write is a failure.
		hdr := proxyproto.Append(make([]byte, 0, 64), sc.SendProxy, s.client, s.dst)
		if n, err := unix.Write(sc.FD, hdr); err != nil || n != len(hdr) {
			e.Term = [2]byte{'S', 'C'}
			return false
		}
	}
	tm := cfg.Timeouts
	bt := be.Config.Timeouts
	s.tn.t = tunnelTimeouts{client: tm.Client, server: bt.Server, clientFin: tm.ClientFin, serverFin: bt.ServerFin}
	if tm.Tunnel > 0 || bt.Tunnel > 0 {
		tun := max(tm.Tunnel, bt.Tunnel)
		s.tn.t.client, s.tn.t.server = tun, tun
	}
	return true
}

func (s *session) tunnelDone() { s.finish() }

// finish counts, closes and logs the session, whichever way it ended.
func (s *session) finish() {
	f, be, e := s.f, s.f.Backend, &s.e
	if s.tunneled {
		s.sc.Server.Untrack(s)
		in, out, term := s.tn.result()
		srv := s.sc.Server
		e.Bytes, e.Term = out, term
		f.Stats.BytesIn.Add(in)
		f.Stats.BytesOut.Add(out)
		be.Stats.BytesIn.Add(in)
		be.Stats.BytesOut.Add(out)
		srv.Stats.BytesIn.Add(in)
		srv.Stats.BytesOut.Add(out)
		switch term[0] {
		case 'C', 'c':
			f.Stats.ClientAborts.Add(1)
			be.Stats.ClientAborts.Add(1)
			srv.Stats.ClientAborts.Add(1)
		case 'S', 's':
			be.Stats.ServerAborts.Add(1)
			srv.Stats.ServerAborts.Add(1)
		}
	}
	e.ActConn, e.FeConn, e.BeConn = f.process.Stats.Cur.Load(), f.Stats.Cur.Load(), be.Stats.Cur.Load()
	s.refs.Add(2) // released as the registrations retire
	if !s.tunneled {
		s.tn.Forget() // the registration made while connecting
	}
	s.tn.retire(s)
	if s.sc != nil {
		e.SrvConn = s.sc.Server.Load()
		s.sc.Close()
	}
	if s.beOpen {
		be.Stats.Close()
	}
	if s.c != nil {
		s.c.Close()
	} else {
		sock.Close(s.fd)
	}
	e.Client = s.client
	e.Tt = stats.Since(e.Accept)
	if s.beOpen {
		be.Stats.Timings(e.Tw, e.Tc, e.Tt)
	}
	if s.sc != nil {
		s.sc.Server.Stats.Timings(e.Tw, e.Tc, e.Tt)
	}
	f.logSession(e)
	f.Stats.Close()
	f.process.Stats.Close()
	f.release()
	f.wg.Done()
	if !s.tunneled || s.tn.reusable {
		s.Release()
	} // else an expire may still run: the collector takes s
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// allowed applies the tcp_request rules: the first that matches decides.
func (f *Frontend) allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, r := range f.Config.TCPRequest {
		if matchAny(r.Sources, a) {
			return r.Action == "accept"
		}
	}
	return true
}

func matchAny(prefixes []netip.Prefix, a netip.Addr) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (f *Frontend) logSession(e *logging.TCPEntry) {
	if f.logs == nil {
		return
	}
	var buf [384]byte
	f.logs.Send(logging.Info, logging.AppendTCPLog(buf[:0], e))
}

func addrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	return netip.AddrPort{}
}
