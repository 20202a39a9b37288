// Package metrics exposes sluice's counters in the Prometheus text format
// (https://prometheus.io/docs/instrumenting/exposition_formats/), named
// after HAProxy's exporter with a sluice_ prefix, plus Go runtime metrics.
package metrics

import (
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"sluice/daemon/backend"
	"sluice/daemon/proxy"
	"sluice/daemon/stats"
)

// Collector reads the live counters at scrape time.
type Collector struct {
	Process   *proxy.Process
	Frontends []*proxy.Frontend
	Backends  []*backend.Backend
	Started   time.Time
	Idle      func() int // per cent of the threads' time without work; nil: not reported
}

type desc struct {
	d    *prometheus.Desc
	kind prometheus.ValueType
}

func newDesc(name, help string, kind prometheus.ValueType, labels ...string) desc {
	return desc{prometheus.NewDesc("sluice_"+name, help, labels, nil), kind}
}

var (
	processCurConns = newDesc("process_current_connections", "Current connections over all frontends.", prometheus.GaugeValue)
	processMaxConn  = newDesc("process_max_connections", "Process-wide maxconn.", prometheus.GaugeValue)
	processConns    = newDesc("process_connections_total", "Connections accepted since start.", prometheus.CounterValue)
	processThreads  = newDesc("process_nbthread", "Threads (GOMAXPROCS).", prometheus.GaugeValue)
	processUptime   = newDesc("process_uptime_seconds", "Seconds since start.", prometheus.GaugeValue)
	processIdle     = newDesc("process_idle_time_percent", "Share of the threads' time spent waiting for work over about the last second, asleep or polling (show info's Idle_pct).", prometheus.GaugeValue)
	processStart    = newDesc("process_start_time_seconds", "Start time, Unix seconds.", prometheus.GaugeValue)

	feCur     = newDesc("frontend_current_sessions", "Current sessions.", prometheus.GaugeValue, "proxy")
	feMax     = newDesc("frontend_max_sessions", "Most sessions at once.", prometheus.GaugeValue, "proxy")
	feLimit   = newDesc("frontend_limit_sessions", "Configured session limit.", prometheus.GaugeValue, "proxy")
	feTotal   = newDesc("frontend_sessions_total", "Sessions since start.", prometheus.CounterValue, "proxy")
	feIn      = newDesc("frontend_bytes_in_total", "Bytes received from clients.", prometheus.CounterValue, "proxy")
	feOut     = newDesc("frontend_bytes_out_total", "Bytes sent to clients.", prometheus.CounterValue, "proxy")
	feReqErr  = newDesc("frontend_request_errors_total", "Malformed input from clients.", prometheus.CounterValue, "proxy")
	feRate    = newDesc("frontend_current_session_rate", "Sessions in the last second.", prometheus.GaugeValue, "proxy")
	feRateMax = newDesc("frontend_max_session_rate", "Most sessions in one second.", prometheus.GaugeValue, "proxy")
	feDenied  = newDesc("frontend_requests_denied_total", "Connections refused by rules.", prometheus.CounterValue, "proxy")

	beCur      = newDesc("backend_current_sessions", "Current sessions.", prometheus.GaugeValue, "proxy")
	beMax      = newDesc("backend_max_sessions", "Most sessions at once.", prometheus.GaugeValue, "proxy")
	beTotal    = newDesc("backend_sessions_total", "Sessions since start.", prometheus.CounterValue, "proxy")
	beIn       = newDesc("backend_bytes_in_total", "Bytes received from clients.", prometheus.CounterValue, "proxy")
	beOut      = newDesc("backend_bytes_out_total", "Bytes sent to clients.", prometheus.CounterValue, "proxy")
	beQueue    = newDesc("backend_current_queue", "Sessions waiting for a server.", prometheus.GaugeValue, "proxy")
	beQueueMax = newDesc("backend_max_queue", "Most sessions waiting at once.", prometheus.GaugeValue, "proxy")
	beConnErr  = newDesc("backend_connection_errors_total", "Failed server connections.", prometheus.CounterValue, "proxy")
	beRetries  = newDesc("backend_retry_warnings_total", "Connection retries.", prometheus.CounterValue, "proxy")
	beRedisp   = newDesc("backend_redispatch_warnings_total", "Retries sent to another server.", prometheus.CounterValue, "proxy")
	beCliAbrt  = newDesc("backend_client_aborts_total", "Sessions ended by the client.", prometheus.CounterValue, "proxy")
	beSrvAbrt  = newDesc("backend_server_aborts_total", "Sessions ended by the server.", prometheus.CounterValue, "proxy")
	beRate     = newDesc("backend_current_session_rate", "Sessions in the last second.", prometheus.GaugeValue, "proxy")
	beRateMax  = newDesc("backend_max_session_rate", "Most sessions in one second.", prometheus.GaugeValue, "proxy")
	beQTime    = newDesc("backend_queue_time_average_seconds", "Queue time, average of the last 1024 sessions.", prometheus.GaugeValue, "proxy")
	beCTime    = newDesc("backend_connect_time_average_seconds", "Connect time, average of the last 1024 sessions.", prometheus.GaugeValue, "proxy")
	beTTime    = newDesc("backend_total_time_average_seconds", "Session time, average of the last 1024 sessions.", prometheus.GaugeValue, "proxy")
	beStatus   = newDesc("backend_status", "1 when at least one server is in service.", prometheus.GaugeValue, "proxy")
	beActive   = newDesc("backend_active_servers", "Active servers in service.", prometheus.GaugeValue, "proxy")
	beBackup   = newDesc("backend_backup_servers", "Backup servers in service.", prometheus.GaugeValue, "proxy")

	svCur      = newDesc("server_current_sessions", "Current sessions.", prometheus.GaugeValue, "proxy", "server")
	svMax      = newDesc("server_max_sessions", "Most sessions at once.", prometheus.GaugeValue, "proxy", "server")
	svLimit    = newDesc("server_limit_sessions", "maxconn; 0 when none.", prometheus.GaugeValue, "proxy", "server")
	svTotal    = newDesc("server_sessions_total", "Sessions since start.", prometheus.CounterValue, "proxy", "server")
	svIn       = newDesc("server_bytes_in_total", "Bytes received from clients.", prometheus.CounterValue, "proxy", "server")
	svOut      = newDesc("server_bytes_out_total", "Bytes sent to clients.", prometheus.CounterValue, "proxy", "server")
	svConnErr  = newDesc("server_connection_errors_total", "Failed connections.", prometheus.CounterValue, "proxy", "server")
	svRetries  = newDesc("server_retry_warnings_total", "Connection retries.", prometheus.CounterValue, "proxy", "server")
	svSelected = newDesc("server_loadbalanced_total", "Times load-balancing chose the server.", prometheus.CounterValue, "proxy", "server")
	svRate     = newDesc("server_current_session_rate", "Sessions in the last second.", prometheus.GaugeValue, "proxy", "server")
	svQTime    = newDesc("server_queue_time_average_seconds", "Queue time, average of the last 1024 sessions.", prometheus.GaugeValue, "proxy", "server")
	svCTime    = newDesc("server_connect_time_average_seconds", "Connect time, average of the last 1024 sessions.", prometheus.GaugeValue, "proxy", "server")
	svTTime    = newDesc("server_total_time_average_seconds", "Session time, average of the last 1024 sessions.", prometheus.GaugeValue, "proxy", "server")
	svStatus   = newDesc("server_status", "Server state: 1 for the current one.", prometheus.GaugeValue, "proxy", "server", "state")
	svWeight   = newDesc("server_weight", "Current weight.", prometheus.GaugeValue, "proxy", "server")
	svChkFail  = newDesc("server_check_failures_total", "Failed health checks.", prometheus.CounterValue, "proxy", "server")
	svChkDown  = newDesc("server_check_up_down_total", "UP to DOWN transitions.", prometheus.CounterValue, "proxy", "server")
	svDowntime = newDesc("server_downtime_seconds_total", "Time spent DOWN.", prometheus.CounterValue, "proxy", "server")
	svSrcEx    = newDesc("server_source_ports_exhausted_total", "Connections refused for want of a source port.", prometheus.CounterValue, "proxy", "server")
)

