package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/daemon/backend"
	"sluice/daemon/balance"
	"sluice/daemon/busypoll"
	"sluice/daemon/h1"
	"sluice/daemon/logging"
	"sluice/daemon/park"
	"sluice/daemon/proxyproto"
	"sluice/daemon/rules"
	"sluice/daemon/sock"
	"sluice/daemon/stats"
	"sluice/hcl"
)

// An HTTP session is one client connection in mode "http": requests read
// and answered one after another (keep-alive), each routed, rewritten,
// load-balanced and logged on its own.
//
// Everything a request needs beyond the connection itself (buffers,
// parsed heads, writers) is an exchange, taken from a pool when a request
// starts arriving and given back while the connection waits for the next
// one: an idle keep-alive connection holds no buffer, and past parkAfter
// no goroutine either (httpidle.go).
type httpSession struct {
	f           *Frontend
	c           *net.TCPConn
	rc          syscall.RawConn
	client, dst netip.AddrPort
	in          h1.Reader // from the client
	x           *exchange
	own         *backend.Conn // parked server connection (http_reuse "never")
	requests    int
	accept      time.Time
	readable    func(fd uintptr) bool
	tryRead     func(fd uintptr) bool
	waitEOF     bool
	waitErr     error
	empty       bool         // tryRead found nothing
	idle        atomic.Bool  // waiting for the next request in Go's poller
	prev, next  *httpSession // in the frontend's list (httpSessions)
	// unread: the client may still be sending a request body sluice
	// stopped reading (the server answered before it ended), so the
	// connection closes gently (see linger).
	unread bool

	// Parking idle in the poller (httpidle.go).
	idleSince time.Time // when the wait for the next request began
	resumed   bool      // running again after parking
	key       park.Key  // registration with the poller, made at the first park
	timer     *time.Timer
	mu        sync.Mutex // guards what follows
	parked    bool
	pending   bool      // readable while not parked
	deadline  time.Time // when a parked connection closes; zero for never
}

// exchange is one request's working set.
type exchange struct {
	req, resp   h1.Message
	rq          rules.Request
	out, srvOut *h1.Writer
	srv         h1.Reader // from the server
	e           logging.HTTPEntry
	line        [256]byte // the request line, for the log
	target      []byte    // a rewritten request target
	spare       []byte    // where the next rewrite is built
	capture     [512]byte
	caps        [2][8][]byte
	cw, rcw     h1.ChunkWriter   // request and response chunk framing
	zout        compressedOut    // a compressed response's Pending
	be          *backend.Backend // chosen for this request; nil before
	reply       replyWait
	toClient    timedSend // what out sends on
	toServer    timedSend // what srvOut sends on
	// answered is the client reader's Check while a request body is
	// copied: a server's early answer ends the copy.
	answered func() error
}

// timedSend is the connection an h1.Writer sends on. A write the socket
// takes at once, the usual case, sets no deadline; one that must wait for
// room waits at most idle (timeout client or server; none when zero), as
// HAProxy's timeouts bound sending too: a peer that stops reading is let
// go instead of holding the session for ever. No write deadline stays set
// after a write: an expired one would fail the next write at once, on
// this connection or, for a server, on whichever session reuses it.
type timedSend struct {
	c    net.Conn
	rc   syscall.RawConn
	idle time.Duration
	// toServer: while a request body is sent, the server may answer (a
	// 413 before the upload ends). A wait for room looks for an answer
	// every h1.CheckEvery and ends with errAnswered when there is one (the
	// body copy itself looks too: exchange.answered).
	toServer bool
	p, p2    []byte // being written by run
	n        int
	err      error
	step     func(fd uintptr) bool // run, bound once: no allocation per write
}

// errAnswered: the server answered while its request was being sent.
var errAnswered = errors.New("the server answered before the request ended")

func (w *timedSend) reset(c net.Conn, rc syscall.RawConn, idle time.Duration) {
	w.c, w.rc, w.idle = c, rc, idle
}

func (w *timedSend) Write(p []byte) (int, error) {
	n, err := w.now(p, nil)
	if err != nil || n == len(p) {
		return n, err
	}
	return w.wait(p, n)
}

// Send is Write for a then b in one write (h1.PairSender), for a head
// and the large body part that follows it.
func (w *timedSend) Send(a, b []byte) (int, error) {
	n, err := w.now(a, b)
	if err != nil || n == len(a)+len(b) {
		return n, err
	}
	if n < len(a) {
		if n, err = w.wait(a, n); err != nil {
			return n, err
		}
	}
	m, err := w.wait(b, n-len(a))
	return len(a) + m, err
}

// now writes p (then p2) as far as the socket takes them at once.
func (w *timedSend) now(p, p2 []byte) (int, error) {
	w.p, w.p2, w.n, w.err = p, p2, 0, nil
	err := w.rc.Write(w.step)
	n, werr := w.n, w.err
	w.p, w.p2 = nil, nil
	if err == nil {
		err = werr
	}
	return n, err
}

// wait writes the rest of p, from n on, waiting for room up to idle; a
// server is looked at every CheckEvery meanwhile, in case it has
// answered. It returns how much of p is written in all.
func (w *timedSend) wait(p []byte, n int) (int, error) {
	var end time.Time
	if w.idle > 0 {
		end = time.Now().Add(w.idle)
	}
	for {
		dl := end
		if w.toServer {
			if c := time.Now().Add(h1.CheckEvery); dl.IsZero() || c.Before(dl) {
				dl = c
			}
		}
		if !dl.IsZero() {
			w.c.SetWriteDeadline(dl)
		}
		m, err := w.c.Write(p[n:])
		n += m
		if err == nil || !w.toServer || !isTimeout(err) || (!end.IsZero() && !time.Now().Before(end)) {
			if err == nil && !dl.IsZero() {
				w.c.SetWriteDeadline(time.Time{})
			}
			return n, err
		}
		if w.answered() {
			w.c.SetWriteDeadline(time.Time{})
			return n, errAnswered
		}
	}
}

// answered reports whether the peer has sent something that waits to be
// read, without waiting.
func (w *timedSend) answered() bool {
	var b [1]byte
	n := 0
	w.rc.Read(func(fd uintptr) bool {
		n, _, _ = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true
	})
	return n > 0
}

// run is the RawConn.Write callback of Write: it writes what the socket
// takes now and never waits.
func (w *timedSend) run(fd uintptr) bool {
	if w.p2 != nil {
		w.n, w.err = sock.SendNow(int(fd), w.p, w.p2)
	} else {
		w.n, w.err = sock.WriteNow(int(fd), w.p)
	}
	return true
}

