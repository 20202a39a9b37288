// Package engine assembles a running sluice from a configuration: it opens
// the listeners, builds backends, frontends and health checks, fits the
// process limits, and serves until told to stop.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"sluice/daemon/backend"
	"sluice/daemon/busypoll"
	"sluice/daemon/check"
	"sluice/daemon/limits"
	"sluice/daemon/listen"
	"sluice/daemon/logging"
	"sluice/daemon/proxy"
	"sluice/daemon/server"
	"sluice/hcl"
)

// Engine is one configuration generation, built and serving.
type Engine struct {
	Config    *hcl.Config
	Process   *proxy.Process
	Frontends []*proxy.Frontend
	Backends  []*backend.Backend
	logs      *logging.Logger
	log       *slog.Logger
	listeners []boundListener
	checkers  []*check.Checker
	stop      context.CancelFunc
	wg        sync.WaitGroup
	services  []*http.Server // HTTP services sluice answers itself
	started   time.Time
	busy      *busypoll.Poller // polling as configured, and the Idle_pct meter, until StopAccepting
	// Service returns the handler of a frontend that sluice answers itself
	// (metrics, stats page), or nil for a proxying frontend.
	Service func(fe *proxy.Frontend) http.Handler
}

type boundListener struct {
	fe   *proxy.Frontend
	addr string // as configured
	ln   *net.TCPListener
}

// reserveFDs are descriptors kept for logs, checks' bursts and the runtime.
const reserveFDs = 64

// New builds the runtime objects of cfg. Nothing listens yet.
func New(ctx context.Context, cfg *hcl.Config, log *slog.Logger) (*Engine, error) {
	e := &Engine{Config: cfg, log: log, logs: logging.New(cfg.Global.Logs)}
	limits.SetThreads(cfg.Global.Threads)
	if err := limits.SetAffinity(cfg.Global.CPUs); err != nil {
		return nil, err
	}
	backends := map[string]*backend.Backend{}
	checks := 0
	for _, bc := range cfg.Backends {
		b, err := backend.New(ctx, bc, log)
		if err != nil {
			return nil, err
		}
		b.OnNoSource = e.noSource
		backends[bc.Name] = b
		e.Backends = append(e.Backends, b)
		for i, sc := range bc.Servers {
			if sc.Check != nil {
				checks++
				e.checkers = append(e.checkers, &check.Checker{
					Server: b.Servers[i], Config: sc.Check, OnChange: e.transition(b), Log: log.With("component", "check"),
				})
			}
		}
	}
	binds := 0
	for _, fc := range cfg.Frontends {
		binds += len(fc.Binds)
	}
	maxConn := e.fitFiles(cfg.Global.MaxConn, binds+checks)
	e.Process = proxy.NewProcess(maxConn)
	for _, fc := range cfg.Frontends {
		var logs *logging.Logger
		if fc.Log {
			logs = e.logs
		}
		fe := proxy.NewFrontend(fc, backends[fc.DefaultBackend], e.Process, logs, log)
		fe.Backends = backends
		e.Frontends = append(e.Frontends, fe)
	}
	return e, nil
}

// fitFiles raises the open-files limit for maxConn connections (two
// descriptors each) plus fixed needs, warns when the hard limit is too
// low, and returns the connection limit to use. A zero maxConn is derived
// from the limit.
func (e *Engine) fitFiles(maxConn, fixed int) int {
	base := uint64(fixed + reserveFDs)
	if maxConn == 0 {
		soft, _, err := limits.RaiseNoFile(^uint64(0))
		if err != nil {
			e.log.Warn("cannot raise the open files limit", "err", err)
		}
		derived := int((soft - min(soft, base)) / 2)
		derived = max(min(derived, 1_000_000), 1)
		e.log.Info("maxconn derived from the open files limit", "maxconn", derived, "nofile", soft)
		return derived
	}
	need := base + 2*uint64(maxConn)
	soft, hard, err := limits.RaiseNoFile(need)
	if err != nil {
		e.log.Warn("cannot raise the open files limit", "err", err)
	}
	if soft < need {
		fits := int((soft - min(soft, base)) / 2)
		e.log.Warn(fmt.Sprintf("maxconn %d needs %d open files but the limit is %d (hard %d): only about %d connections fit; raise LimitNOFILE or ulimit -n",
			maxConn, need, soft, hard, fits), "maxconn", maxConn, "need", need, "soft", soft, "hard", hard)
	}
	return maxConn
}

