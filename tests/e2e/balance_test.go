package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// config renders a one-frontend, one-backend configuration.
func config(feAddr, backendBody string, extra ...string) string {
	return fmt.Sprintf(`
defaults {
  log = "global"
  timeout {
    connect = "1s"
    client  = "30s"
    server  = "30s"
  }
}
frontend "fe" {
  bind            = [%q]
  default_backend = "be"
  %s
}
backend "be" {
%s
}
`, feAddr, strings.Join(extra, "\n"), backendBody)
}

func servers(bs ...*backend) string {
	var b strings.Builder
	for _, s := range bs {
		fmt.Fprintf(&b, "  server %q { address = %q }\n", s.name, s.addr)
	}
	return b.String()
}

func TestRoundRobinOverThree(t *testing.T) {
	t.Parallel()
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startSluice(t, config(fe, `balance = "roundrobin"`+"\n"+servers(a, b, c)))
	got := map[string]int{}
	for range 31 {
		got[greet(t, fe)]++
	}
	for _, name := range []string{"a", "b", "c"} {
		if n := got[name]; n < 10 || n > 11 {
			t.Errorf("server %s got %d of 31 connections, want 10 or 11 (all: %v)", name, n, got)
		}
	}
}

func TestLeastConnWithLongLivedConnections(t *testing.T) {
	t.Parallel()
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startSluice(t, config(fe, `balance = "leastconn"`+"\n"+servers(a, b, c)))
	held := map[string][]*client{}
	for range 9 {
		cl, g := dial(t, fe)
		held[g] = append(held[g], cl)
	}
	for _, name := range []string{"a", "b", "c"} {
		if len(held[name]) != 3 {
			t.Fatalf("9 held connections spread %d/%d/%d, want 3/3/3", len(held["a"]), len(held["b"]), len(held["c"]))
		}
	}
	// Free b's connections: the next three must all go to b, the least loaded.
	for _, cl := range held["b"] {
		cl.Close()
	}
	time.Sleep(200 * time.Millisecond) // let sluice see the closes
	for i := range 3 {
		cl, g := dial(t, fe)
		defer cl.Close()
		if g != "b" {
			t.Errorf("connection %d after freeing b went to %s, want b", i, g)
		}
	}
	for _, list := range held {
		for _, cl := range list {
			cl.Close()
		}
	}
}

func TestHealthCheckDownAndUp(t *testing.T) {
	t.Parallel()
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, `
  check {
    interval = "200ms"
    fall     = 2
    rise     = 2
  }
`+servers(a, b, c)))
	for range 6 {
		greet(t, fe)
	}
	killed := time.Now()
	b.kill()
	line := d.waitLog(`Server be/b is DOWN, reason: Layer4 connection problem, info: "Connection refused", check duration: \d+ms\. 2 active and 0 backup servers left\.`, 3*time.Second)
	// interval x fall, plus one interval of phase and scheduling slack.
	if took := time.Since(killed); took > 200*time.Millisecond*3+300*time.Millisecond {
		t.Errorf("DOWN after %v, want within interval×fall (400ms) plus slack", took)
	}
	t.Log(line)
	acceptedBefore := b.accepted.Load()
	for i := range 20 {
		if g := greet(t, fe); g == "b" {
			t.Fatalf("connection %d went to b, which is DOWN", i)
		}
	}
	if n := b.accepted.Load(); n != acceptedBefore {
		t.Errorf("the DOWN server accepted %d connections", n-acceptedBefore)
	}
	b.restart()
	d.waitLog(`Server be/b is UP, reason: Layer4 check passed, check duration: \d+ms\. 3 active and 0 backup servers online\.`, 3*time.Second)
	got := map[string]int{}
	for range 9 {
		got[greet(t, fe)]++
	}
	if got["b"] != 3 {
		t.Errorf("after coming back, b got %d of 9 connections, want 3 (%v)", got["b"], got)
	}
}

func TestBackupTakesOverWhenAllAreDown(t *testing.T) {
	t.Parallel()
	a, b, bk := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "backup")
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  check {
    interval = "100ms"
    fall     = 1
    rise     = 1
  }
%s
  server "backup" {
    address = %q
    backup  = true
  }
`, servers(a, b), bk.addr)))
	for range 4 {
		if g := greet(t, fe); g == "backup" {
			t.Fatal("the backup server took traffic while active servers were up")
		}
	}
	a.kill()
	b.kill()
	d.waitLog(`Server be/a is DOWN`, 3*time.Second)
	d.waitLog(`Server be/b is DOWN`, 3*time.Second)
	d.waitLog(`Server be/[ab] is DOWN.*0 active and 1 backup servers left`, time.Second) // whichever went last
	for range 4 {
		if g := greet(t, fe); g != "backup" {
			t.Fatalf("with every active server down, got %q, want backup", g)
		}
	}
	a.restart()
	d.waitLog(`Server be/a is UP`, 3*time.Second)
	if g := greet(t, fe); g != "a" {
		t.Errorf("after a came back, got %q, want a", g)
	}
}

func TestRetriesRedispatch(t *testing.T) {
	t.Parallel()
	good := newBackend(t, "good")
	deadAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nobody listens
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	d := startSluice(t, config(fe, fmt.Sprintf(`
  retries    = 2
  redispatch = true
  server "dead" { address = %q }
  server "good" { address = %q }
`, deadAddr, good.addr)))
	for i := range 10 {
		if g := greet(t, fe); g != "good" {
			t.Fatalf("connection %d: got %q", i, g)
		}
	}
	// Those that first went to the dead server were redispatched on the
	// last retry: "+2" in the retries field.
	eventually(t, 2*time.Second, "10 log lines", func() bool { return len(d.logLines(` fe be/`)) == 10 })
	if n := len(d.logLines(`fe be/good \d+/\d+/\d+ \d+ -- \d+/\d+/\d+/\d+/\+2 `)); n == 0 {
		t.Errorf("no session was logged as redispatched after 2 retries")
	}
}