// batchWrites yields to the other sessions that are ready before a
// response is written to a client, so that the responses of one batch of
// poller events go out together after its reads, as in HAProxy's event
// loop: the client that the first write wakes then finds the next ones
// already queued and takes them in the same wake-up, instead of waking
// once per write. With nothing else ready, it costs one pass of the
// scheduler. Requests go to servers at once: holding them back too
// lengthened the slowest 1% of requests by a tenth (docs/BENCHMARKS.md).
func batchWrites() { runtime.Gosched() }

// replyWait sends a request and waits for the server's answer in one
// RawConn.Read. The answer cannot come before the request went, so the
// read a plain Read makes at once would only find nothing (EAGAIN): a
// system call per request for nothing. HAProxy, too, reads a server only
// once its poller says so.
type replyWait struct {
	w    *h1.Writer
	sent bool
	err  error
	step func(fd uintptr) bool // run, bound once: no allocation per request
}

// send sends what w holds on rc's socket and returns once the socket is
// readable. What the socket does not take at once goes by w.Flush; a
// failed wait (deadline, close) is left to the read that follows, which
// meets it again and reports it as a read.
func (a *replyWait) send(rc syscall.RawConn, w *h1.Writer) error {
	a.w, a.sent, a.err = w, false, nil
	rc.Read(a.step)
	busypoll.Touch() // the answer is work too
	a.w = nil
	if a.err != nil {
		return a.err
	}
	return w.Flush()
}

// run is the RawConn.Read callback of send: first the write, then (when
// it all went) false to wait until readable.
func (a *replyWait) run(fd uintptr) bool {
	if a.sent {
		return true
	}
	a.sent = true
	all, err := a.w.WriteFD(fd)
	a.err = err
	return err != nil || !all
}

const bufSize = 16 * 1024

var exchanges = sync.Pool{New: func() any {
	x := &exchange{
		out:    h1.NewWriter(8 * 1024),
		srvOut: h1.NewWriter(8 * 1024),
	}
	x.req.Headers = make([]h1.Header, 0, 128)
	x.resp.Headers = make([]h1.Header, 0, 128)
	x.reply.step = x.reply.run
	x.toClient.step = x.toClient.run
	x.toServer.step = x.toServer.run
	x.toServer.toServer = true
	x.answered = func() error {
		if x.toServer.rc != nil && x.toServer.answered() {
			return errAnswered
		}
		return nil
	}
	return x
}}

// srvBufSize is the server read buffer: a 64 KB response in one read,
// a quarter of the system calls of 16 KB (docs/BENCHMARKS.md).
const srvBufSize = 64 << 10

// srvBufs are server read buffers, taken for one response. A sync.Pool
// gives each thread back the buffer it last put, the one in its caches.
var srvBufs = sync.Pool{New: func() any { return new([srvBufSize]byte) }}

// readBufs are client read buffers; a channel rather than a sync.Pool so
// that putting a slice back does not allocate.
var readBufs = make(chan []byte, 4096)

func getBuf(size int) []byte {
	select {
	case b := <-readBufs:
		if len(b) >= size {
			return b
		}
	default:
	}
	return make([]byte, max(size, bufSize))
}

func putBuf(b []byte) {
	select {
	case readBufs <- b:
	default:
	}
}

func (f *Frontend) httpSession(c *net.TCPConn) {
	f.process.Stats.Open()
	f.Stats.Open()
	s := &httpSession{f: f, c: c, client: addrPort(c.RemoteAddr()), dst: addrPort(c.LocalAddr()), accept: time.Now()}
	s.rc, _ = c.SyscallConn()
	s.in.Conn, s.in.Raw = c, s.rc
	s.readable = s.wait
	s.tryRead = s.try
	// Stopping (a reload) closes idle keep-alive connections at once;
	// busy ones close after their response, which says so.
	f.http.add(s)
	if f.ctx.Err() != nil {
		s.stopping() // Stop may have listed the sessions before this one
	}
	if !s.greet() {
		s.close()
		return
	}
	s.serve()
}

// greet reads the PROXY header, if any, and applies tcp_request rules;
// false closes the connection.
func (s *httpSession) greet() bool {
	cfg := s.f.Config
	if cfg.AcceptProxy {
		deadline := s.accept.Add(cfg.Timeouts.HTTPRequest)
		h, err := proxyproto.Read(s.c, deadline)
		if err != nil {
			s.f.Stats.ReqErrors.Add(1)
			return false
		}
		if !h.Local {
			s.client, s.dst = h.Src, h.Dst
		}
	}
	if !s.f.allowed(s.client.Addr()) {
		s.f.Stats.Denied.Add(1)
		return false
	}
	return true
}

// serve answers requests until the connection is to be closed, or until
// it parks idle in the poller (see waitIdle), which resumes it later on a
// new goroutine.
func (s *httpSession) serve() {
	for {
		switch s.readRequest() {
		case requestParked:
			return
		case requestNone:
			s.close()
			return
		}
		if !s.handle() {
			s.close()
			return
		}
		s.requests++
	}
}

// close ends the session: what it holds goes back, the connection closes.
func (s *httpSession) close() {
	f := s.f
	f.http.remove(s)
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	if p, err := poller(); err == nil {
		p.Remove(s.key)
	}
	if s.own != nil {
		s.own.Discard()
	}
	if s.x != nil {
		if len(s.x.out.Buffered()) > 0 {
			s.ownSend(func() { s.x.out.Flush() })
		}
		s.release()
	}
	if s.in.Buf != nil {
		putBuf(s.in.Buf)
		s.in.Buf = nil
	}
	if s.unread {
		s.linger()
	}
	s.c.Close()
	f.Stats.Close()
	f.process.Stats.Close()
	f.release()
	f.wg.Done()
}

func (s *httpSession) acquire() {
	if s.x == nil {
		s.x = exchanges.Get().(*exchange)
		s.x.toClient.reset(s.c, s.rc, s.f.Config.Timeouts.Client)
		s.x.out.Reset(&s.x.toClient)
	}
	if s.in.Buf == nil {
		s.in.Buf = getBuf(s.f.Config.HTTP.MaxHeaderSize + 1024)
	}
}

