package api

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"sluice/daemon/backend"
	"sluice/daemon/engine"
	"sluice/daemon/server"
	"sluice/daemon/stats"
	"sluice/hcl"
	"sluice/version"
)

// statFields is HAProxy 2.6's "show stat" header, in order: scripts and
// exporters written for it read sluice's CSV unchanged. Fields sluice has
// no figure for stay empty.
var statFields = strings.Split("pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out", ",")

// row is one line of show stat, by field name.
type row map[string]string

func n(v int64) string { return strconv.FormatInt(v, 10) }

// statRows builds every frontend, server and backend line, in HAProxy's
// order: per proxy, the frontend, its servers, then the backend.
func statRows(e *engine.Engine) []row {
	var rows []row
	pid := "1"
	iid := 0
	for _, f := range e.Frontends {
		iid++
		st := &f.Stats
		lim := int64(e.Process.MaxConn())
		if m := f.Limit.Max(); m > 0 {
			lim = int64(m)
		}
		rows = append(rows, row{
			"pxname": f.Name, "svname": "FRONTEND", "scur": n(st.Cur.Load()), "smax": n(st.Max.Load()), "slim": n(lim),
			"stot": n(st.Total.Load()), "bin": n(st.BytesIn.Load()), "bout": n(st.BytesOut.Load()),
			"dreq": n(st.Denied.Load()), "dresp": "0", "ereq": n(st.ReqErrors.Load()), "status": "OPEN", "pid": pid, "iid": strconv.Itoa(iid),
			"sid": "0", "type": "0", "mode": string(f.Config.Mode), "conn_tot": n(st.Total.Load()),
			"rate": n(st.SessRate.PerSecond()), "rate_max": n(st.SessRate.Max()), "rate_lim": "0",
			"conn_rate": n(st.SessRate.PerSecond()), "conn_rate_max": n(st.SessRate.Max()),
		})
		httpFields(rows[len(rows)-1], st, f.Config.Mode)
	}
	for _, b := range e.Backends {
		iid++
		rows = append(rows, serverRows(b, iid, pid)...)
		rows = append(rows, backendRow(b, iid, pid))
	}
	return rows
}

func serverRows(b *backend.Backend, iid int, pid string) []row {
	var rows []row
	for _, s := range b.Servers {
		st := &s.Stats
		act, bck := "1", "0"
		if s.Backup {
			act, bck = "0", "1"
		}
		r := row{
			"pxname": b.Name, "svname": s.Name, "qcur": "0", "qmax": "0", "scur": n(st.Cur.Load()), "smax": n(st.Max.Load()),
			"stot": n(st.Total.Load()), "bin": n(st.BytesIn.Load()), "bout": n(st.BytesOut.Load()), "dresp": "0",
			"econ": n(st.ConnErrors.Load()), "eresp": n(st.ServerAborts.Load()), "wretr": n(st.Retries.Load()), "wredis": n(st.Redispatches.Load()),
			"status": s.Status(), "weight": strconv.Itoa(s.Weight()), "uweight": strconv.Itoa(s.Weight()), "act": act, "bck": bck,
			"lastchg": n(int64(time.Since(s.LastChange()).Seconds())), "pid": pid, "iid": strconv.Itoa(iid),
			"sid": strconv.Itoa(s.ID), "lbtot": n(s.Selected.Load()), "type": "2", "cli_abrt": n(st.ClientAborts.Load()),
			"srv_abrt": n(st.ServerAborts.Load()), "addr": s.Addr(), "mode": string(b.Config.Mode),
			"rate": n(st.SessRate.PerSecond()), "rate_max": n(st.SessRate.Max()),
			"qtime": n(st.QTime.Value()), "ctime": n(st.CTime.Value()), "rtime": "0", "ttime": n(st.TTime.Value()),
		}
		if m := s.MaxConn(); m > 0 {
			r["slim"] = strconv.Itoa(m)
		}
		httpFields(r, st, b.Config.Mode)
		if s.Checked {
			r["chkfail"], r["chkdown"] = n(s.ChecksFailed.Load()), n(s.Downs.Load())
			r["downtime"] = n(int64(s.Downtime().Seconds()))
			r["check_rise"], r["check_fall"] = strconv.Itoa(s.Rise), strconv.Itoa(s.Fall)
			if c := s.Check(); c != nil {
				r["check_status"], r["check_duration"] = c.Code, n(c.Duration.Milliseconds())
				r["check_desc"] = checkDesc(c)
			}
		} else {
			r["check_status"] = "no check"
		}
		rows = append(rows, r)
	}
	return rows
}

