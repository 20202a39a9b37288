package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"sluice/daemon/backend"
	"sluice/daemon/server"
	"sluice/daemon/stats"
	"sluice/version"
)

// levels orders the access levels.
var levels = map[string]int{"user": 0, "operator": 1, "admin": 2}

// cmd is one runtime command: the words it starts with, the level it
// needs, and what it does.
type cmd struct {
	prefix []string
	level  string
	usage  string
	run    func(s *Server, w io.Writer, args []string) string // returns an error message, or ""
}

var commands []cmd

// init fills commands here because help lists them.
func init() {
	commands = []cmd{
		{[]string{"help"}, "user", "help                                    : this list", cmdHelp},
		{[]string{"show", "info"}, "user", "show info [json]                        : process information", cmdShowInfo},
		{[]string{"show", "stat"}, "user", "show stat [typed|json]                  : statistics, HAProxy 2.6 fields", cmdShowStat},
		{[]string{"show", "servers", "state"}, "user", "show servers state [backend]            : servers' live state", cmdServersState},
		{[]string{"show", "backend"}, "user", "show backend                            : list backends", cmdShowBackend},
		{[]string{"disable", "server"}, "operator", "disable server B/S                      : put a server in maintenance", cmdDisable},
		{[]string{"enable", "server"}, "operator", "enable server B/S                       : take a server out of maintenance", cmdEnable},
		{[]string{"set", "server"}, "operator", "set server B/S state ready|drain|maint  : change a server's state\nset server B/S weight N                 : change a server's weight\nset server B/S addr IP [port N]         : change a server's address", cmdSetServer},
		{[]string{"show", "proc"}, "user", "show proc                               : master and worker processes", cmdShowProc},
		{[]string{"show", "sess"}, "user", "show sess                               : established sessions", cmdShowSess},
		{[]string{"set", "maxconn", "frontend"}, "admin", "set maxconn frontend F N                : change a frontend's connection limit", cmdSetMaxConnFrontend},
		{[]string{"shutdown", "sessions", "server"}, "admin", "shutdown sessions server B/S            : kill every session of a server", cmdShutdownSessions},
		{[]string{"clear", "counters"}, "operator", "clear counters [all]                    : reset maximums (all: every counter)", cmdClearCounters},
		{[]string{"set", "maxconn", "server"}, "admin", "set maxconn server B/S N                : change a server's connection cap", cmdSetMaxConn},
		{[]string{"set", "config"}, "admin", "set config <<EOF                        : replace the configuration file (payload up to a line EOF)", cmdSetConfig},
		{[]string{"reload"}, "admin", "reload                                  : ask the master to reload, and wait for the outcome", cmdReload},
		{[]string{"_drain"}, "admin", "_drain                                  : stop accepting and finish the sessions under way", cmdDrain},
	}
}

func (s *Server) command(w io.Writer, line string) {
	words := strings.Fields(line)
	for _, c := range commands {
		if len(words) < len(c.prefix) || !equalWords(words[:len(c.prefix)], c.prefix) {
			continue
		}
		if levels[s.cfg.Level] < levels[c.level] {
			fmt.Fprint(w, "Permission denied\n\n")
			return
		}
		if msg := c.run(s, w, words[len(c.prefix):]); msg != "" {
			fmt.Fprintf(w, "%s\n\n", msg)
		}
		return
	}
	fmt.Fprintf(w, "Unknown command: '%s'\n", line)
	cmdHelp(s, w, nil)
}