// release gives the exchange and an empty read buffer back.
func (s *httpSession) release() {
	x := s.x
	x.out.Reset(nil)
	x.srvOut.Reset(nil)
	x.toClient.reset(nil, nil, 0)
	x.toServer.reset(nil, nil, 0)
	x.srv.Reset(nil, nil)
	// The parsed heads keep their slices: they point only into pooled
	// buffers and configuration strings, and the next parse resets them.
	exchanges.Put(x)
	s.x = nil
	s.in.Release(putBuf)
}

// wait runs inside RawConn.Read while the connection is idle: it reads
// what has arrived (into the buffer, taken again if it was given back),
// or, when nothing has, gives the exchange and the buffer back and returns
// false to park until readable.
// One read per wake-up, as a plain Read would, but no buffer held while
// parked.
//
// A response left to send (see exchange) goes first, and then the wait
// starts without a read: the next request cannot have come before the
// response went.
func (s *httpSession) wait(fd uintptr) bool {
	if x := s.x; x != nil && len(x.out.Buffered()) > 0 {
		batchWrites()
		all, err := x.out.WriteFD(fd)
		if err == nil && !all {
			err = x.out.Flush()
		}
		if err != nil {
			s.waitErr = err
			return true
		}
		s.release()
		return false
	}
	if s.in.Buf == nil {
		s.in.Buf = getBuf(s.f.Config.HTTP.MaxHeaderSize + 1024)
	}
	n, err := s.in.ReadFD(fd)
	switch {
	case err == unix.EAGAIN:
		if s.x != nil {
			s.release() // gives the buffer back too
		} else {
			s.in.Release(putBuf)
		}
		return false
	case err != nil:
		s.waitErr = os.NewSyscallError("read", err)
	case n == 0:
		s.waitEOF = true
	}
	return true
}

// drainGrace is how long an idle keep-alive connection of a stopping
// generation still waits for a request before it is closed: a client that
// just got a keep-alive response may be sending its next request, which
// is then answered with connection: close instead of meeting a closed
// socket.
func (s *httpSession) drainGrace() time.Duration {
	g := time.Second
	if ka := s.f.Config.Timeouts.HTTPKeepAlive; ka > 0 && ka < g {
		g = ka
	}
	return g
}

// try runs inside RawConn.Read: it reads what has arrived without waiting
// (see wait), noting in empty whether nothing had.
func (s *httpSession) try(fd uintptr) bool {
	s.empty = !s.wait(fd)
	return true
}

// Outcomes of readRequest.
const (
	requestRead   = iota // a request head is parsed
	requestNone          // close the connection (answered if need be)
	requestParked        // idle in the poller; the session resumes later
)

// readRequest waits for the next request head and parses it.
func (s *httpSession) readRequest() int {
	f := s.f
	t := f.Config.Timeouts
	start := s.accept
	if s.requests > 0 {
		if len(s.in.Buffered()) == 0 {
			if r := s.waitIdle(); r != requestRead {
				return r
			}
		}
		start = time.Now()
	}
	busypoll.Touch()
	s.acquire()
	x := s.x
	if x.out.Flush() != nil { // the last response, when the next request was already here
		return requestNone
	}
	x.be = nil
	x.e = logging.HTTPEntry{TCPEntry: logging.TCPEntry{Accept: start, Frontend: f.Name, Backend: f.Name, Server: "<NOSRV>",
		Tw: -1, Tc: -1, Term: [2]byte{'-', '-'}}, TR: -1, Tr: -1, Ta: -1, Cookie: [2]byte{'-', '-'}}
	if t.HTTPRequest > 0 {
		s.c.SetReadDeadline(start.Add(t.HTTPRequest))
	} else {
		s.c.SetReadDeadline(time.Time{})
	}
	lim := h1.Limits{MaxHeaderSize: f.Config.HTTP.MaxHeaderSize, MaxHeaders: f.Config.HTTP.MaxHeaders, MaxRequestLine: h1.DefaultLimits.MaxRequestLine}
	err := s.in.ReadHead(func(b []byte) error { return h1.ParseRequest(b, &x.req, &lim) })
	if err == nil {
		x.e.TR = stats.Since(start)
		s.in.Discard(x.req.HeadLen)
		return requestRead
	}
	got := len(s.in.Buffered()) > 0
	x.e.Request = badRequest
	var perr *h1.Error
	switch {
	case errors.As(err, &perr):
		f.Stats.ReqErrors.Add(1)
		s.fail(perr.Status, 'P', 'R')
	case isTimeout(err):
		if !got && s.requests > 0 {
			return requestNone // an idle keep-alive connection timing out
		}
		f.Stats.ReqErrors.Add(1)
		s.fail(408, 'c', 'R')
	case got:
		f.Stats.ReqErrors.Add(1)
		x.e.Term = [2]byte{'C', 'R'}
		x.e.Status = -1
		s.log()
	}
	return requestNone
}

// fail answers with an error status, logs and leaves the connection to
// be closed.
func (s *httpSession) fail(status int, who, phase byte) {
	s.reject(status, who, phase)
	s.log()
}

// reject answers with an error status (the chosen backend's error page,
// else the frontend's, else the built-in one), which closes the
// connection.
func (s *httpSession) reject(status int, who, phase byte) {
	x := s.x
	x.e.Term = [2]byte{who, phase}
	var bePages map[int][]byte
	if x.be != nil && x.be.Config.HTTP != nil {
		bePages = x.be.Config.HTTP.ErrorPages
	}
	s.respond(status, errorResponse(status, bePages, s.f.Config.HTTP.ErrorPages))
}

// respond writes a whole response of sluice's own.
func (s *httpSession) respond(status int, raw []byte) {
	x := s.x
	s.leaveBody()
	x.e.Status = status
	s.ownSend(func() {
		x.out.Write(raw)
		x.out.Flush()
	})
	x.e.Bytes += int64(len(raw))
	s.f.Stats.Response(status)
	s.f.Stats.BytesOut.Add(int64(len(raw)))
}

func (s *httpSession) log() {
	f := s.f
	e := &s.x.e
	if e.Ta < 0 {
		e.Ta = stats.Since(e.Accept)
	}
	e.Tt = e.Ta
	if f.logs == nil {
		return
	}
	e.Client = s.client
	e.ActConn, e.FeConn = f.process.Stats.Cur.Load(), f.Stats.Cur.Load()
	var buf [1024]byte
	f.logs.Send(logging.Info, logging.AppendHTTPLog(buf[:0], e))
}

