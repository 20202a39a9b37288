package packages

import (
	"bufio"
	"fmt"
	"github.com/google/nftables"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sluice/tests/loadgen"
	"sluice/tests/serve"
)

// container is a Debian 12 root booted with its own systemd by
// systemd-nspawn, over an overlay so the cached root stays clean. It shares
// the host's network.
type container struct {
	t      *testing.T
	name   string
	upper  string
	nspawn *exec.Cmd
	leader string
}

var containers atomic.Int64

// bootContainer boots the Debian root; extra arguments go to nspawn.
func bootContainer(t *testing.T, extra ...string) *container {
	t.Helper()
	need(t, "systemd-nspawn", "systemd-container")
	need(t, "debootstrap", "debootstrap")
	base := debianBase(t)
	c := &container{t: t, name: fmt.Sprintf("sluice-test-%d-%d", os.Getpid(), containers.Add(1)), upper: t.TempDir()}
	// The launching shell moves into a cgroup of its own in both
	// hierarchies, so that containers do not collide, then becomes nspawn.
	script := `for h in systemd unified; do mkdir -p /sys/fs/cgroup/$h/$0 && echo $$ > /sys/fs/cgroup/$h/$0/cgroup.procs; done
exec systemd-nspawn --quiet --register=no --keep-unit -b --console=pipe --overlay="$1:$2:/" -D "$1" -M "$0" "${@:3}"`
	c.nspawn = exec.Command("bash", append([]string{"-c", script, c.name, base, c.upper}, extra...)...)
	if err := c.nspawn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(c.nspawn.Process.Pid), "-x", "systemd").Output()
		if l := strings.TrimSpace(string(out)); l != "" {
			c.leader = l
			if st, _ := c.sh("systemctl is-system-running"); strings.HasPrefix(st, "running") || strings.HasPrefix(st, "degraded") {
				return c
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the container's systemd did not reach running")
	return nil
}

// sh runs a shell command inside the container.
func (c *container) sh(cmd string) (string, error) {
	out, err := exec.Command("nsenter", "-t", c.leader, "-a", "sh", "-c", cmd).CombinedOutput()
	return string(out), err
}

func (c *container) mustSh(cmd string) string {
	c.t.Helper()
	out, err := c.sh(cmd)
	if err != nil {
		c.t.Fatalf("in the container, %s: %v\n%s", cmd, err, out)
	}
	return out
}

// put writes a file into the container.
func (c *container) put(path string, data []byte) {
	c.t.Helper()
	full := filepath.Join(c.upper, path)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := os.WriteFile(full, data, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func (c *container) stop() {
	if c.leader != "" {
		c.sh("systemctl poweroff")
	}
	done := make(chan struct{})
	go func() { c.nspawn.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		c.nspawn.Process.Kill()
		<-done
	}
	for _, h := range []string{"systemd", "unified"} {
		dir := filepath.Join("/sys/fs/cgroup", h, c.name)
		var dirs []string
		filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err == nil && info.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- { // deepest first
			os.Remove(dirs[i])
		}
	}
}

// greeter is a backend on the host that greets each connection.
func greeter(t *testing.T) string {
	ln, err := serve.Loopback(func(c net.Conn) {
		c.Write([]byte("hello\n"))
		b := make([]byte, 1)
		c.Read(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func freePort(t *testing.T) int {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestUnderSystemd installs the package into a container running systemd
// and operates it as an administrator would: the service runs sandboxed;
// reload under load loses nothing; a broken configuration leaves it
// serving, with the reason in systemctl status; an upgrade under load
// keeps the main PID and runs the new binary; stop drains; purge cleans up.
func TestUnderSystemd(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	run(t, "packaging/build.sh", "0.0.2", "-s -w -X sluice/version.Version=0.0.2")
	next, _ := os.ReadFile(filepath.Join(repo, "dist/sluice_0.0.2_amd64.deb"))
	run(t, "packaging/build.sh", version, ldflags)
	first, _ := os.ReadFile(filepath.Join(repo, outputs[0]))

	c := bootContainer(t)
	c.put("var/tmp/sluice-1.deb", first)
	c.put("var/tmp/sluice-2.deb", next)
	c.mustSh("dpkg -i /var/tmp/sluice-1.deb")
	if out, _ := c.sh("systemctl is-active sluice"); strings.TrimSpace(out) != "active" {
		st, _ := c.sh("systemctl status sluice --no-pager")
		t.Fatalf("sluice is %q after install:\n%s", out, st)
	}
	props := c.mustSh("systemctl show sluice -p User -p MainPID -p ProtectSystem -p NoNewPrivileges -p CapabilityBoundingSet")
	for _, want := range []string{"User=sluice", "ProtectSystem=strict", "NoNewPrivileges=yes", "CapabilityBoundingSet=cap_net_bind_service"} {
		if !strings.Contains(props, want) {
			t.Errorf("service properties lack %s:\n%s", want, props)
		}
	}
	if out := c.mustSh("ps -o user= -p $(systemctl show sluice -p MainPID --value)"); strings.TrimSpace(out) != "sluice" {
		t.Errorf("the master runs as %q", out)
	}
	mainPID := strings.TrimSpace(c.mustSh("systemctl show sluice -p MainPID --value"))

	// A frontend of our own through conf.d, applied with systemctl reload.
	backend := greeter(t)
	fe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.put("etc/sluice/conf.d/test.hcl", []byte(fmt.Sprintf("frontend \"t\" {\n  bind = [%q]\n  default_backend = \"tb\"\n}\nbackend \"tb\" {\n  server \"s\" { address = %q }\n}\n", fe, backend)))
	c.mustSh("systemctl reload sluice")
	stop := make(chan struct{})
	result := loadgen.Start(fe, 4, "hello\n", stop)
	for range 5 {
		time.Sleep(150 * time.Millisecond)
		c.mustSh("systemctl reload sluice")
	}
	time.Sleep(150 * time.Millisecond)
	close(stop)
	if r := result(); r.Failed != 0 || r.OK == 0 {
		t.Errorf("systemctl reload under load: %d ok, %d failed (first: %v)", r.OK, r.Failed, r.First)
	}

	// A broken file: the reload fails, the service keeps serving, status says why.
	c.put("etc/sluice/conf.d/zz-broken.hcl", []byte("backend \"x\" {\n  balance = \"fastest\"\n}\n"))
	if out, err := c.sh("systemctl reload sluice"); err == nil {
		t.Errorf("reload of a broken configuration succeeded: %s", out)
	}
	status, _ := c.sh("systemctl status sluice --no-pager -l")
	if active, _ := c.sh("systemctl is-active sluice"); strings.TrimSpace(active) != "active" || !strings.Contains(status, "zz-broken.hcl:2:13") {
		t.Errorf("after a broken reload: %q\n%s", active, status)
	}
	os.Remove(filepath.Join(c.upper, "etc/sluice/conf.d/zz-broken.hcl"))

	// Upgrade to N+1 under load: same main PID, new binary, nothing lost.
	stop = make(chan struct{})
	result = loadgen.Start(fe, 4, "hello\n", stop)
	time.Sleep(200 * time.Millisecond)
	c.mustSh("dpkg -i /var/tmp/sluice-2.deb")
	time.Sleep(300 * time.Millisecond)
	close(stop)
	if r := result(); r.Failed != 0 || r.OK == 0 {
		t.Errorf("package upgrade under load: %d ok, %d failed (first: %v)", r.OK, r.Failed, r.First)
	}
	if pid := strings.TrimSpace(c.mustSh("systemctl show sluice -p MainPID --value")); pid != mainPID {
		t.Errorf("MainPID changed from %s to %s across the upgrade", mainPID, pid)
	}
	if out := c.mustSh("sluice status --control /run/sluice/control.sock"); !strings.Contains(out, "version 0.0.2") {
		t.Errorf("after the upgrade the master runs:\n%s", out)
	}

	// Stop drains: a session under way keeps working until it ends.
	held, err := net.Dial("tcp", fe)
	if err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(held).ReadString('\n')
	stopped := make(chan struct{})
	go func() { c.sh("systemctl stop sluice"); close(stopped) }()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-stopped:
		t.Error("systemctl stop returned while a session was under way")
	default:
	}
	if _, err := net.DialTimeout("tcp", fe, time.Second); err == nil {
		t.Error("new connections are accepted while stopping")
	}
	held.Close()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Error("the service did not stop once its last session ended")
	}

	c.mustSh("dpkg -P sluice")
	for _, p := range []string{"/usr/sbin/sluice", "/etc/sluice", "/lib/systemd/system/sluice.service", "/etc/systemd/system/multi-user.target.wants/sluice.service"} {
		if out, err := c.sh("test -e " + p); err == nil {
			t.Errorf("dpkg -P left %s %s", p, out)
		}
	}
	if out, err := c.sh("getent passwd sluice"); err == nil {
		t.Errorf("dpkg -P left the user: %s", out)
	}
}

// TestNetUnit runs sluice-net.service under systemd, in a network
// namespace of the test's own: starting it adds the pool's addresses and
// its nftables table with only CAP_NET_ADMIN; stopping it removes both.
func TestNetUnit(t *testing.T) {
	if os.Getenv("CI") != "true" && os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns := fmt.Sprintf("sluice-unit-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	inNS := func(args ...string) string {
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	inNS("ip", "link", "add", "pool0", "type", "veth", "peer", "name", "pool1")
	inNS("ip", "link", "set", "pool0", "up")
	// The container's systemd brings lo up: compare the pool's interface.
	before := inNS("ip", "-o", "addr", "show", "dev", "pool0")

	run(t, "packaging/build.sh", version, ldflags)
	deb, _ := os.ReadFile(filepath.Join(repo, outputs[0]))
	// nspawn grants CAP_NET_ADMIN only with a private network: ask for it.
	c := bootContainer(t, "--network-namespace-path=/run/netns/"+ns, "--capability=CAP_NET_ADMIN")
	c.put("var/tmp/sluice.deb", deb)
	c.mustSh("dpkg -i /var/tmp/sluice.deb")
	c.put("etc/sluice/conf.d/pool.hcl", []byte(`source_pool "egress" {
  addresses = ["198.18.5.10/31"]
  ports     = "20000-20999"
  interface = "pool0"
  nat       = true
}
`))
	if out, err := c.sh("systemctl restart sluice-net"); err != nil {
		st, _ := c.sh("journalctl -u sluice-net --no-pager | tail -20")
		t.Fatalf("systemctl restart sluice-net: %v\n%s\n%s", err, out, st)
	}
	props := c.mustSh("systemctl show sluice-net -p ActiveState -p CapabilityBoundingSet -p NoNewPrivileges")
	for _, want := range []string{"ActiveState=active", "CapabilityBoundingSet=cap_net_admin", "NoNewPrivileges=yes"} {
		if !strings.Contains(props, want) {
			t.Errorf("sluice-net properties lack %s:\n%s", want, props)
		}
	}
	addrs := inNS("ip", "-o", "addr", "show", "dev", "pool0")
	for _, a := range []string{"198.18.5.10/32", "198.18.5.11/32"} {
		if !strings.Contains(addrs, a) {
			t.Errorf("after start, pool0 lacks %s:\n%s", a, addrs)
		}
	}
	if !sluiceTable(t, ns) {
		t.Error("after start, no nftables table inet sluice in the namespace")
	}
	c.mustSh("systemctl stop sluice-net")
	if got := inNS("ip", "-o", "addr", "show", "dev", "pool0"); got != before {
		t.Errorf("after stop the addresses differ:\nbefore:\n%s\nafter:\n%s", before, got)
	}
	if sluiceTable(t, ns) {
		t.Error("after stop, the nftables table inet sluice is still there")
	}
}

// sluiceTable reports whether the namespace holds sluice's nftables table.
func sluiceTable(t *testing.T, ns string) bool {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == "sluice" {
			return true
		}
	}
	return false
}
