package e2e

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// adminConfig is a frontend and a backend with admin sockets at two levels.
func adminConfig(t *testing.T, fe string, body string, frontendExtra ...string) (cfg, admin, user string) {
	dir := filepath.Dir(controlPath(t))
	admin, user = filepath.Join(dir, "admin.sock"), filepath.Join(dir, "user.sock")
	cfg = fmt.Sprintf(`global {
  admin_socket %q {
    level = "admin"
    mode  = "0660"
  }
  admin_socket %q { level = "user" }
}
`, admin, user) + config(fe, body, frontendExtra...)
	return cfg, admin, user
}

func ctl(t *testing.T, sock string, cmd ...string) (string, int) {
	t.Helper()
	out, errOut, code := sluice(t, append([]string{"ctl", "-s", sock}, cmd...)...)
	return out + errOut, code
}

// stat parses show stat into rows keyed by "pxname/svname", fields by name.
func stat(t *testing.T, sock string) map[string]map[string]string {
	t.Helper()
	out, code := ctl(t, sock, "show", "stat")
	if code != 0 {
		t.Fatalf("show stat: %s", out)
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		t.Fatalf("CSV: %v\n%s", err, out)
	}
	rows := map[string]map[string]string{}
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, name := range recs[0] {
			if i < len(rec) {
				m[name] = rec[i]
			}
		}
		rows[m["pxname"]+"/"+m["svname"]] = m
	}
	return rows
}

func TestShowStatCountsExactly(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(a, b))
	startSluice(t, cfg)
	out, _ := ctl(t, admin, "show", "stat")
	header, _, _ := strings.Cut(out, "\n")
	want, _ := os.ReadFile("../../daemon/api/testdata/haproxy-2.6-show-stat-header.txt")
	if header != strings.TrimSpace(string(want)) {
		t.Errorf("header differs from HAProxy 2.6's:\n%s", header)
	}
	// 40 sessions from 8 concurrent clients, each sending 100 bytes that the
	// server echoes after its 2-byte greeting.
	var wg sync.WaitGroup
	payload := strings.Repeat("x", 99) + "\n"
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				c, _ := dial(t, fe)
				io.WriteString(c, payload)
				buf := make([]byte, 100)
				io.ReadFull(c.r, buf)
				c.Close()
			}
		}()
	}
	wg.Wait()
	var rows map[string]map[string]string
	eventually(t, 3*time.Second, "every session to end", func() bool {
		rows = stat(t, admin)
		return rows["fe/FRONTEND"]["scur"] == "0" && rows["be/BACKEND"]["bout"] == "4080"
	})
	checks := []struct{ row, field, want string }{
		{"fe/FRONTEND", "stot", "40"}, {"fe/FRONTEND", "bin", "4000"}, {"fe/FRONTEND", "bout", "4080"},
		{"fe/FRONTEND", "status", "OPEN"}, {"fe/FRONTEND", "scur", "0"},
		{"be/BACKEND", "stot", "40"}, {"be/BACKEND", "bin", "4000"}, {"be/BACKEND", "bout", "4080"},
		{"be/BACKEND", "act", "2"}, {"be/BACKEND", "status", "UP"}, {"be/BACKEND", "algo", "roundrobin"},
		{"be/a", "stot", "20"}, {"be/b", "stot", "20"}, {"be/a", "lbtot", "20"}, {"be/a", "bout", "2040"},
		{"be/a", "status", "UP"}, {"be/a", "check_status", "no check"}, {"be/a", "addr", a.addr},
	}
	for _, c := range checks {
		if got := rows[c.row][c.field]; got != c.want {
			t.Errorf("%s %s = %q, want %q", c.row, c.field, got, c.want)
		}
	}
	// Rates count whole seconds: once the second of the traffic is over,
	// the busiest second shows.
	time.Sleep(1100 * time.Millisecond)
	rows = stat(t, admin)
	for _, r := range []string{"fe/FRONTEND", "be/BACKEND", "be/a"} {
		if v, err := strconv.Atoi(rows[r]["rate_max"]); err != nil || v < 1 {
			t.Errorf("%s rate_max = %q, want at least 1", r, rows[r]["rate_max"])
		}
	}
	for _, f := range []string{"qtime", "ctime", "ttime"} {
		if _, err := strconv.Atoi(rows["be/BACKEND"][f]); err != nil {
			t.Errorf("be/BACKEND %s = %q, want a number of milliseconds", f, rows["be/BACKEND"][f])
		}
	}
}