// handle routes and forwards one request; false closes the connection.
func (s *httpSession) handle() bool {
	f, x := s.f, s.x
	m := &x.req
	x.rq = rules.Request{M: m, Client: s.client.Addr()}
	x.rq.Split()
	x.e.Request = appendRequestLine(x.line[:0], m)
	f.Stats.Requests.Add(1)
	s.captures(0, f.Config.HTTP.CaptureRequest, m)

	if done, keep := s.requestRules(f.Config.HTTP.Request); done {
		return keep
	}
	be := f.Backend
	for i := range f.Config.HTTP.UseBackends {
		ub := &f.Config.HTTP.UseBackends[i]
		if rules.Match(ub.Cond, &x.rq) {
			be = f.Backends[ub.Backend]
			break
		}
	}
	if be == nil {
		s.fail(503, 'S', 'C')
		return false
	}
	x.be = be
	x.e.Backend = be.Name
	if hb := be.Config.HTTP; hb != nil && be.Name != f.Name {
		if done, keep := s.requestRules(hb.Request); done {
			return keep
		}
	}
	return s.forward(be)
}

// requestRules applies http_request rules; done tells that sluice
// answered the request itself (logged here), keep whether the connection
// stays open: after a return or redirect if no body was left unread,
// never after a deny (its error response closes).
func (s *httpSession) requestRules(list []hcl.Rule) (done, keep bool) {
	switch s.applyRules(list) {
	case ruleAnswered:
		s.log()
		return true, s.keepAlive()
	case ruleDenied:
		s.log()
		return true, false
	}
	return false, false
}

func appendRequestLine(b []byte, m *h1.Message) []byte {
	b = append(b, m.Method...)
	b = append(b, ' ')
	n := min(len(m.Target), cap(b)-len(b)-10)
	b = append(b, m.Target[:max(n, 0)]...)
	b = append(b, " HTTP/1."...)
	return append(b, '0'+byte(m.Minor))
}

// captures copies the captured headers' values for the log.
func (s *httpSession) captures(side int, caps []hcl.Capture, m *h1.Message) {
	if len(caps) == 0 {
		return
	}
	x := s.x
	arena := x.capture[:0]
	if side == 1 {
		arena = x.capture[len(x.capture)/2 : len(x.capture)/2]
	}
	vals := x.caps[side][:0]
	for i, c := range caps {
		if i >= len(x.caps[side]) {
			break
		}
		v := m.Get(c.Name)
		if len(v) > c.Len {
			v = v[:c.Len]
		}
		if len(v) > cap(arena)-len(arena) {
			v = v[:cap(arena)-len(arena)]
		}
		start := len(arena)
		arena = append(arena, v...)
		vals = append(vals, arena[start:])
	}
	if side == 0 {
		x.e.ReqCaptures = vals
	} else {
		x.e.RespCaptures = vals
	}
}

type ruleOutcome int

const (
	ruleContinue ruleOutcome = iota
	ruleAllowed
	ruleAnswered // by return or redirect
	ruleDenied
)

// applyRules runs http_request rules in order until one answers, denies
// or allows.
func (s *httpSession) applyRules(list []hcl.Rule) ruleOutcome {
	x := s.x
	m := &x.req
	for i := range list {
		r := &list[i]
		if !rules.Match(r.Cond, &x.rq) {
			continue
		}
		switch r.Action {
		case "allow":
			return ruleAllowed
		case "deny":
			s.f.Stats.Denied.Add(1)
			s.reject(r.Status, 'P', 'R')
			return ruleDenied
		case "return":
			s.answer(r.Status, r.ContentType, r.Body)
			x.e.Term = [2]byte{'L', 'R'}
			return ruleAnswered
		case "redirect":
			s.redirect(r)
			return ruleAnswered
		case "set_header":
			rules.SetHeader(m, r.Name, rules.Bytes(r.Value))
		case "add_header":
			m.Headers = append(m.Headers, h1.Header{Name: rules.Bytes(r.Name), Value: rules.Bytes(r.Value)})
		case "del_header":
			rules.DelHeader(m, r.Name)
		case "set_host":
			rules.SetHeader(m, "host", rules.Bytes(r.Host))
			m.Host = rules.Bytes(r.Host)
			x.rq.Host = m.Host
		case "set_path":
			s.setTarget(rules.Bytes(r.Path), nil)
		case "replace_path_prefix":
			if p := x.rq.Path; len(p) >= len(r.From) && string(p[:len(r.From)]) == r.From {
				s.setTarget(rules.Bytes(r.To), p[len(r.From):])
			}
		}
	}
	return ruleContinue
}

// setTarget rewrites the request target as path+rest?query, keeping the
// query. It builds into the spare buffer, since path, rest and query may
// point into the current target, then swaps the two.
func (s *httpSession) setTarget(path, rest []byte) {
	x := s.x
	query := x.rq.Query
	t := append(append(x.spare[:0], path...), rest...)
	n := len(t)
	if query != nil {
		t = append(append(t, '?'), query...)
	}
	x.spare, x.target = x.target, t
	x.req.Target = t
	x.rq.Path = t[:n]
	if query != nil {
		x.rq.Query = t[n+1:]
	}
}

// answer sends a response of sluice's own with a body.
func (s *httpSession) answer(status int, ctype string, body []byte, extra ...h1.Header) {
	x := s.x
	s.leaveBody()
	w := x.out
	b := w.AvailableBuffer()
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, hcl.StatusText(status)...)
	b = append(b, "\r\ncontent-length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if ctype != "" {
		b = append(b, "\r\ncontent-type: "...)
		b = append(b, ctype...)
	}
	for _, h := range extra {
		b = append(append(append(append(b, "\r\n"...), h.Name...), ": "...), h.Value...)
	}
	if !s.keepAlive() {
		b = append(b, "\r\nconnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	s.ownSend(func() {
		w.Write(b)
		if string(x.req.Method) != "HEAD" {
			w.Write(body)
		}
		w.Flush()
	})
	x.e.Status = status
	x.e.Bytes = int64(len(b) + len(body))
	s.f.Stats.Response(status)
	s.f.Stats.BytesOut.Add(x.e.Bytes)
}

// ownSend runs send, which writes to the client what sluice says itself
// (or the last bytes before a close), with sending bounded even without
// timeout client: a wait for room lasts at most timeout client, and at
// least a second.
func (s *httpSession) ownSend(send func()) {
	t := &s.x.toClient
	t.idle = max(s.f.Config.Timeouts.Client, time.Second)
	send()
	t.idle = s.f.Config.Timeouts.Client
}

