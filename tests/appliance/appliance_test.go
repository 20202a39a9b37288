// Package appliance builds appliance images with bin/sluice-image and
// boots them under qemu (TCG: KVM does not work on these machines): the
// initramfs with -kernel/-initrd, and the UEFI disk under OVMF. Traffic
// goes from the host through qemu's user networking and forwarded ports.
package appliance

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var repo, _ = filepath.Abs("../..")

// kernelPackage is the Debian kernel the tests boot, pinned so that a
// new kernel in the archive does not change what is tested.
const kernelPackage = "linux-image-6.1.0-56-amd64"

const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	efiStub  = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
)

func need(t *testing.T, path, pkg string) {
	t.Helper()
	var err error
	if strings.HasPrefix(path, "/") {
		_, err = os.Stat(path)
	} else {
		_, err = exec.LookPath(path)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (Debian package %s; tests/deps.sh installs it)", path, pkg)
		}
		t.Skipf("%s is missing (Debian package %s)", path, pkg)
	}
}

var kernelOnce struct {
	sync.Once
	path string
	err  error
}

// kernelDeb downloads the pinned kernel package once (not installed),
// falling back to the current one if the archive no longer has it.
func kernelDeb(t *testing.T) string {
	t.Helper()
	need(t, "apt-get", "apt")
	kernelOnce.Do(func() {
		dir := filepath.Join(repo, "dist", "kernel")
		out, err := exec.Command(filepath.Join(repo, "packaging", "kernel-deb.sh"), dir, kernelPackage).Output()
		if err != nil {
			t.Logf("pinned kernel %s unavailable (%v); using linux-image-amd64's", kernelPackage, err)
			out, err = exec.Command(filepath.Join(repo, "packaging", "kernel-deb.sh"), dir).Output()
		}
		kernelOnce.path, kernelOnce.err = strings.TrimSpace(string(out)), err
	})
	if kernelOnce.err != nil {
		t.Fatalf("downloading the kernel package: %v", kernelOnce.err)
	}
	return kernelOnce.path
}

// The appliance's own configuration: an HTTP frontend and a TCP one, both
// balancing over two servers that are listen sections answering by
// themselves, so that the appliance needs nothing outside it.
const applianceConfig = `
global {
  hard_stop_after = "5s"
}
defaults {
  timeout {
    connect = "2s"
    client  = "30s"
    server  = "30s"
  }
}
frontend "web" {
  mode            = "http"
  bind            = [":8080"]
  default_backend = "web_pair"
}
backend "web_pair" {
  mode    = "http"
  balance = "roundrobin"
  server "one" { address = "127.0.0.1:9001" }
  server "two" { address = "127.0.0.1:9002" }
}
frontend "raw" {
  mode            = "tcp"
  bind            = [":9000"]
  default_backend = "tcp_pair"
}
backend "tcp_pair" {
  mode    = "tcp"
  balance = "roundrobin"
  server "one" { address = "127.0.0.1:9001" }
  server "two" { address = "127.0.0.1:9002" }
}
listen "one" {
  mode = "http"
  bind = ["127.0.0.1:9001"]
  http_request "return" {
    content_type = "text/plain"
    body         = "%s one\n"
  }
}
listen "two" {
  mode = "http"
  bind = ["127.0.0.1:9002"]
  http_request "return" {
    content_type = "text/plain"
    body         = "%s two\n"
  }
}
`

func config(greeting string) string { return fmt.Sprintf(applianceConfig, greeting, greeting) }

// writeSpec writes an image.hcl and the configuration into dir.
func writeSpec(t *testing.T, dir, outputs, extra string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "sluice.hcl"), []byte(config("hello from")), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := fmt.Sprintf(`
config   = "sluice.hcl"
binaries = %q
hostname = "appliance-test"
outputs  = [%s]
sysctl   = { "net.core.somaxconn" = "2048" }
admin {
  address = "0.0.0.0:9999"
  level   = "admin"
}
%s
`, filepath.Join(repo, "bin"), outputs, extra)
	p := filepath.Join(dir, "image.hcl")
	if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// build runs sluice-image build and returns how long it took.