// Listen opens every bind address, taking it from inherited when it is
// there (sockets a master passed down). On error, what was opened is closed.
func (e *Engine) Listen(inherited map[string]*net.TCPListener) error {
	for _, fe := range e.Frontends {
		for _, b := range fe.Config.Binds {
			if ln, ok := inherited[b.Address]; ok {
				e.listeners = append(e.listeners, boundListener{fe, b.Address, ln})
				continue
			}
			ln, err := listen.Listen(b.Address, BindOptions(fe.Config))
			if err != nil {
				e.closeListeners()
				return fmt.Errorf("frontend %s: cannot bind %s: %w", fe.Name, b.Address, err)
			}
			e.listeners = append(e.listeners, boundListener{fe, b.Address, ln})
		}
	}
	return nil
}

// Listeners returns the listening sockets by bind address.
func (e *Engine) Listeners() map[string]*net.TCPListener {
	out := map[string]*net.TCPListener{}
	for _, l := range e.listeners {
		out[l.addr] = l.ln
	}
	return out
}

// BindOptions are the socket options of a frontend's listeners.
func BindOptions(fe *hcl.Frontend) listen.Options {
	return listen.Options{Backlog: fe.Backlog, ReusePort: fe.ReusePort}
}

func (e *Engine) closeListeners() {
	for _, l := range e.listeners {
		l.ln.Close()
	}
}

// Start runs the health checks, the accept loops, and the polling the
// configuration asks for with its Idle_pct meter.
func (e *Engine) Start() {
	e.busy = e.startPolling()
	ctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	for _, c := range e.checkers {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			c.Run(ctx)
		}()
	}
	e.started = time.Now()
	for _, l := range e.listeners {
		if e.Service != nil {
			if h := e.Service(l.fe); h != nil {
				e.serveService(l.ln, h)
				e.log.Info("serving HTTP service", "frontend", l.fe.Name, "addr", l.ln.Addr().String())
				continue
			}
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			l.fe.Serve(l.ln)
		}()
		e.log.Info("listening", "frontend", l.fe.Name, "addr", l.ln.Addr().String())
	}
}

// Started is when this generation started serving.
func (e *Engine) Started() time.Time { return e.started }

// serveService answers HTTP on ln for one of sluice's own services.
func (e *Engine) serveService(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	e.services = append(e.services, srv)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		srv.Serve(ln)
	}()
}

// startPolling starts the polling the configuration asks for, with the
// meter of show info's Idle_pct. Should the spinners fail to start,
// sluice still works, with the latency of sleeping threads.
func (e *Engine) startPolling() *busypoll.Poller {
	g := e.Config.Global
	threads := runtime.GOMAXPROCS(0)
	var p *busypoll.Poller
	var err error
	switch {
	case g.BusyPolling:
		if p, err = busypoll.Start(); err == nil {
			e.log.Info("busy polling: idle threads poll instead of sleeping", "threads", threads)
		}
	case g.PollWhenBusy:
		if p, err = busypoll.StartBusy(g.PollBeforeSleep); err == nil {
			e.log.Info("busy threads poll before they sleep", "poll_before_sleep", "auto", "window", g.PollBeforeSleep, "threads", threads)
		}
	case g.PollBeforeSleep > 0:
		if p, err = busypoll.StartWindow(g.PollBeforeSleep); err == nil {
			e.log.Info("idle threads poll before they sleep", "poll_before_sleep", g.PollBeforeSleep, "threads", threads)
		}
	default:
		return busypoll.Measure()
	}
	if err != nil {
		e.log.Warn("busy polling not started", "err", err)
		return busypoll.Measure()
	}
	return p
}