// keepAlive tells whether the client connection may carry another request.
func (s *httpSession) keepAlive() bool {
	m := &s.x.req
	return !m.Close && h1.RequestBody(m).Empty() && s.f.ctx.Err() == nil
}

func (s *httpSession) redirect(r *hcl.Rule) {
	x := s.x
	loc := x.spare[:0] // the target may be x.target after a rewrite
	switch {
	case r.Location != "":
		loc = append(loc, r.Location...)
	case r.Prefix != "":
		loc = append(append(loc, r.Prefix...), x.req.Target...)
	default:
		loc = append(append(append(loc, r.Scheme...), "://"...), x.req.Host...)
		loc = append(loc, x.req.Target...)
	}
	x.spare = loc
	s.answer(r.Status, "", nil, h1.Header{Name: locationName, Value: loc})
	x.e.Term = [2]byte{'L', 'R'}
}

// forward sends the request to a server of be and relays the response.
func (s *httpSession) forward(be *backend.Backend) bool {
	x := s.x
	m := &x.req
	hb := be.Config.HTTP
	key := be.ClientKey(s.client)
	if be.HashesRequest() {
		key = s.requestKey(be)
	}
	cookieSrv := ""
	if hb.Cookie != nil {
		x.e.Cookie = [2]byte{'N', 'N'}
		if v, ok := cookieValue(m, hb.Cookie.Name); ok {
			cookieSrv = string(v)
			x.e.Cookie[0] = 'I'
			if srv := be.Server(cookieSrv); srv != nil {
				key.Prefer = srv
				x.e.Cookie[0] = 'V'
				if !srv.Running() {
					x.e.Cookie[0] = 'D'
				}
			}
			if hb.Cookie.Indirect {
				stripCookie(m, hb.Cookie.Name)
			}
		}
	}
	be.Stats.Open()
	be.Stats.Requests.Add(1)
	defer be.Stats.Close()
	reuse := backend.Reuse{Own: s.own}
	switch hb.Reuse {
	case "always":
		reuse.Idle = true
	case "safe":
		// A session's first request takes an idle connection only when
		// it can be sent again should the server have closed that
		// connection meanwhile: a bodiless GET, HEAD or OPTIONS.
		reuse.Idle = s.requests > 0 || (h1.RequestBody(m).Empty() && idempotent(m.Method))
	}
	for attempt := 0; ; attempt++ {
		sc, cerr := be.ConnectKey(context.Background(), key, reuse)
		if s.own != nil && (cerr != nil || sc != s.own) {
			s.own.Discard()
		}
		s.own, reuse.Own = nil, nil
		if cerr != nil {
			x.e.Tw = cerr.Wait.Milliseconds()
			x.e.Retries = cerr.Retries
			if cerr.Server != nil {
				x.e.Server = cerr.Server.Name
			}
			s.fail(503, cerr.Term[0], cerr.Term[1])
			return false
		}
		retry, keep := s.exchange(be, sc, cookieSrv)
		if !retry || attempt > 0 {
			return keep
		}
		// A reused connection the server had closed: once more on a new one.
		reuse.Idle = false
	}
}

func idempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS":
		return true
	}
	return false
}

// requestKey hashes the part of the request the algorithm names.
func (s *httpSession) requestKey(be *backend.Backend) backend.Key {
	x := s.x
	var v []byte
	ok := false
	switch be.Config.Balance {
	case "uri":
		v, ok = x.rq.Path, true
	case "url_param":
		v, ok = rules.QueryParam(x.rq.Query, be.Config.HTTP.HashParam)
	case "hdr":
		v = x.req.Get(be.Config.HTTP.HashParam)
		ok = v != nil
	}
	if !ok {
		return backend.Key{}
	}
	return backend.Key{Hash: balance.Hash(v), Hashed: true}
}

// stripCookie takes name=value out of the request's Cookie headers, in
// place (cookie indirect: the servers never see sluice's cookie); a
// header left empty goes. The other cookies keep their separators, so
// that nothing written overtakes what is still to be read.
func stripCookie(m *h1.Message, name string) {
	kept := m.Headers[:0]
	for _, h := range m.Headers {
		if h1.EqualFold(h.Name, "cookie") {
			if h.Value = withoutCookie(h.Value, name); len(h.Value) == 0 {
				continue
			}
		}
		kept = append(kept, h)
	}
	m.Headers = kept
}