func checkDesc(c *server.CheckStatus) string {
	switch c.Code {
	case "L4OK":
		return "Layer4 check passed"
	case "L4CON":
		return "Layer4 connection problem"
	case "L4TOUT":
		return "Layer4 timeout"
	case "L7OK":
		return "Layer7 check passed"
	case "L7TOUT":
		return "Layer7 timeout"
	case "L7STS":
		return "Layer7 wrong status"
	}
	return "Layer7 invalid response"
}

func backendRow(b *backend.Backend, iid int, pid string) row {
	st := &b.Stats
	active, backup := b.Running()
	weight := 0
	for _, s := range b.Servers {
		if s.Running() && !s.Backup {
			weight += s.Weight()
		}
	}
	status := "UP"
	if active+backup == 0 {
		status = "DOWN"
	}
	r := row{
		"pxname": b.Name, "svname": "BACKEND", "qcur": n(b.QueueLen()), "qmax": n(st.QueueMax.Load()),
		"scur": n(st.Cur.Load()), "smax": n(st.Max.Load()), "stot": n(st.Total.Load()), "bin": n(st.BytesIn.Load()),
		"bout": n(st.BytesOut.Load()), "dreq": "0", "dresp": "0", "econ": n(st.ConnErrors.Load()), "eresp": n(st.ServerAborts.Load()),
		"wretr": n(st.Retries.Load()), "wredis": n(st.Redispatches.Load()), "status": status, "weight": strconv.Itoa(weight),
		"uweight": strconv.Itoa(weight), "act": strconv.Itoa(active), "bck": strconv.Itoa(backup), "pid": pid,
		"iid": strconv.Itoa(iid), "sid": "0", "lbtot": n(st.Total.Load()), "type": "1", "cli_abrt": n(st.ClientAborts.Load()),
		"srv_abrt": n(st.ServerAborts.Load()), "mode": string(b.Config.Mode), "algo": b.Config.Balance,
		"rate": n(st.SessRate.PerSecond()), "rate_max": n(st.SessRate.Max()),
		"qtime": n(st.QTime.Value()), "ctime": n(st.CTime.Value()), "rtime": "0", "ttime": n(st.TTime.Value()),
	}
	httpFields(r, st, b.Config.Mode)
	if b.Config.Mode == hcl.ModeHTTP {
		r["idle_conn_cur"] = strconv.Itoa(b.IdleConns())
	}
	return r
}

// httpFields fills the HTTP columns of a row in mode "http": responses by
// class, requests, bad responses, compressed responses.
func httpFields(r row, st *stats.Counters, mode hcl.Mode) {
	if mode != hcl.ModeHTTP {
		return
	}
	for i, f := range []string{"hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other"} {
		r[f] = n(st.Responses[i].Load())
	}
	r["req_tot"] = n(st.Requests.Load())
	r["eresp"] = n(st.ServerAborts.Load() + st.RespErrors.Load())
	r["comp_rsp"] = n(st.Compressed.Load())
}

// writeStatCSV writes the header and rows the way HAProxy does: "# " and a
// trailing comma on every line, then an empty line.
func writeStatCSV(w io.Writer, rows []row) {
	fmt.Fprintf(w, "# %s,\n", strings.Join(statFields, ","))
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		for _, f := range statFields {
			b.WriteString(r[f])
			b.WriteByte(',')
		}
		fmt.Fprintln(w, b.String())
	}
	fmt.Fprintln(w)
}

