package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func sluice(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(sluiceBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return o.String(), e.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

func TestCheckReportsEveryProblemWithPosition(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte(`frontend "fe" {
  bind            = ["127.0.0.1:99999"]
  default_backend = "nowhere"
}
backend "be" {
  balance = "fastest"
  server "s" { address = "127.0.0.1:80" }
}
`), 0o644)
	_, stderr, code := sluice(t, "check", "-f", bad)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, want := range []string{bad + ":2:21: error: Invalid bind address", bad + ":3:21: error: Unknown backend", bad + ":6:13: error: Unknown balance algorithm"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

func TestCheckLoadsDirectoriesInOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "10-frontend.hcl"), []byte(`frontend "fe" {
  bind = ["127.0.0.1:1"]
  default_backend = "be"
}
`), 0o644)
	os.WriteFile(filepath.Join(dir, "20-backend.hcl"), []byte(`backend "be" {
  server "s" { address = "127.0.0.1:2" }
}
`), 0o644)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not configuration"), 0o644)
	stdout, stderr, code := sluice(t, "check", "-f", dir)
	if code != 0 || !strings.Contains(stdout, "1 frontends, 1 backends, 2 files") {
		t.Errorf("check of a conf.d directory: code %d\n%s%s", code, stdout, stderr)
	}
	// A duplicate across files points at the second file.
	os.WriteFile(filepath.Join(dir, "30-dup.hcl"), []byte("\nbackend \"be\" {\n}\n"), 0o644)
	_, stderr, code = sluice(t, "check", "-f", dir)
	if code != 1 || !strings.Contains(stderr, "30-dup.hcl:2:9: error: Duplicate proxy name") {
		t.Errorf("duplicate across files: code %d\n%s", code, stderr)
	}
}

func TestRunRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("global {\n  threads = \"x\"\n}\n"), 0o644)
	_, stderr, code := sluice(t, "run", "-f", bad)
	if code != 1 || !strings.Contains(stderr, bad+":2:13:") {
		t.Errorf("run with a bad configuration: code %d\n%s", code, stderr)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	stdout, _, code := sluice(t, "version", "-v")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, re := range []string{`(?m)^sluice version \S+$`, `Linking: static \(CGO disabled\)`, `DNS resolver: pure Go`, `Go version: go1\.`,
		`Target: ` + runtime.GOOS + `/` + runtime.GOARCH, `Features: .*\+TCP`} {
		if !regexp.MustCompile(re).MatchString(stdout) {
			t.Errorf("version -v lacks %s:\n%s", re, stdout)
		}
	}
}

// TestQuickstart runs examples/quickstart.hcl as make run does and checks
// that two requests are answered by the two demo servers, which are listen
// sections of the same file.
func TestQuickstart(t *testing.T) {
	for _, port := range []string{"8080", "9001", "9002"} {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			t.Fatalf("port %s is in use: the quickstart needs 8080, 9001 and 9002", port)
		}
	}
	quickstart, _ := filepath.Abs("../../examples/quickstart.hcl")
	cfg, _ := os.ReadFile(quickstart)
	d := startSluice(t, string(cfg))
	var bodies []string
	for range 2 {
		_, body := fetch(t, "http://localhost:8080/")
		bodies = append(bodies, body)
	}
	slices.Sort(bodies)
	if want := []string{"Hello from server one\n", "Hello from server two\n"}; !slices.Equal(bodies, want) {
		t.Errorf("two requests got %q, want %q", bodies, want)
	}
	d.waitLog(`quickstart demo/(one|two) \d+/\d+/\d+/\d+/\d+ 200 \d+ - - ---- .* "GET / HTTP/1.1"`, 2*time.Second)
}

// TestWarnsWhenMaxConnNeedsMoreFiles starts sluice under a hard limit of
// 1024 open files with maxconn 1000 (2000 descriptors needed).
func TestWarnsWhenMaxConnNeedsMoreFiles(t *testing.T) {
	t.Parallel()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prlimit (util-linux) is not installed")
		}
		t.Skip("prlimit (util-linux) is not installed")
	}
	path := filepath.Join(t.TempDir(), "s.hcl")
	os.WriteFile(path, []byte(fmt.Sprintf(`global { maxconn = 1000 }
listen "l" {
  bind = ["127.0.0.1:%d"]
  server "s" { address = "127.0.0.1:1" }
}
`, freePort(t))), 0o644)
	cmd := exec.Command(prlimit, "--nofile=256:1024", sluiceBin, "run", "--no-master", "-f", path)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()
	eventually(t, 5*time.Second, "sluice to start", func() bool { return strings.Contains(out.String(), "sluice started") })
	if !regexp.MustCompile(`maxconn 1000 needs 20\d\d open files but the limit is 1024 \(hard 1024\): only about 4\d\d connections fit`).MatchString(out.String()) {
		t.Errorf("no open-files warning with the numbers:\n%s", out.String())
	}
}