// withoutCookie rewrites a Cookie header's value in place without the
// pairs named name.
func withoutCookie(v []byte, name string) []byte {
	out := v[:0]
	for len(v) > 0 {
		pair := v // with the spaces before it, which it keeps
		if i := bytes.IndexByte(v, ';'); i >= 0 {
			pair, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		kv := bytes.TrimLeft(pair, " ")
		if len(kv) == 0 || len(kv) > len(name) && kv[len(name)] == '=' && string(kv[:len(name)]) == name {
			continue
		}
		if len(out) == 0 {
			pair = kv
		} else {
			out = append(out, ';')
		}
		out = append(out, pair...)
	}
	return out
}

// cookieValue finds name=value in the request's Cookie headers.
func cookieValue(m *h1.Message, name string) ([]byte, bool) {
	for _, h := range m.Headers {
		if !h1.EqualFold(h.Name, "cookie") {
			continue
		}
		v := h.Value
		for len(v) > 0 {
			var kv []byte
			if i := bytes.IndexByte(v, ';'); i >= 0 {
				kv, v = v[:i], v[i+1:]
			} else {
				kv, v = v, nil
			}
			for len(kv) > 0 && kv[0] == ' ' {
				kv = kv[1:]
			}
			if len(kv) > len(name) && kv[len(name)] == '=' && string(kv[:len(name)]) == name {
				return kv[len(name)+1:], true
			}
		}
	}
	return nil, false
}

// exchange runs one request over sc. retry asks for another attempt on a
// new connection (a reused one turned out closed before answering); keep
// tells whether the client connection stays open.
func (s *httpSession) exchange(be *backend.Backend, sc *backend.Conn, cookieSrv string) (retry, keep bool) {
	f, x := s.f, s.x
	m := &x.req
	hb := be.Config.HTTP
	e := &x.e
	srv := sc.Server
	e.Server = srv.Name
	e.Tw, e.Tc = sc.Wait.Milliseconds(), sc.ConnectTime.Milliseconds()
	e.Retries, e.Redispatched, e.BeQueue = sc.Retries, sc.Redispatched, sc.BeQueue
	srv.Stats.Requests.Add(1)
	bt := be.Config.Timeouts
	ct := f.Config.Timeouts
	reqStart := time.Now()

	w := x.srvOut
	if rc, err := sc.RawConn(); err == nil {
		x.toServer.reset(sc, rc, bt.Server)
		w.Reset(&x.toServer)
	} else {
		x.toServer.reset(nil, nil, 0)
		w.Reset(sc)
	}
	if sc.SendProxy > 0 && !sc.Reused {
		w.Write(proxyproto.Append(w.AvailableBuffer(), sc.SendProxy, s.client, s.dst))
	}
	upgrade := m.Upgrade
	w.Write(s.appendRequestHead(w.AvailableBuffer(), be, upgrade))
	body := h1.RequestBody(m)
	sent := false
	awaited := false // the response's deadline is set
	sendBody := func() (ok bool) {
		sent = true
		if body.Empty() {
			if bt.Server > 0 {
				sc.SetReadDeadline(time.Now().Add(bt.Server))
			}
			awaited = true
			rc, err := sc.RawConn()
			if err == nil {
				err = x.reply.send(rc, w)
			}
			return err == nil || s.serverFailed(sc, 'S', 'D')
		}
		s.c.SetReadDeadline(time.Time{})
		var dst io.Writer = w
		cw := &x.cw
		if body.Chunked {
			*cw = h1.ChunkWriter{W: w} // nothing left from an aborted body
			dst = cw
		}
		s.in.Check, s.in.Pending = x.answered, w
		n, err := h1.Copy(dst, &s.in, body, ct.Client)
		s.in.Check, s.in.Pending = nil, nil
		f.Stats.BytesIn.Add(n)
		be.Stats.BytesIn.Add(n)
		srv.Stats.BytesIn.Add(n)
		if err == nil && body.Chunked {
			err = cw.Close()
		}
		if err == nil {
			err = w.Flush()
		}
		if err != nil {
			var re *h1.ReadError
			if errors.Is(err, errAnswered) || !errors.As(err, &re) && x.answered() != nil {
				// The server answered before the body ended (a 413 for
				// an upload too large), then closed, stopped taking it,
				// or read on: the client gets that answer, and the rest
				// of its body is not read.
				sent, s.unread = false, true
				return true
			}
			if re != nil {
				if errors.Is(err, h1.ErrChunk) {
					f.Stats.ReqErrors.Add(1)
					s.fail(400, 'P', 'D')
				} else {
					s.clientAbort(err, 'D')
				}
			} else if isTimeout(err) {
				// The server stopped taking the body (timeout server).
				sc.Server.Stats.ServerAborts.Add(1)
				s.fail(504, 's', 'D')
			} else {
				s.serverFailed(sc, 'S', 'D')
			}
			sc.Close()
			return false
		}
		return true
	}
	if !m.Expect100 {
		if !sendBody() {
			return false, false
		}
	} else if w.Flush() != nil {
		sc.Close()
		if sc.Reused {
			return true, false
		}
		s.serverFailed(nil, 'S', 'H')
		return false, false
	}

	// The response head, after any interim 1xx responses.
	rd := &x.srv
	rc, _ := sc.RawConn()
	rd.Reset(sc.TCPConn, rc) // whatever an aborted exchange left is not this server's
	// The read buffer is taken only now that the answer is readable, and
	// given back with the response: one thread then cycles a few buffers
	// that stay in its caches, not one per session waiting on a server.
	srvBuf := srvBufs.Get().(*[srvBufSize]byte)
	rd.Buf = srvBuf[:]
	defer func() {
		rd.Buf = nil
		srvBufs.Put(srvBuf)
	}()
	lim := h1.Limits{MaxHeaderSize: max(f.Config.HTTP.MaxHeaderSize, 15*1024), MaxHeaders: 128}
	resp := &x.resp
	for {
		if bt.Server > 0 && !awaited {
			sc.SetReadDeadline(time.Now().Add(bt.Server))
		}
		awaited = false
		err := rd.ReadHead(func(b []byte) error { return h1.ParseResponse(b, resp, &lim) })
		if err != nil {
			got := len(rd.Buffered()) > 0
			rd.Discard(len(rd.Buffered()))
			sc.Close()
			var perr *h1.Error
			switch {
			case errors.As(err, &perr):
				srv.Stats.RespErrors.Add(1)
				be.Stats.RespErrors.Add(1)
				s.fail(502, 'P', 'H')
			case isTimeout(err):
				srv.Stats.ServerAborts.Add(1)
				s.fail(504, 's', 'H')
			default:
				if sc.Reused && !got && (body.Empty() || !sent) {
					return true, false
				}
				srv.Stats.RespErrors.Add(1)
				be.Stats.RespErrors.Add(1)
				s.fail(502, 'S', 'H')
			}
			return false, false
		}
		rd.Discard(resp.HeadLen)
		if resp.Status >= 200 || (resp.Status == 101 && upgrade) {
			break
		}
		// Interim response: passed on; 100 Continue releases the body.
		x.out.Write(s.appendResponseHead(x.out.AvailableBuffer(), be, false, false))
		x.out.Flush()
		// (Not after an early answer: part of the body went, and sending
		// it again would frame the request wrong.)
		if resp.Status == 100 && !sent && !s.unread && !sendBody() {
			return false, false
		}
	}
	e.Tr = stats.Since(reqStart)
	s.captures(1, f.Config.HTTP.CaptureResponse, resp)

	if resp.Status == 101 {
		return false, s.tunnel(be, sc)
	}
	if !sent {
		// The server answered before the body (without 100 Continue, or
		// early): the body is not read.
		m.Close = true
		s.unread = s.unread || !body.Empty()
	}
	s.responseRules(be, hb, cookieSrv, srv.Name)
	rbody := h1.ResponseBody(resp, m.Method)
	zc := s.compression(be, rbody)
	gz := zc != nil
	// The request body was read whole (sent), so only the client's and
	// the server's wishes and a stop under way decide.
	clientKeep := sent && !m.Close && f.ctx.Err() == nil && !rbody.UntilClose && !resp.Close
	outChunked := rbody.Chunked || gz
	if outChunked && m.Minor == 0 {
		outChunked, clientKeep = false, false
	}
	if gz {
		rules.DelHeader(resp, "content-length")
		rules.SetHeader(resp, "content-encoding", zc.token)
		resp.Headers = append(resp.Headers, h1.Header{Name: varyName, Value: acceptEncoding})
	}
	out := x.out
	head := s.appendResponseHead(out.AvailableBuffer(), be, outChunked, clientKeep)
	out.Write(head)
	var dst io.Writer = out
	cw := &x.rcw
	if outChunked {
		*cw = h1.ChunkWriter{W: out}
		dst = cw
	}
	var zw compressor
	rd.Pending = out
	if gz {
		zw = zc.get(dst)
		dst = zw
		f.Stats.Compressed.Add(1)
		x.zout = compressedOut{zw, out}
		rd.Pending = &x.zout
	}
	n, err := h1.Copy(dst, rd, rbody, bt.Server)
	rd.Pending = nil
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if zw != nil {
		zc.put(zw)
		x.zout = compressedOut{}
	}
	if err == nil && outChunked {
		err = cw.Close()
	}
	e.BeConn, e.SrvConn = be.Stats.Cur.Load(), srv.Load()
	released := err == nil
	if released {
		// The response was read whole: the server connection is free
		// (or closed) before the client gets the last bytes, so that the
		// client's next connection finds it idle.
		switch {
		case rbody.UntilClose || resp.Close || len(rd.Buffered()) > 0, s.unread:
			// (unread: the server did not get the whole request body and
			// would take the next request for the rest of it.)
			sc.Close()
		case hb.Reuse == "never":
			sc.Park()
			s.own = sc
		default:
			sc.Keep()
		}
		if !clientKeep {
			// With keep-alive, the rest goes with the wait for the next
			// request (see wait).
			err = out.Flush()
		}
	}
	e.Bytes = int64(len(head)) + n
	e.Status = resp.Status
	f.Stats.Response(resp.Status)
	be.Stats.Response(resp.Status)
	srv.Stats.Response(resp.Status)
	f.Stats.BytesOut.Add(e.Bytes)
	be.Stats.BytesOut.Add(e.Bytes)
	srv.Stats.BytesOut.Add(e.Bytes)
	e.Ta = stats.Since(e.Accept)
	if err != nil {
		var re *h1.ReadError
		if errors.As(err, &re) {
			term := byte('S')
			if isTimeout(err) {
				term = 's'
			} else if errors.Is(err, h1.ErrChunk) {
				term = 'P'
			}
			e.Term = [2]byte{term, 'D'}
			be.Stats.ServerAborts.Add(1)
			srv.Stats.ServerAborts.Add(1)
		} else {
			s.clientAbort(err, 'D')
			x.e.Ta = -1
		}
		if !released {
			sc.Close()
		}
		s.log()
		return false, false
	}
	be.Stats.Timings(e.Tw, e.Tc, e.Ta)
	srv.Stats.Timings(e.Tw, e.Tc, e.Ta)
	s.log()
	return false, clientKeep
}

// leaveBody notes, before sluice answers a request itself, that the
// request's body may not have been read whole: the connection (which
// then closes) closes gently.
func (s *httpSession) leaveBody() {
	if !h1.RequestBody(&s.x.req).Empty() {
		s.unread = true
	}
}

// Lingering close, for a client whose request body was left unread:
// closing at once would reset the connection, and a client still sending
// would lose the response it has not read yet. Its sending is read and
// dropped until it stops, for up to lingerTime, as nginx does.
const (
	lingerTime = 5 * time.Second
	lingerIdle = time.Second
)

func (s *httpSession) linger() {
	s.c.CloseWrite()
	end := time.Now().Add(lingerTime)
	var buf [4096]byte
	for {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		dl := now.Add(lingerIdle)
		if dl.After(end) {
			dl = end
		}
		s.c.SetReadDeadline(dl)
		if _, err := s.c.Read(buf[:]); err != nil {
			return
		}
	}
}

// clientAbort records a client gone or too slow during phase.
func (s *httpSession) clientAbort(err error, phase byte) {
	who := byte('C')
	if isTimeout(err) {
		who = 'c'
	}
	s.x.e.Term = [2]byte{who, phase}
	s.f.Stats.ClientAborts.Add(1)
	if s.x.e.Status == 0 {
		// Nothing answered yet; a response cut short keeps its status,
		// as HAProxy logs it.
		s.x.e.Status = -1
	}
	if s.x.e.Ta < 0 {
		s.x.e.Ta = stats.Since(s.x.e.Accept)
	}
}

// serverFailed answers 502 for a server that failed while receiving the
// request; it always returns false.
func (s *httpSession) serverFailed(sc *backend.Conn, who, phase byte) bool {
	if sc != nil {
		sc.Server.Stats.ServerAborts.Add(1)
	}
	s.fail(502, who, phase)
	return false
}

// appendRequestHead writes the request head as sent to the server: the
// client's headers without hop-by-hop ones, the framing sluice uses, and
// the forwarding headers.
func (s *httpSession) appendRequestHead(b []byte, be *backend.Backend, upgrade bool) []byte {
	x := s.x
	m := &x.req
	b = append(b, m.Method...)
	b = append(b, ' ')
	b = append(b, m.Target...)
	b = append(b, " HTTP/1.1\r\n"...)
	b = appendHeaders(b, m, upgrade)
	if m.Chunked {
		b = append(b, "transfer-encoding: chunked\r\n"...)
	}
	if upgrade {
		b = append(b, "connection: upgrade\r\n"...)
	}
	fh, bh := s.f.Config.HTTP, be.Config.HTTP
	if fh.ForwardFor || bh.ForwardFor {
		b = append(b, "x-forwarded-for: "...)
		b = s.client.Addr().Unmap().AppendTo(b)
		b = append(b, "\r\nx-forwarded-proto: http\r\nx-forwarded-port: "...)
		b = strconv.AppendUint(b, uint64(s.dst.Port()), 10)
		b = append(b, "\r\n"...)
	}
	if fh.Forwarded || bh.Forwarded {
		b = append(b, "forwarded: for="...)
		a := s.client.Addr().Unmap()
		if a.Is6() {
			b = append(b, "\"["...)
			b = a.AppendTo(b)
			b = append(b, "]\""...)
		} else {
			b = a.AppendTo(b)
		}
		if len(m.Host) > 0 {
			b = append(b, ";host=\""...)
			b = append(b, m.Host...)
			b = append(b, '"')
		}
		b = append(b, ";proto=http\r\n"...)
	}
	return append(b, "\r\n"...)
}

// appendResponseHead writes the response head as sent to the client.
func (s *httpSession) appendResponseHead(b []byte, be *backend.Backend, chunked, keep bool) []byte {
	r := &s.x.resp
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(r.Status), 10)
	b = append(b, ' ')
	b = append(b, r.Reason...)
	b = append(b, "\r\n"...)
	upgrade := r.Status == 101
	b = appendHeaders(b, r, upgrade)
	if r.Status < 200 {
		if upgrade {
			b = append(b, "connection: upgrade\r\n"...)
		}
		return append(b, "\r\n"...)
	}
	if chunked {
		b = append(b, "transfer-encoding: chunked\r\n"...)
	}
	switch {
	case !keep:
		b = append(b, "connection: close\r\n"...)
	case s.x.req.Minor == 0:
		b = append(b, "connection: keep-alive\r\n"...)
	}
	return append(b, "\r\n"...)
}

