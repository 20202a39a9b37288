package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

var netnsCount atomic.Int64

// netns is a network namespace made for one test, removed at its end.
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	needTool(t, "ip", "iproute2")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("network namespaces need root")
		}
		t.Skip("network namespaces need root")
	}
	n := &netns{t: t, name: fmt.Sprintf("sluice-%d-%d", os.Getpid(), netnsCount.Add(1))}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	return n
}

// run runs a command inside the namespace.
func (n *netns) run(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name, name}, args...)...).CombinedOutput()
	return string(out), err
}

func (n *netns) must(name string, args ...string) string {
	n.t.Helper()
	out, err := n.run(name, args...)
	if err != nil {
		n.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// TestNetApplyRemove adds a pool's addresses in a namespace the test made,
// checks that apply is idempotent and that remove leaves the interface
// exactly as it was, and that mistakes are reported clearly.
func TestNetApplyRemove(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.must("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	ns.must("ip", "link", "set", "veth0", "up")
	ns.must("ip", "addr", "add", "198.18.0.1/24", "dev", "veth0")
	ns.must("ip", "addr", "add", "198.18.1.1/24", "dev", "veth1")
	before := ns.must("ip", "-o", "addr", "show")

	cfg := filepath.Join(t.TempDir(), "pool.hcl")
	os.WriteFile(cfg, []byte(`
source_pool "p" {
  addresses = ["198.18.0.10/31", "198.18.0.12"]
  ports     = "20000-20999"
  interface = "veth0"
}
backend "b" {
  source_pool = "p"
  server "s" { address = "198.18.1.2:80" }
}
`), 0o644)
	plan := ns.must(sluiceBin, "net", "plan", "-f", cfg)
	for _, a := range []string{"198.18.0.10", "198.18.0.11", "198.18.0.12"} {
		if !strings.Contains(plan, "add "+a+"/32 dev veth0") {
			t.Errorf("plan lacks %s:\n%s", a, plan)
		}
	}
	if ns.must("ip", "-o", "addr", "show") != before {
		t.Error("plan changed the addresses")
	}
	ns.must(sluiceBin, "net", "apply", "-f", cfg)
	after := ns.must("ip", "-o", "addr", "show", "dev", "veth0")
	for _, a := range []string{"198.18.0.10/32", "198.18.0.11/32", "198.18.0.12/32"} {
		if !strings.Contains(after, a) {
			t.Errorf("apply did not add %s:\n%s", a, after)
		}
	}
	if out := ns.must(sluiceBin, "net", "apply", "-f", cfg); strings.TrimSpace(out) != "nothing to do" {
		t.Errorf("a second apply changed something: %s", out)
	}
	ns.must(sluiceBin, "net", "remove", "-f", cfg)
	if got := ns.must("ip", "-o", "addr", "show"); got != before {
		t.Errorf("after remove the addresses differ:\nbefore:\n%s\nafter:\n%s", before, got)
	}

	// Clear errors: a missing interface, an address owned elsewhere.
	os.WriteFile(cfg, []byte(`source_pool "p" {
  addresses = ["198.18.1.1"]
  interface = "veth0"
}
`), 0o644)
	if out, err := ns.run(sluiceBin, "net", "apply", "-f", cfg); err == nil || !strings.Contains(out, "198.18.1.1 is already owned by interface veth1") {
		t.Errorf("apply of an address owned elsewhere: %v\n%s", err, out)
	}
	os.WriteFile(cfg, []byte(`source_pool "p" {
  addresses = ["198.18.0.20"]
  interface = "eth9"
}
`), 0o644)
	if out, err := ns.run(sluiceBin, "net", "apply", "-f", cfg); err == nil || !strings.Contains(out, `interface "eth9" not found`) {
		t.Errorf("apply to a missing interface: %v\n%s", err, out)
	}
}

// TestNetNATRules installs the SNAT table of a nat pool in a namespace,
// reads it back through the nftables library, and checks that apply twice
// and remove leave the ruleset as it was.
func TestNetNATRules(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.must("ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
	ns.must("ip", "link", "set", "veth0", "up")
	cfg := filepath.Join(t.TempDir(), "nat.hcl")
	os.WriteFile(cfg, []byte(`
source_pool "n" {
  addresses = ["198.18.0.8/30"]
  ports     = "20000-20999"
  interface = "veth0"
  nat       = true
}
`), 0o644)
	plan := ns.must(sluiceBin, "net", "plan", "-f", cfg)
	if !strings.Contains(plan, "ip saddr 198.18.0.8 tcp sport 20000-23999 snat ip to tcp sport map @pool_n") ||
		!strings.Contains(plan, "# 23000-23999 : 198.18.0.11 . 20000-20999") {
		t.Errorf("plan:\n%s", plan)
	}
	if got := natTables(t, ns); len(got) != 0 {
		t.Fatalf("a fresh namespace has rules: %v", got)
	}
	ns.must(sluiceBin, "net", "apply", "-f", cfg)
	ns.must(sluiceBin, "net", "apply", "-f", cfg)
	if got := natTables(t, ns); len(got) != 2 || got[0] != "sluice/pool_n/4000" || got[1] != "sluice/postrouting/snat" {
		t.Errorf("after apply twice: %v; want a map of 4000 local ports and one SNAT rule in sluice/postrouting", got)
	}
	ns.must(sluiceBin, "net", "remove", "-f", cfg)
	if got := natTables(t, ns); len(got) != 0 {
		t.Errorf("after remove: %v", got)
	}
	if out := ns.must("ip", "-o", "addr", "show", "dev", "veth0"); strings.Contains(out, "198.18.0.") {
		t.Errorf("remove left addresses:\n%s", out)
	}
}

// natTables lists, through the nftables library, the maps (with their
// element counts) and the SNAT rules in the namespace's tables.
func natTables(t *testing.T, ns *netns) []string {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns.name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ts, _ := c.ListTables()
	for _, tb := range ts {
		sets, _ := c.GetSets(tb)
		for _, set := range sets {
			elems, _ := c.GetSetElements(set)
			out = append(out, fmt.Sprintf("%s/%s/%d", tb.Name, set.Name, len(elems)))
		}
		chains, _ := c.ListChainsOfTableFamily(tb.Family)
		for _, ch := range chains {
			if ch.Table.Name != tb.Name {
				continue
			}
			rules, _ := c.GetRules(tb, ch)
			for _, r := range rules {
				for _, e := range r.Exprs {
					if n, ok := e.(*expr.NAT); ok && n.Type == expr.NATTypeSourceNAT {
						out = append(out, tb.Name+"/"+ch.Name+"/snat")
					}
				}
			}
		}
	}
	return out
}