func equalWords(a, b []string) bool {
	for i := range b {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func cmdHelp(s *Server, w io.Writer, _ []string) string {
	fmt.Fprintln(w, "The following commands are valid at this level:")
	for _, c := range commands {
		if levels[s.cfg.Level] >= levels[c.level] {
			fmt.Fprintf(w, "  %s\n", strings.ReplaceAll(c.usage, "\n", "\n  "))
		}
	}
	if s.cfg.Level == "admin" && s.cfg.ExposeListeners {
		fmt.Fprintln(w, "  _getsocks                               : send the listening sockets (sluice run --takeover)")
	}
	fmt.Fprintln(w, "  prompt                                  : toggle interactive mode\n  quit                                    : close the connection")
	fmt.Fprintln(w)
	return ""
}

func cmdShowInfo(s *Server, w io.Writer, args []string) string {
	lines := infoLines(s.Engine, s.Started)
	if len(args) > 0 && args[0] == "json" {
		type field struct {
			Field struct {
				Pos  int    `json:"pos"`
				Name string `json:"name"`
			} `json:"field"`
			ProcessNum int `json:"processNum"`
			Value      struct {
				Type  string `json:"type"`
				Value string `json:"value"`
			} `json:"value"`
		}
		out := make([]field, len(lines))
		for i, l := range lines {
			out[i].Field.Pos, out[i].Field.Name, out[i].ProcessNum = i, l[0], 1
			out[i].Value.Type, out[i].Value.Value = "str", l[1]
		}
		b, _ := json.Marshal(out)
		fmt.Fprintf(w, "%s\n\n", b)
		return ""
	}
	for _, l := range lines {
		fmt.Fprintf(w, "%s: %s\n", l[0], l[1])
	}
	fmt.Fprintln(w)
	return ""
}

func cmdShowStat(s *Server, w io.Writer, args []string) string {
	rows := statRows(s.Engine)
	switch {
	case len(args) > 0 && args[len(args)-1] == "json":
		b, _ := json.Marshal(statJSONRows(rows))
		fmt.Fprintf(w, "%s\n\n", b)
	case len(args) > 0 && args[len(args)-1] == "typed":
		writeStatTyped(w, rows)
	default:
		writeStatCSV(w, rows)
	}
	return ""
}

// cmdServersState prints HAProxy's "show servers state" format (version 1).
func cmdServersState(s *Server, w io.Writer, args []string) string {
	fmt.Fprintln(w, "1")
	fmt.Fprintln(w, "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port")
	found := false
	for i, b := range s.Engine.Backends {
		if len(args) > 0 && args[0] != b.Name {
			continue
		}
		found = true
		for _, sv := range b.Servers {
			host, port, _ := net.SplitHostPort(sv.Addr())
			op := 2 // running
			if !sv.Up() {
				op = 0
			}
			admin := 0
			if sv.Maint() {
				admin = 1
			}
			if sv.Drain() {
				admin |= 8
			}
			fmt.Fprintf(w, "%d %s %d %s %s %d %d %d %d %d %d %d %d %d 0 0 0 - %s - 0 0 - - 0\n",
				len(s.Engine.Frontends)+i+1, b.Name, sv.ID, sv.Name, host, op, admin, sv.Weight(), sv.InitialWeight,
				timeSince(sv), checkResult(sv), 0, sv.Rise, boolInt(sv.Checked), port)
		}
	}
	if len(args) > 0 && !found {
		return fmt.Sprintf("Can't find backend '%s'.", args[0])
	}
	fmt.Fprintln(w)
	return ""
}

func timeSince(sv *server.Server) int64 { return nowUnix() - sv.LastChange().Unix() }

func checkResult(sv *server.Server) int {
	if !sv.Checked {
		return 1
	}
	if sv.Up() {
		return 6
	}
	return 0
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func cmdShowBackend(s *Server, w io.Writer, _ []string) string {
	fmt.Fprintln(w, "# name")
	names := []string{}
	for _, b := range s.Engine.Backends {
		names = append(names, b.Name)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintln(w, n)
	}
	fmt.Fprintln(w)
	return ""
}

// lookup resolves "backend/server".
func (s *Server) lookup(arg string) (*backend.Backend, *server.Server, string) {
	bn, sn, ok := strings.Cut(arg, "/")
	if !ok {
		return nil, nil, "Require 'backend/server'."
	}
	for _, b := range s.Engine.Backends {
		if b.Name == bn {
			if sv := b.Server(sn); sv != nil {
				return b, sv, ""
			}
			return nil, nil, "No such server."
		}
	}
	return nil, nil, "No such backend."
}

func (s *Server) audit(action string, sv *server.Server) {
	s.log.Info("runtime change", "action", action, "backend", sv.Backend, "server", sv.Name)
}

func cmdDisable(s *Server, w io.Writer, args []string) string {
	if len(args) != 1 {
		return "Require 'backend/server'."
	}
	b, sv, msg := s.lookup(args[0])
	if sv == nil {
		return msg
	}
	applyState(b, sv, "maint")
	s.audit("disable", sv)
	return ""
}

func cmdEnable(s *Server, w io.Writer, args []string) string {
	if len(args) != 1 {
		return "Require 'backend/server'."
	}
	b, sv, msg := s.lookup(args[0])
	if sv == nil {
		return msg
	}
	sv.SetMaint(false) // leaves a drain in place, as HAProxy's enable server does
	b.Rebalance()
	b.Dispatch()
	s.audit("enable", sv)
	return ""
}

func cmdSetServer(s *Server, w io.Writer, args []string) string {
	if len(args) == 3 && args[1] == "addr" || len(args) == 5 && args[1] == "addr" && args[3] == "port" {
		_, sv, msg := s.lookup(args[0])
		if sv == nil {
			return msg
		}
		ip, err := netip.ParseAddr(args[2])
		if err != nil {
			return "Invalid IP address '" + args[2] + "'."
		}
		_, port, _ := net.SplitHostPort(sv.Addr())
		if len(args) == 5 {
			if p, err := strconv.Atoi(args[4]); err != nil || p < 1 || p > 65535 {
				return "Invalid port '" + args[4] + "'."
			}
			port = args[4]
		}
		old := sv.Addr()
		sv.SetAddr(net.JoinHostPort(ip.String(), port))
		s.audit("addr "+sv.Addr(), sv)
		return fmt.Sprintf("IP changed from '%s' to '%s' by 'stats socket command'", old, sv.Addr())
	}
	if len(args) != 3 {
		return "Require 'backend/server' and 'state ready|drain|maint', 'weight N' or 'addr IP [port N]'."
	}
	b, sv, msg := s.lookup(args[0])
	if sv == nil {
		return msg
	}
	switch args[1] {
	case "state":
		if !applyState(b, sv, args[2]) {
			return "'set server <srv> state' expects 'ready', 'drain' and 'maint'."
		}
		s.audit("state "+args[2], sv)
	case "weight":
		wt, ok := parseWeight(strings.TrimSuffix(args[2], "%"))
		if !ok {
			return "Integer value between 0 and 256 expected."
		}
		b.SetWeight(sv, wt)
		s.audit("weight "+args[2], sv)
	default:
		return "'set server <srv>' only supports 'state', 'weight' and 'addr'."
	}
	return ""
}

// applyState puts a server in service (ready), in drain or in maintenance,
// and rebuilds its backend's balancers; false for an unknown state.
func applyState(b *backend.Backend, sv *server.Server, state string) bool {
	switch state {
	case "ready":
		sv.SetMaint(false)
		sv.SetDrain(false)
	case "drain":
		sv.SetMaint(false)
		sv.SetDrain(true)
	case "maint":
		sv.SetMaint(true)
	default:
		return false
	}
	b.Rebalance()
	b.Dispatch()
	return true
}

// killSessions ends every established session of sv and counts them.
func killSessions(sv *server.Server) int {
	n := 0
	sv.Sessions(func(ss server.Session) { ss.Kill(); n++ })
	return n
}

func parseWeight(v string) (int, bool) {
	w, err := strconv.Atoi(v)
	return w, err == nil && w >= 0 && w <= 256
}

func cmdSetMaxConn(s *Server, w io.Writer, args []string) string {
	if len(args) != 2 {
		return "Require 'backend/server' and a number."
	}
	b, sv, msg := s.lookup(args[0])
	if sv == nil {
		return msg
	}
	m, err := strconv.Atoi(args[1])
	if err != nil || m < 0 {
		return "Integer value expected."
	}
	sv.SetMaxConn(m)
	b.Dispatch()
	s.audit("maxconn "+args[1], sv)
	return ""
}

func cmdDrain(s *Server, w io.Writer, _ []string) string {
	s.log.Info("drain requested over the admin socket")
	fmt.Fprint(w, "OK\n\n")
	if s.OnDrain != nil {
		s.OnDrain()
	}
	return ""
}

func nowUnix() int64 { return time.Now().Unix() }

func cmdShowSess(s *Server, w io.Writer, _ []string) string {
	for _, b := range s.Engine.Backends {
		for _, sv := range b.Servers {
			sv.Sessions(func(ss server.Session) { fmt.Fprintln(w, ss.String()) })
		}
	}
	fmt.Fprintln(w)
	return ""
}

func cmdSetMaxConnFrontend(s *Server, w io.Writer, args []string) string {
	if len(args) != 2 {
		return "Require a frontend name and a number."
	}
	m, err := strconv.Atoi(args[1])
	if err != nil || m < 0 {
		return "Integer value expected."
	}
	for _, f := range s.Engine.Frontends {
		if f.Name == args[0] {
			f.Limit.SetMax(m)
			s.log.Info("runtime change", "action", "maxconn "+args[1], "frontend", f.Name)
			return ""
		}
	}
	return "No such frontend."
}

func cmdShutdownSessions(s *Server, w io.Writer, args []string) string {
	if len(args) != 1 {
		return "Require 'backend/server'."
	}
	_, sv, msg := s.lookup(args[0])
	if sv == nil {
		return msg
	}
	n := killSessions(sv)
	s.log.Info("runtime change", "action", "shutdown sessions", "backend", sv.Backend, "server", sv.Name, "sessions", n)
	return ""
}

func cmdClearCounters(s *Server, w io.Writer, args []string) string {
	all := len(args) > 0 && args[0] == "all"
	if all && levels[s.cfg.Level] < levels["admin"] {
		return "Permission denied"
	}
	clear := func(c *stats.Counters) {
		if all {
			c.ClearAll()
		} else {
			c.ClearMax()
		}
	}
	clear(&s.Engine.Process.Stats)
	for _, f := range s.Engine.Frontends {
		clear(&f.Stats)
	}
	for _, b := range s.Engine.Backends {
		clear(&b.Stats)
		for _, sv := range b.Servers {
			clear(&sv.Stats)
			if all {
				sv.Selected.Store(0)
			}
		}
	}
	return ""
}

// cmdShowProc lists the processes the way HAProxy's master CLI does, as
// far as a worker knows them: its master and itself.
func cmdShowProc(s *Server, w io.Writer, _ []string) string {
	up := time.Since(s.Started)
	uptime := fmt.Sprintf("%dd%02dh%02dm%02ds", int(up.Hours())/24, int(up.Hours())%24, int(up.Minutes())%60, int(up.Seconds())%60)
	fmt.Fprintf(w, "#%-14s %-15s %-15s %-15s %s\n", "<PID>", "<type>", "<generation>", "<uptime>", "<version>")
	if gen := os.Getenv("SLUICE_GENERATION"); gen != "" {
		fmt.Fprintf(w, "%-15d %-15s %-15s %-15s %s\n", os.Getppid(), "master", "-", "-", version.Version)
		fmt.Fprintf(w, "%-15d %-15s %-15s %-15s %s\n", os.Getpid(), "worker", gen, uptime, version.Version)
	} else {
		fmt.Fprintf(w, "%-15d %-15s %-15s %-15s %s\n", os.Getpid(), "standalone", "-", uptime, version.Version)
	}
	fmt.Fprintln(w)
	return ""
}