var all = []desc{processCurConns, processMaxConn, processConns, processThreads, processUptime, processStart, processIdle,
	feCur, feMax, feLimit, feTotal, feIn, feOut, feDenied, feReqErr, feRate, feRateMax,
	beCur, beMax, beTotal, beIn, beOut, beQueue, beQueueMax, beConnErr, beRetries, beRedisp, beCliAbrt, beSrvAbrt, beStatus, beActive, beBackup,
	beRate, beRateMax, beQTime, beCTime, beTTime,
	svCur, svMax, svLimit, svTotal, svIn, svOut, svConnErr, svRetries, svSelected, svStatus, svWeight, svChkFail, svChkDown, svDowntime, svSrcEx,
	svRate, svQTime, svCTime, svTTime}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range all {
		ch <- d.d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	emit := func(d desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d.d, d.kind, v, labels...)
	}
	i := func(v int64) float64 { return float64(v) }
	emit(processCurConns, i(c.Process.Stats.Cur.Load()))
	emit(processMaxConn, float64(c.Process.MaxConn()))
	emit(processConns, i(c.Process.Stats.Total.Load()))
	emit(processThreads, float64(runtime.GOMAXPROCS(0)))
	emit(processUptime, time.Since(c.Started).Seconds())
	emit(processStart, float64(c.Started.Unix()))
	if c.Idle != nil {
		emit(processIdle, float64(c.Idle()))
	}
	for _, f := range c.Frontends {
		st := &f.Stats
		limit := f.Limit.Max()
		if limit == 0 {
			limit = c.Process.MaxConn()
		}
		emit(feCur, i(st.Cur.Load()), f.Name)
		emit(feMax, i(st.Max.Load()), f.Name)
		emit(feLimit, float64(limit), f.Name)
		emit(feTotal, i(st.Total.Load()), f.Name)
		emit(feIn, i(st.BytesIn.Load()), f.Name)
		emit(feOut, i(st.BytesOut.Load()), f.Name)
		emit(feDenied, i(st.Denied.Load()), f.Name)
		emit(feReqErr, i(st.ReqErrors.Load()), f.Name)
		emit(feRate, i(st.SessRate.PerSecond()), f.Name)
		emit(feRateMax, i(st.SessRate.Max()), f.Name)
	}
	for _, b := range c.Backends {
		st := &b.Stats
		active, backup := b.Running()
		up := 0.0
		if active+backup > 0 {
			up = 1
		}
		counters := func(d desc, v func(*stats.Counters) int64, labels ...string) { emit(d, i(v(st)), labels...) }
		counters(beCur, func(s *stats.Counters) int64 { return s.Cur.Load() }, b.Name)
		counters(beMax, func(s *stats.Counters) int64 { return s.Max.Load() }, b.Name)
		counters(beTotal, func(s *stats.Counters) int64 { return s.Total.Load() }, b.Name)
		counters(beIn, func(s *stats.Counters) int64 { return s.BytesIn.Load() }, b.Name)
		counters(beOut, func(s *stats.Counters) int64 { return s.BytesOut.Load() }, b.Name)
		emit(beQueue, i(b.QueueLen()), b.Name)
		counters(beQueueMax, func(s *stats.Counters) int64 { return s.QueueMax.Load() }, b.Name)
		counters(beConnErr, func(s *stats.Counters) int64 { return s.ConnErrors.Load() }, b.Name)
		counters(beRetries, func(s *stats.Counters) int64 { return s.Retries.Load() }, b.Name)
		counters(beRedisp, func(s *stats.Counters) int64 { return s.Redispatches.Load() }, b.Name)
		counters(beCliAbrt, func(s *stats.Counters) int64 { return s.ClientAborts.Load() }, b.Name)
		counters(beSrvAbrt, func(s *stats.Counters) int64 { return s.ServerAborts.Load() }, b.Name)
		emit(beRate, i(st.SessRate.PerSecond()), b.Name)
		emit(beRateMax, i(st.SessRate.Max()), b.Name)
		emit(beQTime, ms(st.QTime.Value()), b.Name)
		emit(beCTime, ms(st.CTime.Value()), b.Name)
		emit(beTTime, ms(st.TTime.Value()), b.Name)
		emit(beStatus, up, b.Name)
		emit(beActive, float64(active), b.Name)
		emit(beBackup, float64(backup), b.Name)
		for _, s := range b.Servers {
			ss := &s.Stats
			l := []string{b.Name, s.Name}
			emit(svCur, i(ss.Cur.Load()), l...)
			emit(svMax, i(ss.Max.Load()), l...)
			emit(svLimit, float64(s.MaxConn()), l...)
			emit(svTotal, i(ss.Total.Load()), l...)
			emit(svIn, i(ss.BytesIn.Load()), l...)
			emit(svOut, i(ss.BytesOut.Load()), l...)
			emit(svConnErr, i(ss.ConnErrors.Load()), l...)
			emit(svRetries, i(ss.Retries.Load()), l...)
			emit(svSelected, i(s.Selected.Load()), l...)
			emit(svWeight, float64(s.Weight()), l...)
			emit(svChkFail, i(s.ChecksFailed.Load()), l...)
			emit(svChkDown, i(s.Downs.Load()), l...)
			emit(svDowntime, s.Downtime().Seconds(), l...)
			emit(svSrcEx, i(ss.SourceExhausted.Load()), l...)
			emit(svRate, i(ss.SessRate.PerSecond()), l...)
			emit(svQTime, ms(ss.QTime.Value()), l...)
			emit(svCTime, ms(ss.CTime.Value()), l...)
			emit(svTTime, ms(ss.TTime.Value()), l...)
			state := s.Status()
			for _, st := range []string{"UP", "DOWN", "MAINT", "DRAIN"} {
				v := 0.0
				if state == st || len(state) > len(st) && state[:len(st)+1] == st+" " {
					v = 1
				}
				emit(svStatus, v, b.Name, s.Name, st)
			}
		}
	}
}

// ms converts milliseconds to seconds, Prometheus's unit.
func ms(v int64) float64 { return float64(v) / 1000 }

// Handler serves the metrics of c plus the Go runtime's and the process's.
func Handler(c *Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