func TestRuntimeCommandsAndLevels(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, user := adminConfig(t, fe, servers(a, b))
	startSluice(t, cfg)
	if st, _ := os.Stat(admin); st == nil || st.Mode().Perm() != 0o660 {
		t.Errorf("admin socket mode %v, want 0660", st.Mode().Perm())
	}
	if out, code := ctl(t, user, "disable", "server", "be/a"); code == 0 || !strings.Contains(out, "Permission denied") {
		t.Errorf("a user-level socket accepted disable server: %q", out)
	}
	if out, code := ctl(t, user, "show", "info"); code != 0 || !strings.Contains(out, "Name: sluice") {
		t.Errorf("show info at user level: %q", out)
	}
	if out, code := ctl(t, admin, "disable server be/a"); code != 0 {
		t.Fatalf("disable: %s", out)
	}
	for range 6 {
		if g := greet(t, fe); g != "b" {
			t.Fatalf("with a in maintenance got %q", g)
		}
	}
	if rows := stat(t, admin); rows["be/a"]["status"] != "MAINT" || rows["be/BACKEND"]["act"] != "1" {
		t.Errorf("after disable: status %q, act %q", rows["be/a"]["status"], rows["be/BACKEND"]["act"])
	}
	// Several commands on one line; then weights 3:1.
	ctl(t, admin, "enable server be/a; set server be/a weight 3")
	got := map[string]int{}
	for range 8 {
		got[greet(t, fe)]++
	}
	if got["a"] != 6 || got["b"] != 2 {
		t.Errorf("after weight 3:1, 8 connections went %v", got)
	}
	ctl(t, admin, "set server be/b state drain")
	if g := greet(t, fe); g != "a" {
		t.Errorf("with b draining got %q", g)
	}
	if rows := stat(t, admin); rows["be/b"]["status"] != "DRAIN" || rows["be/a"]["weight"] != "3" {
		t.Errorf("after drain: %q, weight a %q", rows["be/b"]["status"], rows["be/a"]["weight"])
	}
	if out, _ := ctl(t, admin, "show servers state be"); !strings.Contains(out, "be 1 a 127.0.0.1 2 0 3 1") {
		t.Errorf("show servers state:\n%s", out)
	}
}

func TestInteractivePrompt(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(a))
	startSluice(t, cfg)
	c, err := net.Dial("unix", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "prompt\nshow backend\nshow info\nquit\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	out, _ := io.ReadAll(c)
	if !strings.Contains(string(out), "> # name\nbe\n") || !strings.Contains(string(out), "Name: sluice") {
		t.Errorf("prompt session:\n%s", out)
	}
}

func TestRuntimeStateSurvivesReload(t *testing.T) {
	t.Parallel()
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(a, b, c))
	d := startSluice(t, cfg)
	ctl(t, admin, "disable server be/a; set server be/b weight 3")
	if _, errOut, code := d.reload(""); code != 0 {
		t.Fatalf("reload: %s", errOut)
	}
	d.waitLog(`kept the runtime state of the previous generation .*servers=2`, 3*time.Second)
	rows := stat(t, admin)
	if rows["be/a"]["status"] != "MAINT" || rows["be/b"]["weight"] != "3" || rows["be/c"]["weight"] != "1" {
		t.Errorf("after reload: a %q, b weight %q, c weight %q", rows["be/a"]["status"], rows["be/b"]["weight"], rows["be/c"]["weight"])
	}
	got := map[string]int{}
	for range 8 {
		got[greet(t, fe)]++
	}
	if got["a"] != 0 || got["b"] != 6 || got["c"] != 2 {
		t.Errorf("after reload, 8 connections went %v; want b 6, c 2, a none", got)
	}
}

func TestSessionsAndLimitsAtRunTime(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(a))
	d := startSluice(t, cfg)
	held1, _ := dial(t, fe)
	held2, _ := dial(t, fe)
	defer held2.Close()
	out, _ := ctl(t, admin, "show sess")
	if n := strings.Count(out, "fe=fe be=be srv=a"); n != 2 {
		t.Errorf("show sess lists %d sessions, want 2:\n%s", n, out)
	}
	// Killing a server's sessions closes them and logs KD.
	ctl(t, admin, "shutdown sessions server be/a")
	for _, c := range []*client{held1, held2} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.r.ReadString('\n'); err == nil {
			t.Error("a killed session still answers")
		}
	}
	d.waitLog(` fe be/a \d+/\d+/\d+ \d+ KD `, 2*time.Second)
	if rows := stat(t, admin); rows["fe/FRONTEND"]["smax"] != "2" {
		t.Errorf("smax %q before clear, want 2", rows["fe/FRONTEND"]["smax"])
	}
	ctl(t, admin, "clear counters")
	eventually(t, 2*time.Second, "smax reset", func() bool { return stat(t, admin)["fe/FRONTEND"]["smax"] == "0" })
	if rows := stat(t, admin); rows["fe/FRONTEND"]["stot"] != "2" {
		t.Errorf("clear counters (without all) reset stot to %q", rows["fe/FRONTEND"]["stot"])
	}
	// maxconn 1 at run time: a second client waits in the kernel's queue.
	ctl(t, admin, "set maxconn frontend fe 1")
	if rows := stat(t, admin); rows["fe/FRONTEND"]["slim"] != "1" {
		t.Errorf("slim %q after set maxconn frontend", rows["fe/FRONTEND"]["slim"])
	}
	first, _ := dial(t, fe)
	second, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	second.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	if _, err := second.Read(make([]byte, 1)); err == nil {
		t.Error("a second connection was served with maxconn 1")
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := second.Read(make([]byte, 1)); err != nil {
		t.Errorf("the waiting connection was not served after a slot freed: %v", err)
	}
}

