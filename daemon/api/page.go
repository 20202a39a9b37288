package api

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"sluice/daemon/engine"
	"sluice/hcl"
	"sluice/version"
)

// StatsPage serves the HTML stats page, in the spirit of HAProxy's: one
// table per proxy, a row per server coloured by state, process figures,
// ";csv" and ";json" forms, and with admin = true forms that change
// servers (POST, with a CSRF token, each action logged with the user).
type StatsPage struct {
	cfg    *hcl.Stats
	e      *engine.Engine
	log    *slog.Logger
	secret [32]byte // keys the CSRF tokens; new each generation

	mu       sync.Mutex
	verified map[string][32]byte // user to sha256 of a password bcrypt accepted
}

// NewStatsPage serves cfg's page over e.
func NewStatsPage(cfg *hcl.Stats, e *engine.Engine, log *slog.Logger) *StatsPage {
	p := &StatsPage{cfg: cfg, e: e, log: log.With("component", "stats"), verified: map[string][32]byte{}}
	rand.Read(p.secret[:])
	return p
}

// ServeHTTP implements http.Handler.
func (p *StatsPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, ok := p.authenticate(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+strings.ReplaceAll(p.cfg.Realm, `"`, "")+`"`)
		http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
		return
	}
	path := r.URL.Path
	switch {
	case path == p.cfg.URI+";csv":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		writeStatCSV(w, statRows(p.e))
	case path == p.cfg.URI+";json":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(statJSONRows(statRows(p.e)))
	case path == p.cfg.URI || path == p.cfg.URI+"/":
		if r.Method == http.MethodPost {
			p.act(w, r, user)
			return
		}
		p.render(w, user, r.URL.Query().Get("msg"))
	default:
		http.NotFound(w, r)
	}
}

// authenticate checks HTTP basic credentials; with no users configured,
// everyone is let in as "".
func (p *StatsPage) authenticate(r *http.Request) (string, bool) {
	if len(p.cfg.Users) == 0 {
		return "", true
	}
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	want, known := p.cfg.Users[user]
	if !known {
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(pass)) // the same cost as a known user's
		return "", false
	}
	sum := sha256.Sum256([]byte(pass))
	p.mu.Lock()
	cached, hit := p.verified[user]
	p.mu.Unlock()
	if hit && subtle.ConstantTimeCompare(cached[:], sum[:]) == 1 {
		return user, true
	}
	var good bool
	if strings.HasPrefix(want, "$2") {
		good = bcrypt.CompareHashAndPassword([]byte(want), []byte(pass)) == nil
	} else {
		good = subtle.ConstantTimeCompare([]byte(want), []byte(pass)) == 1
	}
	if good {
		// bcrypt is slow on purpose; remember the good password for this
		// generation so that auto-refresh does not pay it every time.
		p.mu.Lock()
		p.verified[user] = sum
		p.mu.Unlock()
	}
	return user, good
}

// dummyHash is checked for unknown users, so that their answer takes as
// long as a known user's.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("sluice"), bcrypt.DefaultCost)
	return h
})

func (p *StatsPage) token(user string) string {
	m := hmac.New(sha256.New, p.secret[:])
	m.Write([]byte(user))
	return hex.EncodeToString(m.Sum(nil))
}

// act applies an admin form: action on backend b, server s.
func (p *StatsPage) act(w http.ResponseWriter, r *http.Request, user string) {
	if !p.cfg.Admin {
		http.Error(w, "403 Forbidden: this stats page is read-only (admin = false)", http.StatusForbidden)
		return
	}
	r.ParseForm()
	if !hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(p.token(user))) {
		http.Error(w, "403 Forbidden: bad or missing form token; reload the page", http.StatusForbidden)
		return
	}
	b, sv, msg := (&Server{Engine: p.e}).lookup(r.PostForm.Get("b") + "/" + r.PostForm.Get("s"))
	action := r.PostForm.Get("action")
	if sv != nil {
		switch action {
		case "ready", "drain", "maint":
			applyState(b, sv, action)
		case "weight":
			wt, ok := parseWeight(r.PostForm.Get("weight"))
			if !ok {
				msg = "weight must be a number from 0 to 256"
				break
			}
			b.SetWeight(sv, wt)
		case "kill":
			msg = strconv.Itoa(killSessions(sv)) + " sessions killed"
		default:
			msg = "unknown action " + action
		}
		p.log.Info("stats page action", "user", user, "action", action, "backend", b.Name, "server", sv.Name, "weight", r.PostForm.Get("weight"))
		if msg == "" {
			msg = "done: " + action + " " + b.Name + "/" + sv.Name
		}
	}
	http.Redirect(w, r, p.cfg.URI+"?msg="+template.URLQueryEscaper(msg), http.StatusSeeOther)
}

type pageProxy struct {
	Name string
	Rows []row
}