func build(t *testing.T, spec, out string, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(filepath.Join(repo, "bin", "sluice-image"), append([]string{"build", "-f", spec, "-o", out}, args...)...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1763856000")
	outb, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sluice-image build: %v\n%s", err, outb)
	}
	t.Logf("sluice-image build:\n%s", outb)
	return time.Since(start)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// vm is a running qemu with the appliance's ports forwarded to the host.
type vm struct {
	t                   *testing.T
	cmd                 *exec.Cmd
	console             *bytes.Buffer
	mu                  *sync.Mutex
	http, tcp, admin    int
	monitor             string
	exited              chan struct{}
	exitErr             error
	started, firstReply time.Time
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// boot starts qemu with the given machine arguments plus user networking
// through a network card of the given model.
func boot(t *testing.T, nic string, machine ...string) *vm {
	t.Helper()
	need(t, "qemu-system-x86_64", "qemu-system-x86")
	v := &vm{t: t, console: &bytes.Buffer{}, mu: &sync.Mutex{}, http: freePort(t), tcp: freePort(t), admin: freePort(t),
		monitor: filepath.Join(t.TempDir(), "monitor.sock"), exited: make(chan struct{})}
	args := append([]string{"-m", "512", "-nographic", "-no-reboot", "-monitor", "unix:" + v.monitor + ",server,nowait",
		"-nic", fmt.Sprintf("user,model=%s,hostfwd=tcp:127.0.0.1:%d-:8080,hostfwd=tcp:127.0.0.1:%d-:9000,hostfwd=tcp:127.0.0.1:%d-:9999", nic, v.http, v.tcp, v.admin)},
		machine...)
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	v.cmd.Stdout = lockedWriter{v.mu, v.console}
	v.cmd.Stderr = lockedWriter{v.mu, v.console}
	v.started = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.exitErr = v.cmd.Wait(); close(v.exited) }()
	t.Cleanup(func() {
		select {
		case <-v.exited:
		default:
			v.cmd.Process.Kill() // by PID: our own child
			<-v.exited
		}
		if t.Failed() {
			t.Logf("console:\n%s", v.log())
		}
	})
	return v
}

func (v *vm) log() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.console.String()
}

// get sends one HTTP request through the forwarded port.
func get(port int) (string, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: appliance\r\nConnection: close\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	s := string(b)
	if !strings.HasPrefix(s, "HTTP/1.1 200") {
		return "", fmt.Errorf("answer: %q", s)
	}
	return s[strings.Index(s, "\r\n\r\n")+4:], nil
}