// appendHeaders copies the headers that are end-to-end.
func appendHeaders(b []byte, m *h1.Message, upgrade bool) []byte {
	for _, h := range m.Headers {
		if hopByHop(h.Name, upgrade) || (m.ConnectionOptions && listedInConnection(m, h.Name)) {
			continue
		}
		b = append(b, h.Name...)
		b = append(b, ": "...)
		b = append(b, h.Value...)
		b = append(b, "\r\n"...)
	}
	return b
}

func hopByHop(name []byte, upgrade bool) bool {
	switch len(name) {
	case 10:
		return h1.EqualFold(name, "connection") || h1.EqualFold(name, "keep-alive")
	case 17:
		return h1.EqualFold(name, "transfer-encoding")
	case 16:
		return h1.EqualFold(name, "proxy-connection")
	case 7:
		return !upgrade && h1.EqualFold(name, "upgrade")
	case 2:
		return h1.EqualFold(name, "te")
	}
	return false
}

// listedInConnection: headers the Connection header names are hop-by-hop.
func listedInConnection(m *h1.Message, name []byte) bool {
	for _, h := range m.Headers {
		if !h1.EqualFold(h.Name, "connection") {
			continue
		}
		for tok := range h1.Tokens(h.Value) {
			if bytes.EqualFold(tok, name) && !h1.EqualFold(tok, "upgrade") {
				return true // Upgrade itself is forwarded during an upgrade
			}
		}
	}
	return false
}