func (p *StatsPage) render(w http.ResponseWriter, user, msg string) {
	var proxies []*pageProxy
	index := map[string]*pageProxy{}
	for _, r := range statRows(p.e) {
		px := index[r["pxname"]]
		if px == nil {
			px = &pageProxy{Name: r["pxname"]}
			index[r["pxname"]] = px
			proxies = append(proxies, px)
		}
		px.Rows = append(px.Rows, r)
	}
	up := time.Since(p.e.Started()).Round(time.Second)
	data := map[string]any{
		"Proxies": proxies, "Admin": p.cfg.Admin, "Token": p.token(user), "User": user, "Msg": msg,
		"Refresh": int(p.cfg.Refresh.Seconds()), "HideVersion": p.cfg.HideVersion, "Version": version.Version,
		"Pid": os.Getpid(), "Uptime": up.String(), "Threads": runtime.GOMAXPROCS(0), "Idle": p.e.Idle(),
		"Cur": p.e.Process.Stats.Cur.Load(), "Max": p.e.Process.MaxConn(), "Total": p.e.Process.Stats.Total.Load(),
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := pageTemplate.Execute(w, data); err != nil {
		p.log.Warn("rendering the stats page", "err", err)
	}
}

// rowClass colours a row by state, as HAProxy's page does.
func rowClass(r row) string {
	st := r["status"]
	switch {
	case r["svname"] == "FRONTEND" || r["svname"] == "BACKEND":
		if st == "DOWN" {
			return "down"
		}
		return "total"
	case st == "MAINT":
		return "maint"
	case st == "DRAIN":
		return "drain"
	case strings.HasPrefix(st, "UP "):
		return "going-down"
	case strings.HasPrefix(st, "DOWN "):
		return "going-up"
	case st == "DOWN":
		return "down"
	}
	return "up"
}

var pageTemplate = template.Must(template.New("stats").Funcs(template.FuncMap{
	"class":    rowClass,
	"isServer": func(r row) bool { return r["svname"] != "FRONTEND" && r["svname"] != "BACKEND" },
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sluice statistics</title>
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<style>
body{font-family:sans-serif;font-size:13px;margin:1em}
h1{font-size:18px} h2{font-size:15px;margin:1.2em 0 .3em}
table{border-collapse:collapse} th,td{border:1px solid #999;padding:2px 6px;text-align:right}
th{background:#eee} td.name{text-align:left}
tr.up{background:#c0ffc0} tr.down{background:#ff9090} tr.maint{background:#c07820;color:#fff}
tr.drain{background:#20a0ff} tr.going-down{background:#ffd020} tr.going-up{background:#e0ffa0}
tr.total{background:#e0e0ff;font-weight:bold} .msg{background:#ffffc0;padding:4px}
form{display:inline} input.w{width:3em}
</style></head><body>
<h1>sluice statistics</h1>
<p id="process">{{if not .HideVersion}}Version {{.Version}}, {{end}}pid {{.Pid}}, uptime {{.Uptime}}, threads {{.Threads}}, idle {{.Idle}}%;
current connections {{.Cur}} of maxconn {{.Max}}; {{.Total}} since start{{if .User}}; logged in as {{.User}}{{end}}.
Also as <a href=";csv">CSV</a> and <a href=";json">JSON</a>.</p>
{{if .Msg}}<p class="msg" id="msg">{{.Msg}}</p>{{end}}
{{range .Proxies}}{{$px := .Name}}
<h2>{{.Name}}</h2>
<table class="proxy" id="px-{{.Name}}">
<tr><th>Name</th><th>Status</th><th>Cur</th><th>Max</th><th>Limit</th><th>Total</th><th>Bytes in</th><th>Bytes out</th>
<th>Denied</th><th>Conn err</th><th>Retries</th><th>Redisp</th><th>Weight</th><th>Act</th><th>Bck</th>
<th>Check</th><th>Chk fail</th><th>Down</th><th>Downtime s</th><th>LB total</th>{{if $.Admin}}<th>Action</th>{{end}}</tr>
{{range .Rows}}<tr class="{{class .}}" id="row-{{.pxname}}-{{.svname}}">
<td class="name">{{.svname}}</td><td class="status">{{.status}}</td><td>{{.scur}}</td><td>{{.smax}}</td><td>{{.slim}}</td>
<td>{{.stot}}</td><td>{{.bin}}</td><td>{{.bout}}</td><td>{{.dreq}}</td><td>{{.econ}}</td><td>{{.wretr}}</td><td>{{.wredis}}</td>
<td>{{.weight}}</td><td>{{.act}}</td><td>{{.bck}}</td><td>{{.check_status}} {{.check_duration}}</td><td>{{.chkfail}}</td>
<td>{{.chkdown}}</td><td>{{.downtime}}</td><td>{{.lbtot}}</td>
{{if $.Admin}}<td>{{if isServer .}}
<form method="post" action=""><input type="hidden" name="csrf" value="{{$.Token}}"><input type="hidden" name="b" value="{{$px}}"><input type="hidden" name="s" value="{{.svname}}">
<select name="action"><option value="ready">ready</option><option value="drain">drain</option><option value="maint">maintenance</option><option value="kill">kill sessions</option></select>
<button type="submit" id="apply-{{$px}}-{{.svname}}">Apply</button></form>
<form method="post" action=""><input type="hidden" name="csrf" value="{{$.Token}}"><input type="hidden" name="b" value="{{$px}}"><input type="hidden" name="s" value="{{.svname}}"><input type="hidden" name="action" value="weight">
<input class="w" name="weight" value="{{.weight}}"><button type="submit">Set weight</button></form>
{{end}}</td>{{end}}</tr>
{{end}}</table>
{{end}}
</body></html>
`))
