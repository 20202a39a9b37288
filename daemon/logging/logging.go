// Package logging sends log lines to stderr, stdout and syslog servers
// (UDP, TCP with octet counting per RFC 6587, or a unix datagram socket such
// as /dev/log), framed per RFC 3164 or RFC 5424.
//
// Lines are queued and written by one goroutine, so a slow destination never
// stalls a connection; when the queue is full, lines are dropped and counted.
package logging

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"sluice/hcl"
)

// Syslog severities.
const (
	Emerg   = 0
	Alert   = 1
	Warning = 4
	Notice  = 5
	Info    = 6
)

// queueSize bounds lines waiting to be written.
const queueSize = 4096

// Logger writes lines to a set of targets.
type Logger struct {
	targets []*target
	queue   chan *entry
	done    chan struct{}
	pool    sync.Pool
	// mu orders sends against Close: sends share it, Close takes it alone,
	// so no line is ever sent on the closed queue.
	mu     sync.RWMutex
	closed bool
	// Dropped counts lines lost because the queue was full.
	Dropped atomic.Int64
}

type entry struct {
	event    bool // also written to stderr by the daemon's own log: skip stderr/stdout
	severity int
	when     time.Time
	msg      []byte
}

type target struct {
	cfg  hcl.LogTarget
	w    io.Writer // stderr or stdout
	conn net.Conn  // syslog; nil until connected
	buf  []byte
	err  time.Time // last connection failure, to retry at most once a second
}

// New starts a logger writing to targets. Sockets are connected lazily and
// again after errors, so a syslog server that is down at start is not fatal.
func New(targets []hcl.LogTarget) *Logger {
	l := &Logger{queue: make(chan *entry, queueSize), done: make(chan struct{})}
	l.pool.New = func() any { return &entry{msg: make([]byte, 0, 256)} }
	for _, t := range targets {
		tg := &target{cfg: t}
		switch t.Network {
		case "stderr":
			tg.w = os.Stderr
		case "stdout":
			tg.w = os.Stdout
		}
		l.targets = append(l.targets, tg)
	}
	go l.run()
	return l
}

// Send queues a copy of msg, a line without its trailing newline.
func (l *Logger) Send(severity int, msg []byte) { l.send(false, severity, msg) }

// Event queues an event (a server going down, say) for the syslog targets
// only: the daemon's own log already shows it on stderr.
func (l *Logger) Event(severity int, msg string) { l.send(true, severity, []byte(msg)) }

func (l *Logger) send(event bool, severity int, msg []byte) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return
	}
	e := l.pool.Get().(*entry)
	e.event, e.severity, e.when, e.msg = event, severity, time.Now(), append(e.msg[:0], msg...)
	select {
	case l.queue <- e:
	default:
		l.Dropped.Add(1)
	}
}

// Printf queues a formatted line.
func (l *Logger) Printf(severity int, format string, args ...any) {
	l.Send(severity, fmt.Appendf(nil, format, args...))
}

// Close writes what is queued and closes the sockets.
func (l *Logger) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.queue)
	l.mu.Unlock()
	<-l.done
}

func (l *Logger) run() {
	defer close(l.done)
	for e := range l.queue {
		for _, t := range l.targets {
			t.write(e)
		}
		l.pool.Put(e)
	}
	for _, t := range l.targets {
		if t.conn != nil {
			t.conn.Close()
		}
	}
}

var pid = os.Getpid()
var hostname, _ = os.Hostname()

func (t *target) write(e *entry) {
	if e.event && t.w != nil {
		return
	}
	b := t.buf[:0]
	pri := t.cfg.Facility*8 + e.severity
	switch t.cfg.Format {
	case "rfc3164":
		// HAProxy's form: no hostname, the tag and pid.
		b = fmt.Appendf(b, "<%d>%s %s[%d]: ", pri, e.when.Format(time.Stamp), t.cfg.Tag, pid)
	case "rfc5424":
		host := hostname
		if host == "" {
			host = "-"
		}
		b = fmt.Appendf(b, "<%d>1 %s %s %s %d - - ", pri, e.when.Format("2006-01-02T15:04:05.000000Z07:00"), host, t.cfg.Tag, pid)
	}
	b = append(b, e.msg...)
	if t.w != nil || t.cfg.Network == "tcp" && t.cfg.Format == "raw" {
		b = append(b, '\n')
	}
	t.buf = b
	if t.w != nil {
		t.w.Write(b)
		return
	}
	if t.conn == nil && !t.connect() {
		return
	}
	var err error
	if t.cfg.Network == "tcp" {
		// RFC 6587 octet counting: "LEN SP MSG".
		_, err = t.conn.Write(append(strconv.AppendInt(nil, int64(len(b)), 10), append([]byte{' '}, b...)...))
	} else {
		_, err = t.conn.Write(b)
	}
	if err != nil {
		t.conn.Close()
		t.conn = nil
	}
}

func (t *target) connect() bool {
	if time.Since(t.err) < time.Second {
		return false
	}
	network := t.cfg.Network
	if network == "unix" {
		network = "unixgram"
	}
	c, err := net.DialTimeout(network, t.cfg.Address, time.Second)
	if err != nil {
		t.err = time.Now()
		fmt.Fprintf(os.Stderr, "sluice: log target %s://%s: %v\n", t.cfg.Network, t.cfg.Address, err)
		return false
	}
	t.conn = c
	return true
}