// infoLines are show info's "Name: value" pairs.
func infoLines(e *engine.Engine, started time.Time) [][2]string {
	up := time.Since(started)
	d := int(up.Hours()) / 24
	return [][2]string{
		{"Name", "sluice"},
		{"Version", version.Version},
		{"Release_date", version.Date},
		{"Nbthread", strconv.Itoa(runtime.GOMAXPROCS(0))},
		{"Nbproc", "1"},
		{"Process_num", "1"},
		{"Pid", strconv.Itoa(os.Getpid())},
		{"Uptime", fmt.Sprintf("%dd %dh%02dm%02ds", d, int(up.Hours())%24, int(up.Minutes())%60, int(up.Seconds())%60)},
		{"Uptime_sec", n(int64(up.Seconds()))},
		{"Maxconn", strconv.Itoa(e.Process.MaxConn())},
		{"Hard_maxconn", strconv.Itoa(e.Process.MaxConn())},
		{"CurrConns", n(e.Process.Stats.Cur.Load())},
		{"CumConns", n(e.Process.Stats.Total.Load())},
		{"MaxConnRate", "0"},
		{"Idle_pct", strconv.Itoa(e.Idle())},
		{"Goroutines", strconv.Itoa(runtime.NumGoroutine())},
	}
}

// objType is the row's kind in typed and JSON output: F, B or S.
func objType(r row) string {
	switch r["svname"] {
	case "FRONTEND":
		return "F"
	case "BACKEND":
		return "B"
	}
	return "S"
}

// valueType tells a number from a string the way HAProxy's typed output does.
func valueType(v string) string {
	if _, err := strconv.ParseUint(v, 10, 64); err == nil {
		return "u64"
	}
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return "s64"
	}
	return "str"
}

// writeStatTyped writes "show stat typed": one line per non-empty field,
// "F.iid.sid.pos.name.proc:tags:type:value".
func writeStatTyped(w io.Writer, rows []row) {
	for _, r := range rows {
		for pos, f := range statFields {
			v, ok := r[f]
			if !ok || v == "" {
				continue
			}
			fmt.Fprintf(w, "%s.%s.%s.%d.%s.1:MGP:%s:%s\n", objType(r), r["iid"], r["sid"], pos, f, valueType(v), v)
		}
		fmt.Fprintln(w)
	}
}

// statJSON is one field of "show stat json".
type statJSON struct {
	ObjType string `json:"objType"`
	ProxyID int    `json:"proxyId"`
	ID      int    `json:"id"`
	Field   struct {
		Pos  int    `json:"pos"`
		Name string `json:"name"`
	} `json:"field"`
	ProcessNum int `json:"processNum"`
	Value      struct {
		Type  string `json:"type"`
		Value any    `json:"value"`
	} `json:"value"`
}

// statJSONRows is "show stat json": an array per row of its non-empty fields.
func statJSONRows(rows []row) [][]statJSON {
	out := make([][]statJSON, 0, len(rows))
	for _, r := range rows {
		iid, _ := strconv.Atoi(r["iid"])
		sid, _ := strconv.Atoi(r["sid"])
		var fields []statJSON
		for pos, f := range statFields {
			v, ok := r[f]
			if !ok || v == "" {
				continue
			}
			var j statJSON
			j.ObjType, j.ProxyID, j.ID, j.ProcessNum = objType(r), iid, sid, 1
			j.Field.Pos, j.Field.Name = pos, f
			j.Value.Type = valueType(v)
			if j.Value.Type == "str" {
				j.Value.Value = v
			} else {
				j.Value.Value, _ = strconv.ParseInt(v, 10, 64)
			}
			fields = append(fields, j)
		}
		out = append(out, fields)
	}
	return out
}