// waitServing waits for the first HTTP answer.
func (v *vm) waitServing(timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := get(v.http); err == nil {
			v.firstReply = time.Now()
			v.t.Logf("boot to first answer: %.1f s", v.firstReply.Sub(v.started).Seconds())
			return
		}
		select {
		case <-v.exited:
			v.t.Fatalf("qemu exited before the appliance answered: %v", v.exitErr)
		default:
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("the appliance did not answer within %s", timeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// answers sends n requests over HTTP (through the http frontend) or over
// the tcp frontend, and counts the bodies.
func answers(t *testing.T, port, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		body, err := get(port)
		if err != nil {
			t.Fatalf("request %d through port %d: %v", i, port, err)
		}
		seen[strings.TrimSpace(body)]++
	}
	return seen
}

// admin sends one runtime API command over the forwarded admin port,
// with an optional payload.
func (v *vm) adminCmd(cmd, payload string) string {
	v.t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", v.admin), 5*time.Second)
	if err != nil {
		v.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if payload != "" {
		fmt.Fprintf(c, "%s <<END\n%sEND\n", cmd, payload)
	} else {
		fmt.Fprintf(c, "%s\n", cmd)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// powerOff presses the ACPI power button and waits for qemu to exit.
func (v *vm) powerOff() {
	v.t.Helper()
	c, err := net.Dial("unix", v.monitor)
	if err != nil {
		v.t.Fatal(err)
	}
	defer c.Close()
	bufio.NewReader(c).ReadString(')') // the "(qemu)" prompt
	fmt.Fprint(c, "system_powerdown\n")
	select {
	case <-v.exited:
	case <-time.After(60 * time.Second):
		v.t.Fatal("the appliance did not power off within 60 s of the power button")
	}
	if v.exitErr != nil {
		v.t.Fatalf("qemu exited with %v", v.exitErr)
	}
	log := v.log()
	for _, want := range []string{"power button pressed", "sluice stopped", "powering off", "reboot: Power down"} {
		if !strings.Contains(log, want) {
			v.t.Errorf("console lacks %q after the power button", want)
		}
	}
}

// exercise checks an appliance that serves: balancing over HTTP and TCP,
// a configuration pushed over the admin socket and reloaded, a refused
// bad configuration, then the power button.
func exercise(t *testing.T, v *vm) {
	if got := answers(t, v.http, 4); got["hello from one"] != 2 || got["hello from two"] != 2 {
		t.Errorf("HTTP through the appliance: %v, want two answers from each server", got)
	}
	if got := answers(t, v.tcp, 4); got["hello from one"] != 2 || got["hello from two"] != 2 {
		t.Errorf("TCP through the appliance: %v, want two connections to each server", got)
	}
	if out := v.adminCmd("set config", "backend {\n"); !strings.Contains(out, "nothing changed") || !strings.Contains(out, "<payload>:1:") {
		t.Errorf("a broken configuration: %q, want its error with line and column", out)
	}
	if out := v.adminCmd("set config", config("reloaded")); !strings.Contains(out, "Configuration written") {
		t.Fatalf("set config: %q", out)
	}
	if out := v.adminCmd("reload", ""); !strings.HasPrefix(out, "OK generation 2") {
		t.Fatalf("reload: %q", out)
	}
	if got := answers(t, v.http, 2); got["reloaded one"] != 1 || got["reloaded two"] != 1 {
		t.Errorf("after the reload: %v, want the new configuration's answers", got)
	}
	// The new generation took the admin address over from the old one.
	if out := v.adminCmd("show proc", ""); !strings.Contains(out, "worker") || !strings.Contains(out, " 2 ") {
		t.Errorf("show proc after the reload, over the admin socket: %q, want the generation 2 worker", out)
	}
	log := v.log()
	for _, want := range []string{"sluice-init: loaded", "DHCP lease 10.0.2.15/24", "sysctl net.core.somaxconn = 2048", "started sluice", "reloaded"} {
		if !strings.Contains(log, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	v.powerOff()
}

func TestBootInitramfs(t *testing.T) {
	t.Parallel()
	deb := kernelDeb(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	took := build(t, writeSpec(t, dir, `"initramfs"`, ""), out, "--kernel-deb", deb)
	t.Logf("initramfs build took %.1f s", took.Seconds())
	st, err := os.Stat(filepath.Join(out, "initramfs.cpio.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 12<<20 {
		t.Errorf("initramfs is %d bytes, over 12 MB", st.Size())
	}
	t.Logf("initramfs: %.1f MiB", float64(st.Size())/(1<<20))
	// Only what the issue allows: -kernel, -initrd, console=ttyS0.
	v := boot(t, "virtio-net-pci", "-kernel", filepath.Join(out, "vmlinuz"), "-initrd", filepath.Join(out, "initramfs.cpio.gz"), "-append", "console=ttyS0")
	v.waitServing(3 * time.Minute)
	exercise(t, v)
}

func TestBootUEFIDisk(t *testing.T) {
	t.Parallel()
	need(t, ovmfCode, "ovmf")
	need(t, efiStub, "systemd-boot-efi")
	deb := kernelDeb(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	took := build(t, writeSpec(t, dir, `"disk"`, `disk {
  size = "64m"
  data = "8m"
}`), out, "--kernel-deb", deb)
	t.Logf("disk build took %.1f s", took.Seconds())
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	b, err := os.ReadFile(ovmfVars)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(vars, b, 0o644)
	machine := []string{"-machine", "q35",
		"-drive", "if=pflash,format=raw,readonly=on,file=" + ovmfCode,
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "file=" + filepath.Join(out, "disk.img") + ",format=raw,if=virtio"}
	v := boot(t, "e1000e", machine...)
	v.waitServing(3 * time.Minute)
	log := v.log()
	if !strings.Contains(log, "EFI stub") {
		t.Errorf("console does not show the kernel started by the EFI stub")
	}
	if !strings.Contains(log, "mounted data partition") {
		t.Errorf("the data partition was not mounted")
	}
	exercise(t, v)

	// The configuration pushed over the admin socket was kept on the data
	// partition: a second boot of the same disk serves it.
	v = boot(t, "e1000", machine...) // the same disk on another card
	v.waitServing(3 * time.Minute)
	if got := answers(t, v.http, 2); got["reloaded one"] != 1 || got["reloaded two"] != 1 {
		t.Errorf("after a reboot: %v, want the configuration pushed before it", got)
	}
	v.powerOff()
}

// tree hashes every file under dir.
func tree(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReproducible(t *testing.T) {
	t.Parallel()
	need(t, efiStub, "systemd-boot-efi")
	deb := kernelDeb(t)
	dir := t.TempDir()
	spec := writeSpec(t, dir, `"oci", "initramfs", "disk"`, "")
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	build(t, spec, a, "--kernel-deb", deb)
	build(t, spec, b, "--kernel-deb", deb)
	ha, hb := tree(t, a), tree(t, b)
	for _, want := range []string{"vmlinuz", "initramfs.cpio.gz", "disk.img", "sluice-oci.tar", "oci/index.json", "oci/oci-layout"} {
		if _, ok := ha[want]; !ok {
			t.Errorf("%s was not built", want)
		}
	}
	if len(ha) != len(hb) {
		t.Errorf("the builds made %d and %d files", len(ha), len(hb))
	}
	for name, sum := range ha {
		if hb[name] != sum {
			t.Errorf("%s differs between two builds of the same inputs", name)
		}
	}
}

func TestCheckReportsPositions(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "sluice.hcl"), []byte(config("x")), 0o644)
	p := filepath.Join(dir, "image.hcl")
	os.WriteFile(p, []byte("config = \"sluice.hcl\"\narch = \"sparc\"\nnetwork \"eth0\" {\n  address = \"10.0.0.1\"\n}\n"), 0o644)
	out, err := exec.Command(filepath.Join(repo, "bin", "sluice-image"), "check", "-f", p).CombinedOutput()
	if err == nil {
		t.Fatalf("check accepted a bad image.hcl:\n%s", out)
	}
	for _, want := range []string{p + ":2:8: error: Unknown architecture", p + ":4:13: error: Invalid address"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	os.WriteFile(p, []byte("config = \"sluice.hcl\"\n"), 0o644)
	if out, err := exec.Command(filepath.Join(repo, "bin", "sluice-image"), "check", "-f", p).CombinedOutput(); err != nil {
		t.Errorf("check refused a minimal image.hcl: %v\n%s", err, out)
	}
}