// responseRules applies the backend's, then the frontend's, http_response
// rules, and inserts the persistence cookie.
func (s *httpSession) responseRules(be *backend.Backend, hb *hcl.HTTP, cookieSrv, srvName string) {
	x := s.x
	r := &x.resp
	lists := [2][]hcl.Rule{hb.Response, s.f.Config.HTTP.Response}
	if be.Name == s.f.Name {
		lists[0] = nil
	}
	for _, list := range lists {
	rules:
		for i := range list {
			rl := &list[i]
			if !rules.Match(rl.Cond, &x.rq) {
				continue
			}
			switch rl.Action {
			case "allow":
				break rules
			case "set_header":
				rules.SetHeader(r, rl.Name, rules.Bytes(rl.Value))
			case "add_header":
				r.Headers = append(r.Headers, h1.Header{Name: rules.Bytes(rl.Name), Value: rules.Bytes(rl.Value)})
			case "del_header":
				rules.DelHeader(r, rl.Name)
			}
		}
	}
	if c := hb.Cookie; c != nil && c.Insert && cookieSrv != srvName {
		v := append(x.spare[:0], c.Name...)
		v = append(append(v, '='), srvName...)
		v = append(v, "; path=/"...)
		if c.MaxAge > 0 {
			v = strconv.AppendInt(append(v, "; Max-Age="...), int64(c.MaxAge), 10)
		}
		if c.HTTPOnly {
			v = append(v, "; HttpOnly"...)
		}
		if c.Secure {
			v = append(v, "; Secure"...)
		}
		x.spare = v
		r.Headers = append(r.Headers, h1.Header{Name: setCookie, Value: v})
		if c.NoCache {
			r.Headers = append(r.Headers, h1.Header{Name: cacheControl, Value: private})
		}
		x.e.Cookie[1] = 'I'
	}
}

var (
	badRequest     = []byte("<BADREQ>")
	locationName   = []byte("location")
	setCookie      = []byte("set-cookie")
	cacheControl   = []byte("cache-control")
	private        = []byte("private")
	varyName       = []byte("vary")
	acceptEncoding = []byte("Accept-Encoding")
)

// tunnel switches to a byte tunnel after 101 Switching Protocols.
func (s *httpSession) tunnel(be *backend.Backend, sc *backend.Conn) bool {
	x := s.x
	out := x.out
	out.Write(s.appendResponseHead(out.AvailableBuffer(), be, false, true))
	out.Write(x.srv.Buffered())
	x.srv.Discard(len(x.srv.Buffered()))
	if err := out.Flush(); err != nil {
		sc.Close()
		s.clientAbort(err, 'D')
		s.log()
		return false
	}
	if p := s.in.Buffered(); len(p) > 0 {
		sc.Write(p)
		s.in.Discard(len(p))
	}
	if p, err := poller(); err == nil && s.key != 0 {
		// Parked before: the tunnel registers the socket anew.
		p.RemoveFD(s.key, connFD(s.c))
		s.key = 0
	}
	var tn tunnel
	ct, bt := s.f.Config.Timeouts, be.Config.Timeouts
	tn.t = tunnelTimeouts{client: ct.Client, server: bt.Server, clientFin: ct.ClientFin, serverFin: bt.ServerFin}
	if ct.Tunnel > 0 || bt.Tunnel > 0 {
		tun := max(ct.Tunnel, bt.Tunnel)
		tn.t.client, tn.t.server = tun, tun
	}
	s.c.SetDeadline(time.Time{})
	sc.SetDeadline(time.Time{})
	done := make(chan struct{})
	tn.start(connFD(s.c), connFD(sc.TCPConn), closeWhenDone(done))
	<-done
	in, outBytes, term := tn.result()
	x.e.Bytes += outBytes
	x.e.Term = term
	x.e.Status = 101
	s.f.Stats.BytesIn.Add(in)
	s.f.Stats.BytesOut.Add(outBytes)
	s.f.Stats.Response(101)
	sc.Close()
	x.e.Ta = stats.Since(x.e.Accept)
	s.log()
	return false
}

// closeWhenDone is a tunnel's owner that closes the channel when the
// tunnel is done.
type closeWhenDone chan struct{}

func (c closeWhenDone) tunnelDone() { close(c) }
