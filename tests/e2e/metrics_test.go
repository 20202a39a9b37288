package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches and parses the Prometheus text exposition with the
// Prometheus library's own parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET %s: %s, %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation) // the classic name rules, as promtool checks
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	return families
}

// value returns the metric of a family whose labels include want.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		match := 0
		for _, l := range m.Label {
			if want[l.GetName()] == l.GetValue() {
				match++
			}
		}
		if match != len(want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func TestPrometheusMetrics(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mon := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startSluice(t, config(fe, servers(a, b))+fmt.Sprintf(`
listen "metrics" {
  mode = "http"
  bind = [%q]
  prometheus { uri = "/metrics" }
}
`, mon))
	for range 10 {
		greet(t, fe)
	}
	url := "http://" + mon + "/metrics"
	var fams map[string]*dto.MetricFamily
	eventually(t, 2*time.Second, "10 sessions in the metrics, all ended", func() bool {
		fams = scrape(t, url)
		v, _ := value(fams, "sluice_backend_bytes_out_total", map[string]string{"proxy": "be"})
		cur, _ := value(fams, "sluice_frontend_current_sessions", map[string]string{"proxy": "fe"})
		return v == 20 && cur == 0
	})
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sluice_frontend_sessions_total", map[string]string{"proxy": "fe"}, 10},
		{"sluice_frontend_current_sessions", map[string]string{"proxy": "fe"}, 0},
		{"sluice_frontend_bytes_out_total", map[string]string{"proxy": "fe"}, 20},
		{"sluice_backend_sessions_total", map[string]string{"proxy": "be"}, 10},
		{"sluice_backend_active_servers", map[string]string{"proxy": "be"}, 2},
		{"sluice_backend_status", map[string]string{"proxy": "be"}, 1},
		{"sluice_server_sessions_total", map[string]string{"proxy": "be", "server": "a"}, 5},
		{"sluice_server_loadbalanced_total", map[string]string{"proxy": "be", "server": "b"}, 5},
		{"sluice_server_weight", map[string]string{"proxy": "be", "server": "a"}, 1},
		{"sluice_server_status", map[string]string{"proxy": "be", "server": "a", "state": "UP"}, 1},
		{"sluice_server_status", map[string]string{"proxy": "be", "server": "a", "state": "DOWN"}, 0},
	}
	for _, c := range checks {
		if got, ok := value(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "sluice_process_current_connections"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if resp, err := http.Get("http://" + mon + "/other"); err != nil || resp.StatusCode != 404 {
		t.Errorf("another path: %v %v", resp, err)
	}
}

// TestCountersAgreeEverywhere drives a known load from concurrent clients
// (sessions, bytes, and connection errors from a dead server) and checks
// the same figures in show stat's CSV, its JSON, and /metrics.
func TestCountersAgreeEverywhere(t *testing.T) {
	t.Parallel()
	a, b := newBackend(t, "a"), newBackend(t, "b")
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mon := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg, admin, _ := adminConfig(t, fe, fmt.Sprintf("  retries = 0\n%s  server \"dead\" { address = %q }\n", servers(a, b), dead))
	startSluice(t, cfg+fmt.Sprintf("listen \"metrics\" {\n  mode = \"http\"\n  bind = [%q]\n  prometheus {}\n}\n", mon))

	// 30 sessions from 6 concurrent clients: round robin sends 10 to the
	// dead server (refused: econ), 20 get a 2-byte greeting (40 bytes).
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				if c, _, err := tryDial(fe, 2*time.Second); err == nil {
					c.Close()
				}
			}
		}()
	}
	wg.Wait()
	want := map[string]map[string]float64{
		"fe/FRONTEND": {"stot": 30, "bout": 40},
		"be/BACKEND":  {"stot": 30, "bout": 40, "econ": 10},
		"be/a":        {"stot": 10, "bout": 20},
		"be/dead":     {"stot": 10, "econ": 10, "bout": 0},
	}
	eventually(t, 3*time.Second, "every session logged", func() bool { return stat(t, admin)["fe/FRONTEND"]["scur"] == "0" })
	csvRows := stat(t, admin)
	js, _ := ctl(t, admin, "show stat json")
	var jsonRows [][]struct {
		Field struct{ Name string } `json:"field"`
		Value struct{ Value any }   `json:"value"`
	}
	if err := json.Unmarshal([]byte(js), &jsonRows); err != nil {
		t.Fatal(err)
	}
	jsonVal := map[string]map[string]any{}
	for _, r := range jsonRows {
		m := map[string]any{}
		for _, f := range r {
			m[f.Field.Name] = f.Value.Value
		}
		jsonVal[fmt.Sprint(m["pxname"])+"/"+fmt.Sprint(m["svname"])] = m
	}
	fams := scrape(t, "http://"+mon+"/metrics")
	metric := map[string]string{"stot": "sessions_total", "bout": "bytes_out_total", "econ": "connection_errors_total"}
	for row, fields := range want {
		px, sv, _ := strings.Cut(row, "/")
		for field, w := range fields {
			if got := csvRows[row][field]; got != fmt.Sprint(w) {
				t.Errorf("CSV %s %s = %s, want %v", row, field, got, w)
			}
			if got := jsonVal[row][field]; got != w {
				t.Errorf("JSON %s %s = %v, want %v", row, field, got, w)
			}
			kind, labels := "server", map[string]string{"proxy": px, "server": sv}
			switch sv {
			case "FRONTEND":
				kind, labels = "frontend", map[string]string{"proxy": px}
			case "BACKEND":
				kind, labels = "backend", map[string]string{"proxy": px}
			}
			if kind == "frontend" && field == "econ" {
				continue
			}
			if got, ok := value(fams, "sluice_"+kind+"_"+metric[field], labels); !ok || got != w {
				t.Errorf("metrics sluice_%s_%s%v = %v (found %v), want %v", kind, metric[field], labels, got, ok, w)
			}
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		resp, _ := http.Get("http://" + mon + "/metrics")
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = resp.Body
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
		resp.Body.Close()
	} else {
		t.Log("promtool not installed: checked with the Prometheus library's parser only")
	}
}
