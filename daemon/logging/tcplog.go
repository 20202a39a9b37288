package logging

import (
	"net/netip"
	"strconv"
	"time"
)

// TCPEntry is one connection's line in HAProxy's tcplog format:
//
//	%ci:%cp [%t] %ft %b/%s %Tw/%Tc/%Tt %B %ts %ac/%fc/%bc/%sc/%rc %sq/%bq
type TCPEntry struct {
	Client   netip.AddrPort
	Accept   time.Time
	Frontend string
	Backend  string
	Server   string // "<NOSRV>" when none was reached
	// Timers in milliseconds; -1 when the step was never reached.
	Tw, Tc, Tt int64
	// Bytes sent to the client.
	Bytes int64
	// Term is the termination state: who ended the session, and in which phase.
	Term [2]byte
	// Connection counts when the session ended: process, frontend, backend, server.
	ActConn, FeConn, BeConn, SrvConn int64
	Retries                          int
	Redispatched                     bool
	// Queue positions: server queue and backend queue.
	SrvQueue, BeQueue int64
}

// AppendTCPLog appends e in tcplog format, without allocating.
func AppendTCPLog(b []byte, e *TCPEntry) []byte {
	b = appendWho(b, e)
	b = strconv.AppendInt(b, e.Tw, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, e.Tc, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, e.Tt, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.Bytes, 10)
	b = append(b, ' ', e.Term[0], e.Term[1], ' ')
	return appendCounts(b, e)
}

// appendWho appends "%ci:%cp [%t] %ft %b/%s ", common to tcplog and
// httplog.
func appendWho(b []byte, e *TCPEntry) []byte {
	b = e.Client.Addr().Unmap().AppendTo(b)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(e.Client.Port()), 10)
	b = append(b, " ["...)
	b = AppendDate(b, e.Accept)
	b = append(b, "] "...)
	b = append(b, e.Frontend...)
	b = append(b, ' ')
	b = append(b, e.Backend...)
	b = append(b, '/')
	b = append(b, e.Server...)
	return append(b, ' ')
}

// appendCounts appends "%ac/%fc/%bc/%sc/%rc %sq/%bq", common to tcplog
// and httplog.
func appendCounts(b []byte, e *TCPEntry) []byte {
	b = strconv.AppendInt(b, e.ActConn, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, e.FeConn, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, e.BeConn, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, e.SrvConn, 10)
	b = append(b, '/')
	if e.Redispatched {
		b = append(b, '+')
	}
	b = strconv.AppendInt(b, int64(e.Retries), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, e.SrvQueue, 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, e.BeQueue, 10)
	return b
}

// AppendDate appends t as HAProxy's accept date: 23/Nov/2026:20:30:00.123.
func AppendDate(b []byte, t time.Time) []byte {
	return t.AppendFormat(b, "02/Jan/2006:15:04:05.000")
}
