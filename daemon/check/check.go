// Package check runs health checks: one goroutine per checked server,
// whatever the number of cores, whose verdict every session reads.
// A check connects over TCP and, if configured, sends a string and
// expects a string or a regular expression in the reply.
package check

import (
	"fmt"
	"slices"

	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sluice/daemon/h1"
	"syscall"
	"time"

	"sluice/daemon/server"
	"sluice/hcl"
)

// Result is one check's outcome, in HAProxy's words.
type Result struct {
	OK       bool
	Code     string // HAProxy's check_status: L4OK, L4CON, L4TOUT, L7OK, L7RSP, L7TOUT
	Reason   string // "Layer4 connection problem", "Layer7 check passed", ...
	Info     string // detail such as "Connection refused"; may be empty
	Duration time.Duration
}

// Transition is a server changing state because of checks.
type Transition struct {
	Server *server.Server
	Up     bool
	Result Result
}

// Checker checks one server.
type Checker struct {
	Server *server.Server
	Config *hcl.Check
	// Dial opens the check connection; nil means a plain TCP dial.
	Dial func(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error)
	// OnChange is called on every UP/DOWN transition.
	OnChange func(Transition)
	Log      *slog.Logger
}

// Run checks until ctx is done.
func (c *Checker) Run(ctx context.Context) {
	defer func() {
		if r := recover(); r != nil {
			c.Log.Error("health check crashed", "backend", c.Server.Backend, "server", c.Server.Name, "panic", r)
		}
	}()
	cfg := c.Config
	successes, failures := 0, 0
	// Spread the first checks of many servers over one interval.
	delay := time.Duration(int64(cfg.Interval) * int64(c.Server.ID%16) / 16)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		r := c.check(ctx)
		if ctx.Err() != nil {
			return
		}
		if !r.OK {
			c.Server.ChecksFailed.Add(1)
		}
		up := c.Server.Up()
		if r.OK {
			successes, failures = successes+1, 0
			if !up && successes >= cfg.Rise {
				c.Server.SetUp(true)
				c.notify(true, r)
			}
		} else {
			failures, successes = failures+1, 0
			if up && failures >= cfg.Fall {
				c.Server.SetUp(false)
				c.notify(false, r)
			}
		}
		up = c.Server.Up()
		rising, falling := successes, failures
		if up {
			rising = 0
		} else {
			falling = 0
		}
		c.Server.SetCheck(server.CheckStatus{Code: r.Code, Info: r.Info, Duration: r.Duration}, rising, falling)
		switch {
		case up && failures == 0:
			delay = cfg.Interval
		case !up && successes == 0:
			delay = cfg.DownInterval
		default: // going up or going down
			delay = cfg.FastInterval
		}
	}
}

func (c *Checker) notify(up bool, r Result) {
	if c.OnChange != nil {
		c.OnChange(Transition{Server: c.Server, Up: up, Result: r})
	}
}

func (c *Checker) check(ctx context.Context) Result {
	cfg := c.Config
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	dial := c.Dial
	if dial == nil {
		dial = func(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
			d := net.Dialer{Timeout: timeout, KeepAlive: -1}
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	conn, err := dial(ctx, c.Server.Addr(), cfg.Timeout)
	if err != nil {
		r := Result{Code: "L4CON", Reason: "Layer4 connection problem", Info: errText(err)}
		if isTimeout(err) {
			r = Result{Code: "L4TOUT", Reason: "Layer4 timeout"}
		}
		r.Duration = time.Since(start)
		return r
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if cfg.HTTP != nil {
		return c.httpCheck(conn, start)
	}
	if cfg.Send == "" && cfg.Expect == "" && cfg.ExpectRegex == nil {
		return Result{OK: true, Code: "L4OK", Reason: "Layer4 check passed", Duration: time.Since(start)}
	}
	if cfg.Send != "" {
		if _, err := conn.Write([]byte(cfg.Send)); err != nil {
			return Result{Code: "L7RSP", Reason: "Layer7 invalid response", Info: errText(err), Duration: time.Since(start)}
		}
	}
	if cfg.Expect == "" && cfg.ExpectRegex == nil {
		return Result{OK: true, Code: "L7OK", Reason: "Layer7 check passed", Duration: time.Since(start)}
	}
	var reply []byte
	buf := make([]byte, 4096)
	for len(reply) < 16384 {
		n, err := conn.Read(buf)
		reply = append(reply, buf[:n]...)
		if matches(cfg, reply) {
			return Result{OK: true, Code: "L7OK", Reason: "Layer7 check passed", Duration: time.Since(start)}
		}
		if err != nil {
			if isTimeout(err) {
				return Result{Code: "L7TOUT", Reason: "Layer7 timeout", Duration: time.Since(start)}
			}
			break
		}
	}
	want := cfg.Expect
	if cfg.ExpectRegex != nil {
		want = cfg.ExpectRegex.String()
	}
	return Result{Code: "L7RSP", Reason: "Layer7 invalid response", Info: "TCPCHK did not match content '" + want + "'", Duration: time.Since(start)}
}

func matches(cfg *hcl.Check, reply []byte) bool {
	if cfg.ExpectRegex != nil {
		return cfg.ExpectRegex.Match(reply)
	}
	return bytes.Contains(reply, []byte(cfg.Expect))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// errText turns a dial error into HAProxy-like short text.
func errText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.ECONNREFUSED:
			return "Connection refused"
		case syscall.ECONNRESET:
			return "Connection reset by peer"
		case syscall.EHOSTUNREACH, syscall.ENETUNREACH:
			return "No route to host"
		}
		return errno.Error()
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err.Error()
	}
	return err.Error()
}

// httpCheck sends the configured request and judges the status, with
// HAProxy's wording: L7OK, L7STS (wrong status), L7RSP, L7TOUT.
func (c *Checker) httpCheck(conn net.Conn, start time.Time) Result {
	hc := c.Config.HTTP
	host := hc.Host
	if host == "" {
		host = c.Server.Addr()
	}
	req := hc.Method + " " + hc.Path + " HTTP/1.1\r\nhost: " + host + "\r\nuser-agent: sluice-check\r\nconnection: close\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return Result{Code: "L7RSP", Reason: "Layer7 invalid response", Info: errText(err), Duration: time.Since(start)}
	}
	var m h1.Message
	rd := h1.Reader{Conn: conn, Buf: make([]byte, 16384)}
	lim := h1.DefaultLimits
	err := rd.ReadHead(func(b []byte) error { return h1.ParseResponse(b, &m, &lim) })
	d := time.Since(start)
	switch {
	case err != nil && isTimeout(err):
		return Result{Code: "L7TOUT", Reason: "Layer7 timeout", Duration: d}
	case err != nil:
		return Result{Code: "L7RSP", Reason: "Layer7 invalid response", Info: errText(err), Duration: d}
	}
	ok := m.Status >= 200 && m.Status < 400
	if len(hc.ExpectStatus) > 0 {
		ok = slices.Contains(hc.ExpectStatus, m.Status)
	}
	if !ok {
		return Result{Code: "L7STS", Reason: "Layer7 wrong status", Info: fmt.Sprintf("HTTP status check returned code <%d>", m.Status), Duration: d}
	}
	return Result{OK: true, Code: "L7OK", Reason: "Layer7 check passed", Info: string(m.Reason), Duration: d}
}