func TestSetServerAddr(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(a))
	startSluice(t, cfg)
	_, port, _ := net.SplitHostPort(b.addr)
	out, _ := ctl(t, admin, "set server be/a addr 127.0.0.1 port "+port)
	if !strings.Contains(out, "IP changed from '"+a.addr+"' to '"+b.addr+"'") {
		t.Errorf("set server addr: %q", out)
	}
	if g := greet(t, fe); g != "b" {
		t.Errorf("after set server addr got %q, want the server now at that address", g)
	}
	if rows := stat(t, admin); rows["be/a"]["addr"] != b.addr {
		t.Errorf("show stat addr %q", rows["be/a"]["addr"])
	}
}

func TestShowStatTypedAndJSON(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(a))
	startSluice(t, cfg)
	for range 3 {
		greet(t, fe)
	}
	eventually(t, 2*time.Second, "3 sessions counted", func() bool { return stat(t, admin)["be/a"]["stot"] == "3" })
	typed, _ := ctl(t, admin, "show stat typed")
	if !strings.Contains(typed, "S.2.1.7.stot.1:MGP:u64:3\n") || !strings.Contains(typed, "F.1.0.0.pxname.1:MGP:str:fe\n") {
		t.Errorf("show stat typed:\n%s", typed)
	}
	js, _ := ctl(t, admin, "show stat json")
	var rows [][]struct {
		ObjType string                `json:"objType"`
		Field   struct{ Name string } `json:"field"`
		Value   struct {
			Type  string
			Value any
		} `json:"value"`
	}
	if err := json.Unmarshal([]byte(js), &rows); err != nil {
		t.Fatalf("show stat json does not parse: %v\n%s", err, js)
	}
	found := false
	for _, r := range rows {
		for _, f := range r {
			if f.ObjType == "S" && f.Field.Name == "stot" && f.Value.Value == float64(3) {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("no server stot of 3 in show stat json:\n%s", js)
	}
}

func TestAdminSocketOverTCPAndOwnership(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAdmin := fmt.Sprintf("tcp://127.0.0.1:%d", freePort(t))
	unixAdmin := filepath.Join(filepath.Dir(controlPath(t)), "owned.sock")
	startSluice(t, fmt.Sprintf(`global {
  admin_socket %q { level = "operator" }
  admin_socket %q {
    level = "user"
    group = "nogroup"
    mode  = "0640"
  }
}
`, tcpAdmin, unixAdmin)+config(fe, servers(a)))
	if out, code := ctl(t, tcpAdmin, "show info"); code != 0 || !strings.Contains(out, "Name: sluice") {
		t.Errorf("show info over TCP: %q", out)
	}
	if out, code := ctl(t, tcpAdmin, "set server be/a weight 7"); code != 0 {
		t.Errorf("an operator-level change over TCP: %q", out)
	}
	if out, _ := ctl(t, tcpAdmin, "shutdown sessions server be/a"); !strings.Contains(out, "Permission denied") {
		t.Errorf("an admin command at operator level: %q", out)
	}
	st, err := os.Stat(unixAdmin)
	if err != nil {
		t.Fatal(err)
	}
	grp, _ := user.LookupGroup("nogroup")
	if gid := fmt.Sprint(st.Sys().(*syscall.Stat_t).Gid); grp == nil || gid != grp.Gid || st.Mode().Perm() != 0o640 {
		t.Errorf("socket group %s mode %v, want nogroup and 0640", gid, st.Mode().Perm())
	}
}

func TestShowProcAndRequestErrors(t *testing.T) {
	t.Parallel()
	a := newBackend(t, "a")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, servers(a), "accept_proxy = true")
	d := startSluice(t, cfg)
	for range 3 {
		c, err := net.Dial("tcp", fe)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "not a proxy header\r\n")
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.ReadAll(c)
		c.Close()
	}
	eventually(t, 2*time.Second, "3 request errors", func() bool { return stat(t, admin)["fe/FRONTEND"]["ereq"] == "3" })
	out, _ := ctl(t, admin, "show proc")
	master := fmt.Sprint(d.cmd.Process.Pid)
	if !regexp.MustCompile(`(?m)^`+master+` +master`).MatchString(out) || !regexp.MustCompile(`(?m)^\d+ +worker +1 `).MatchString(out) {
		t.Errorf("show proc:\n%s", out)
	}
}