// Idle is the share of the threads' time, in per cent, spent waiting for
// work over about the last second (show info's Idle_pct).
func (e *Engine) Idle() int { return e.busy.Idle() }

// StopAccepting stops the accept loops and closes this process's
// listening sockets; sessions under way go on. A new generation sharing
// the sockets takes every connection from then on. Busy polling stops
// too, as HAProxy's does in an old process: a draining generation would
// take a CPU from the new one.
func (e *Engine) StopAccepting() {
	e.busy.Stop()
	for _, f := range e.Frontends {
		f.Stop()
	}
	e.closeListeners()
}

// Stop stops accepting and waits for sessions under way, at most
// grace (zero: without limit). It reports whether all sessions ended.
func (e *Engine) Stop(grace time.Duration) bool {
	e.StopAccepting()
	for _, srv := range e.services {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		srv.Shutdown(ctx) // a scrape under way may finish
		cancel()
	}
	for _, b := range e.Backends {
		b.CloseIdle()
	}
	done := make(chan struct{})
	go func() {
		for _, f := range e.Frontends {
			f.Wait()
		}
		close(done)
	}()
	var expire <-chan time.Time
	if grace > 0 {
		expire = time.After(grace)
	}
	clean := true
	select {
	case <-done:
	case <-expire:
		clean = false
	}
	if e.stop != nil {
		e.stop()
	}
	for _, b := range e.Backends {
		b.CloseIdle() // kept by requests that ended meanwhile
	}

	e.wg.Wait()
	e.logs.Close()
	return clean
}

// noSource logs a server connection refused for want of a source port.
func (e *Engine) noSource(s *server.Server, what string, inUse int) {
	msg := fmt.Sprintf("Server %s/%s: no free source port in %s (%d in use), connection refused",
		s.Backend, s.Name, what, inUse)
	e.log.Warn(msg, "backend", s.Backend, "server", s.Name)
	e.logs.Event(logging.Warning, msg)
}

// transition logs a check's verdict change the way HAProxy words it, and
// lets queued sessions use a server that came back.
func (e *Engine) transition(b *backend.Backend) func(check.Transition) {
	return func(t check.Transition) {
		b.Rebalance()
		s, r := t.Server, t.Result
		active, backup := b.Running()
		info := ""
		if r.Info != "" {
			info = fmt.Sprintf(", info: %q", r.Info)
		}
		var msg string
		sev := logging.Notice
		if t.Up {
			msg = fmt.Sprintf("Server %s/%s is UP, reason: %s%s, check duration: %dms. %d active and %d backup servers online. 0 sessions requeued, %d total in queue.",
				s.Backend, s.Name, r.Reason, info, r.Duration.Milliseconds(), active, backup, b.QueueLen())
			b.Dispatch()
		} else {
			sev = logging.Warning
			msg = fmt.Sprintf("Server %s/%s is DOWN, reason: %s%s, check duration: %dms. %d active and %d backup servers left. %d sessions active, 0 requeued, %d remaining in queue.",
				s.Backend, s.Name, r.Reason, info, r.Duration.Milliseconds(), active, backup, s.Load(), b.QueueLen())
		}
		e.log.Info(msg, "backend", s.Backend, "server", s.Name, "up", t.Up)
		e.logs.Event(sev, msg)
		if !t.Up && active+backup == 0 {
			msg := fmt.Sprintf("backend %s has no server available!", s.Backend)
			e.log.Error(msg, "backend", s.Backend)
			e.logs.Event(logging.Emerg, msg)
		}
	}
}
