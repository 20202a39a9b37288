package hcl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// load writes files into a temporary directory and loads the directory.
func load(t *testing.T, files map[string]string) (*Config, string) {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _, diags := Load([]string{dir})
	var buf bytes.Buffer
	WriteDiagnostics(&buf, diags)
	return cfg, strings.ReplaceAll(buf.String(), dir+"/", "")
}

const minimal = `
frontend "fe" {
  bind            = ["127.0.0.1:8080"]
  default_backend = "be"
}
backend "be" {
  server "s1" { address = "127.0.0.1:9000" }
}
`

func TestDiagnosticPositions(t *testing.T) {
	cases := []struct {
		name string
		text string
		want string // a line the diagnostics must contain
	}{
		{"unknown attribute", "global {\n  maxconns = 3\n}\n", "c.hcl:2:3: error: Unsupported argument"},
		{"unknown block", "globals {\n}\n", "c.hcl:1:1: error: Unsupported block type"},
		{"duration", minimal + "defaults {\n  timeout { connect = \"5 parsecs\" }\n}\n", "c.hcl:10:23: error: Invalid duration"},
		{"out of range weight", "backend \"b\" {\n  server \"s\" {\n    address = \"127.0.0.1:1\"\n    weight  = 300\n  }\n}\n", "c.hcl:4:15: error: Value out of range"},
		{"missing backend", "frontend \"f\" {\n  bind = [\":80\"]\n  default_backend = \"nope\"\n}\n", "c.hcl:3:21: error: Unknown backend"},
		{"bad bind", "frontend \"f\" {\n  bind = [\"localhost:80\"]\n  default_backend = \"f\"\n}\n", "c.hcl:2:10: error: Invalid bind address"},
		{"bad port", "backend \"b\" {\n  server \"s\" { address = \"127.0.0.1:70000\" }\n}\n", "c.hcl:2:26: error: Invalid server address"},
		{"duplicate server", "backend \"b\" {\n  server \"s\" { address = \"127.0.0.1:1\" }\n  server \"s\" { address = \"127.0.0.1:2\" }\n}\n", "c.hcl:3:10: error: Duplicate server name"},
		{"duplicate backend", "backend \"b\" {\n}\nbackend \"b\" {\n}\n", "c.hcl:3:9: error: Duplicate proxy name"},
		{"listen clashes with backend", "backend \"b\" {\n}\nlisten \"b\" {\n  bind = [\":1\"]\n}\n", "c.hcl:3:8: error: Duplicate proxy name"},
		{"bad balance", "backend \"b\" {\n  balance = \"fastest\"\n}\n", "c.hcl:2:13: error: Unknown balance algorithm"},
		{"bad source range", "backend \"b\" {\n  source = \"127.0.0.2:50-40\"\n}\n", "c.hcl:2:12: error: Invalid source address"},
		{"server in frontend", "frontend \"f\" {\n  bind = [\":1\"]\n  default_backend = \"b\"\n  server \"x\" { address = \"127.0.0.1:1\" }\n}\nbackend \"b\" {\n}\n", "c.hcl:4:3: error: Unsupported block type"},
		{"bind in backend", "backend \"b\" {\n  bind = [\":1\"]\n}\n", "c.hcl:2:10: error: Unsupported argument"},
		{"syntax", "backend \"b\" {\n  balance = \n}\n", "c.hcl:2:"},
		{"bad cidr", "frontend \"f\" {\n  bind = [\":1\"]\n  default_backend = \"b\"\n  tcp_request \"reject\" { source = [\"10.0.0.0/33\"] }\n}\nbackend \"b\" {\n}\n", "c.hcl:4:35: error: Invalid source"},
		{"bad action", "frontend \"f\" {\n  bind = [\":1\"]\n  default_backend = \"b\"\n  tcp_request \"drop\" {}\n}\nbackend \"b\" {\n}\n", "c.hcl:4:15: error: Unknown tcp_request action"},
		{"bad regex", "backend \"b\" {\n  check { expect_regex = \"(\" }\n}\n", "c.hcl:2:26: error: Invalid regular expression"},
		{"bad facility", "global {\n  log {\n    address = \"udp://127.0.0.1:514\"\n    facility = \"local9\"\n  }\n}\n", "c.hcl:4:16: error: Unknown syslog facility"},
		{"wrong type", "global {\n  maxconn = \"many\"\n}\n", "c.hcl:2:13: error: Incorrect value type"},
		{"cpus", "global {\n  cpus = \"3-1\"\n}\n", "c.hcl:2:10: error: Invalid CPU set"},
		{"busy polling both ways", "global {\n  busy_polling = true\n  poll_before_sleep = \"50us\"\n}\n", "c.hcl:3:23: error: Conflicting settings"},
		{"busy polling and auto", "global {\n  busy_polling = true\n  poll_before_sleep = \"auto\"\n}\n", "c.hcl:3:23: error: Conflicting settings"},
		{"bad poll_before_sleep", "global {\n  poll_before_sleep = \"sometimes\"\n}\n", "c.hcl:2:23: error: Invalid poll_before_sleep"},
		{"use_backend in tcp mode", "frontend \"f\" {\n  bind = [\":1\"]\n  default_backend = \"b\"\n  use_backend \"b\" { path = \"/x\" }\n}\nbackend \"b\" {}\n", "c.hcl:4:15: error: HTTP setting in TCP mode"},
		{"unknown use_backend", "frontend \"f\" {\n  mode = \"http\"\n  bind = [\":1\"]\n  use_backend \"nope\" { path_prefix = [\"/api/\"] }\n}\n", "c.hcl:4:15: error: Unknown backend"},
		{"bad rule action", "frontend \"f\" {\n  mode = \"http\"\n  bind = [\":1\"]\n  http_request \"explode\" {}\n}\n", "c.hcl:4:16: error: Unknown http_request action"},
		{"bad path regex", "frontend \"f\" {\n  mode = \"http\"\n  bind = [\":1\"]\n  http_request \"deny\" { path_regex = \"(\" }\n}\n", "c.hcl:4:38: error: Invalid regular expression"},
		{"unknown acl", "frontend \"f\" {\n  mode = \"http\"\n  bind = [\":1\"]\n  http_request \"deny\" { acl = [\"!nope\"] }\n}\n", "c.hcl:4:31: error: Unknown acl"},
		{"redirect without target", "frontend \"f\" {\n  mode = \"http\"\n  bind = [\":1\"]\n  http_request \"redirect\" { code = 301 }\n}\n", "c.hcl:4:3: error: Invalid redirect"},
		{"bad max_header_size", "defaults {\n  max_header_size = \"lots\"\n}\nfrontend \"f\" {\n  mode = \"http\"\n  bind = [\":1\"]\n  http_request \"deny\" {}\n}\n", "c.hcl:2:21: error: Invalid size"},
		{"uri balance in tcp mode", "backend \"b\" {\n  balance = \"uri\"\n}\n", "c.hcl:2:13: error: Balance needs HTTP mode"},
		{"prometheus in tcp mode", "listen \"m\" {\n  bind = [\":1\"]\n  prometheus {}\n}\n", "c.hcl:3:3: error: Prometheus needs HTTP mode"},
		{"unknown pool", "backend \"b\" {\n  source_pool = \"nope\"\n}\n", "c.hcl:2:17: error: Unknown source pool"},
		{"pool and source", "source_pool \"p\" { addresses = [\"127.0.0.2\"] }\nbackend \"b\" {\n  source = \"127.0.0.3\"\n  source_pool = \"p\"\n}\n", "c.hcl:4:17: error: source and source_pool together"},
		{"bad pool ports", "source_pool \"p\" {\n  addresses = [\"127.0.0.2\"]\n  ports = \"9-1\"\n}\n", "c.hcl:3:11: error: Invalid port range"},
		{"duplicate timeout", "defaults {\n  timeout {}\n  timeout {}\n}\n", "c.hcl:3:3: error: Duplicate timeout block"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, out := load(t, map[string]string{"c.hcl": tc.text})
			if cfg != nil {
				t.Fatalf("loaded a bad configuration; diagnostics:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("diagnostics do not contain %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestPollBeforeSleep(t *testing.T) {
	cases := []struct {
		global   string
		window   time.Duration
		whenBusy bool
	}{
		{"", AutoPollBeforeSleep, true}, // the default
		{"global {\n  poll_before_sleep = \"auto\"\n}\n", AutoPollBeforeSleep, true},
		{"global {\n  poll_before_sleep = \"50us\"\n}\n", 50 * time.Microsecond, false},
		{"global {\n  poll_before_sleep = \"off\"\n}\n", 0, false},
		{"global {\n  poll_before_sleep = \"0\"\n}\n", 0, false},
		{"global {\n  busy_polling = true\n  poll_before_sleep = \"off\"\n}\n", 0, false},
	}
	for _, tc := range cases {
		cfg, out := load(t, map[string]string{"c.hcl": minimal + tc.global})
		if cfg == nil {
			t.Fatalf("%q: load failed:\n%s", tc.global, out)
		}
		if g := cfg.Global; g.PollBeforeSleep != tc.window || g.PollWhenBusy != tc.whenBusy {
			t.Errorf("%q: poll_before_sleep %v, only when busy %v; want %v, %v", tc.global, g.PollBeforeSleep, g.PollWhenBusy, tc.window, tc.whenBusy)
		}
	}
	// busy_polling alone keeps its meaning: the default "auto" gives way.
	cfg, out := load(t, map[string]string{"c.hcl": minimal + "global {\n  busy_polling = true\n}\n"})
	if cfg == nil || !cfg.Global.BusyPolling {
		t.Fatalf("busy_polling alone:\n%s", out)
	}
}

func TestEveryProblemReported(t *testing.T) {
	_, out := load(t, map[string]string{"c.hcl": "global {\n  threads = -1\n  maxconn = 0\n}\n"})
	if n := strings.Count(out, "error:"); n != 2 {
		t.Errorf("want 2 errors, got %d:\n%s", n, out)
	}
}

func TestDefaultsAndValues(t *testing.T) {
	cfg, out := load(t, map[string]string{"c.hcl": `
global {
  maxconn         = 5000
  threads         = 2
  cpus            = "0-1,3"
  hard_stop_after = "30m"
  busy_polling    = true
  log {
    address  = "udp://127.0.0.1:514"
    facility = "local3"
    format   = "rfc5424"
  }
}
defaults {
  retries = 5
  log     = "global"
  timeout {
    connect = "2s"
    client  = "1m"
    server  = 30000
  }
  check { interval = "1s" }
}
frontend "fe" {
  bind            = ["127.0.0.1:8080", "[::1]:8080", ":8081"]
  maxconn         = 100
  accept_proxy    = true
  default_backend = "be"
  timeout { client = "10s" }
  tcp_request "reject" { source = ["10.0.0.0/8", "192.0.2.1"] }
}
backend "be" {
  balance    = "leastconn"
  retries    = 1
  redispatch = true
  source     = "127.0.0.2:40000-40009"
  server "s1" {
    address    = "127.0.0.1:9000"
    weight     = 3
    maxconn    = 2
    send_proxy = "v2"
    check {
      rise = 1
      send = "PING\r\n"
      expect = "PONG"
    }
  }
  server "s2" {
    address = "localhost:9001"
    backup  = true
    source  = "127.0.0.3"
    check { enabled = false }
  }
}
listen "l" {
  bind = ["127.0.0.1:9999"]
  server "x" { address = "127.0.0.1:1" }
}
`})
	if cfg == nil {
		t.Fatalf("load failed:\n%s", out)
	}
	g := cfg.Global
	if g.MaxConn != 5000 || g.Threads != 2 || g.HardStopAfter != 30*time.Minute || !g.BusyPolling {
		t.Errorf("global = %+v", g)
	}
	if diff := cmp.Diff([]int{0, 1, 3}, g.CPUs); diff != "" {
		t.Errorf("cpus (-want +got):\n%s", diff)
	}
	if l := g.Logs[0]; l.Network != "udp" || l.Address != "127.0.0.1:514" || l.Facility != 19 || l.Format != "rfc5424" {
		t.Errorf("log = %+v", l)
	}
	if len(cfg.Frontends) != 2 || len(cfg.Backends) != 2 {
		t.Fatalf("want 2 frontends and 2 backends, got %d, %d", len(cfg.Frontends), len(cfg.Backends))
	}
	fe := cfg.Frontends[0]
	if fe.Timeouts.Client != 10*time.Second || fe.Timeouts.Connect != 2*time.Second || fe.Timeouts.Server != 30*time.Second {
		t.Errorf("frontend timeouts = %+v", fe.Timeouts)
	}
	if fe.Timeouts.Queue != 2*time.Second {
		t.Errorf("timeout queue defaults to connect: got %v", fe.Timeouts.Queue)
	}
	if !fe.Log || !fe.AcceptProxy || fe.MaxConn != 100 || len(fe.Binds) != 3 {
		t.Errorf("frontend = %+v", fe)
	}
	if r := fe.TCPRequest[0]; r.Action != "reject" || len(r.Sources) != 2 || r.Sources[1].String() != "192.0.2.1/32" {
		t.Errorf("tcp_request = %+v", r)
	}
	be := cfg.Backend("be")
	if be.Balance != "leastconn" || be.Retries != 1 || !be.Redispatch || be.Source.PortLow != 40000 || be.Source.PortHigh != 40009 {
		t.Errorf("backend = %+v", be)
	}
	s1, s2 := be.Servers[0], be.Servers[1]
	if s1.Weight != 3 || s1.MaxConn != 2 || s1.SendProxy != 2 || s1.Check == nil {
		t.Fatalf("s1 = %+v", s1)
	}
	if c := s1.Check; c.Interval != time.Second || c.Rise != 1 || c.Fall != 3 || c.Send != "PING\r\n" || c.Expect != "PONG" || c.FastInterval != time.Second {
		t.Errorf("s1 check = %+v", c)
	}
	if s2.Check != nil || !s2.Backup || s2.Source.Addr.String() != "127.0.0.3" || s2.Weight != 1 {
		t.Errorf("s2 = %+v", s2)
	}
	if l := cfg.Backend("l"); l == nil || cfg.Frontends[1].DefaultBackend != "l" || l.Retries != 5 {
		t.Errorf("listen section not split into frontend and backend: %+v", l)
	}
}

func TestSourcePool(t *testing.T) {
	cfg, out := load(t, map[string]string{"c.hcl": `
source_pool "p" {
  addresses = ["192.0.2.10", "192.0.2.12/31"]
  ports     = "20000-20999"
  interface = "eth0"
}
backend "b" {
  source_pool = "p"
  server "s" { address = "127.0.0.1:1" }
}
`})
	if cfg == nil {
		t.Fatalf("load failed:\n%s", out)
	}
	p := cfg.Backend("b").SourcePool
	if p == nil || len(p.Addresses) != 3 || p.Addresses[2].String() != "192.0.2.13" || p.PortLow != 20000 || p.PortHigh != 20999 || p.Interface != "eth0" {
		t.Errorf("pool = %+v", p)
	}
}

func TestFunctionsAndDynamicBlocks(t *testing.T) {
	t.Setenv("SLUICE_TEST_PORT", "9123")
	cfg, out := load(t, map[string]string{
		"a.hcl": minimal,
		"b.hcl": `backend "gen" {
  dynamic "server" {
    for_each = split(",", file("servers.txt"))
    labels = ["s${server.key}"]
    content {
      address = "${trimspace(server.value)}:${env("SLUICE_TEST_PORT")}"
    }
  }
}
`,
		"servers.txt": "127.0.0.1,127.0.0.2,127.0.0.3",
	})
	if cfg == nil {
		t.Fatalf("load failed:\n%s", out)
	}
	gen := cfg.Backend("gen")
	var got []string
	for _, s := range gen.Servers {
		got = append(got, s.Name+"="+s.Address)
	}
	want := []string{"s0=127.0.0.1:9123", "s1=127.0.0.2:9123", "s2=127.0.0.3:9123"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("generated servers (-want +got):\n%s", diff)
	}
}
