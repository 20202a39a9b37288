// Package packages checks the .deb and .rpm that make packages builds:
// reproducible bytes, contents and modes, metadata, lintian, and the
// shipped configuration.
package packages

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const version = "0.0.1"

var repo, _ = filepath.Abs("../..")

func need(t *testing.T, tool, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (Debian package %s; tests/deps.sh installs it)", tool, pkg)
		}
		t.Skipf("%s is not installed (Debian package %s)", tool, pkg)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1763856000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// debianBase is the cached Debian 12 root (tests/packages/rootfs.sh),
// built on first use: the path is the script's last line, after
// debootstrap's log when it builds.
func debianBase(t *testing.T) string {
	t.Helper()
	out := strings.TrimSpace(run(t, "tests/packages/rootfs.sh"))
	return out[strings.LastIndexByte(out, '\n')+1:]
}

var outputs = []string{
	"dist/sluice_" + version + "_amd64.deb", "dist/sluice_" + version + "_arm64.deb",
	"dist/sluice-" + version + ".x86_64.rpm", "dist/sluice-" + version + ".aarch64.rpm",
}

func digests(t *testing.T) map[string][32]byte {
	out := map[string][32]byte{}
	for _, f := range outputs {
		b, err := os.ReadFile(filepath.Join(repo, f))
		if err != nil {
			t.Fatal(err)
		}
		out[f] = sha256.Sum256(b)
	}
	return out
}

const ldflags = "-s -w -X sluice/version.Version=" + version

// TestPackages builds twice and checks everything on the result.
func TestPackages(t *testing.T) {
	run(t, "packaging/build.sh", version, ldflags)
	first := digests(t)
	run(t, "packaging/build.sh", version, ldflags)
	for f, d := range digests(t) {
		if d != first[f] {
			t.Errorf("%s differs between two builds of the same commit and SOURCE_DATE_EPOCH", f)
		}
	}

	t.Run("deb contents", func(t *testing.T) {
		need(t, "dpkg-deb", "dpkg")
		listing := run(t, "dpkg-deb", "-c", outputs[0])
		for _, want := range []string{
			`-rwxr-xr-x root/root +\d+ \S+ \S+ ./usr/sbin/sluice\n`,
			`-rw-r--r-- root/root +\d+ \S+ \S+ ./etc/sluice/sluice.hcl\n`,
			`drwxr-xr-x root/root +0 \S+ \S+ ./etc/sluice/conf.d/\n`,
			`./usr/lib/systemd/system/sluice.service\n`, `./usr/lib/systemd/system/sluice-net.service\n`, `./usr/lib/sysusers.d/sluice.conf\n`,
			`./usr/lib/tmpfiles.d/sluice.conf\n`, `./etc/default/sluice\n`,
			`./usr/share/doc/sluice/sysctl-tuning.conf.example\n`, `./usr/share/man/man8/sluice.8.gz\n`,
			`./usr/share/bash-completion/completions/sluice\n`, `./usr/share/doc/sluice/copyright\n`,
		} {
			if !regexp.MustCompile(want).MatchString(listing) {
				t.Errorf("the .deb lacks %s:\n%s", want, listing)
			}
		}
		conffiles := run(t, "dpkg-deb", "-I", outputs[0], "conffiles")
		if !strings.Contains(conffiles, "/etc/sluice/sluice.hcl") || !strings.Contains(conffiles, "/etc/default/sluice") {
			t.Errorf("conffiles: %q", conffiles)
		}
		control := run(t, "dpkg-deb", "-f", outputs[1], "Package", "Version", "Architecture")
		if control != "Package: sluice\nVersion: "+version+"-1\nArchitecture: arm64\n" {
			t.Errorf("arm64 control fields:\n%s", control)
		}
	})

	t.Run("lintian", func(t *testing.T) {
		need(t, "lintian", "lintian")
		cmd := exec.Command("lintian", "--tag-display-limit", "0", outputs[0])
		cmd.Dir = repo
		out, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "E:") || strings.HasPrefix(line, "W:") {
				t.Errorf("lintian: %s", line)
			}
		}
	})

	t.Run("rpm", func(t *testing.T) {
		need(t, "rpm", "rpm")
		info := run(t, "rpm", "-qip", outputs[2])
		for _, want := range []string{`Name +: sluice`, `Version +: ` + version, `Architecture: x86_64`, `License +: Apache-2.0`} {
			if !regexp.MustCompile(want).MatchString(info) {
				t.Errorf("rpm -qip lacks %s:\n%s", want, info)
			}
		}
		files := run(t, "rpm", "-qlp", outputs[3])
		for _, want := range []string{"/usr/sbin/sluice", "/etc/sluice/sluice.hcl", "/etc/sysconfig/sluice", "/usr/lib/systemd/system/sluice.service"} {
			if !strings.Contains(files, want+"\n") {
				t.Errorf("the aarch64 rpm lacks %s", want)
			}
		}
		if cfg := run(t, "rpm", "-qcp", outputs[2]); !strings.Contains(cfg, "/etc/sluice/sluice.hcl") {
			t.Errorf("sluice.hcl is not marked as configuration: %s", cfg)
		}
	})

	t.Run("rpmlint", func(t *testing.T) {
		need(t, "rpmlint", "rpmlint")
		// Findings accepted, each with its reason.
		accepted := map[string]string{
			"no-signature":               "packages are signed at release with the distributor's key, not in CI",
			"no-changelogname-tag":       "the history is the repository's; there is no RPM changelog",
			"no-binary":                  "rpmlint does not recognise a static Go executable as a binary",
			"non-coherent-filename":      "the file name sluice-VERSION.ARCH.rpm is the interface the project promises",
			"only-non-binary-in-usr-lib": "the unit, sysusers and tmpfiles files belong in /usr/lib, where systemd reads them",
			"manpage-not-compressed":     "gzip is what Fedora and RHEL use; rpmlint's default configuration asks for bzip2",
			"no-manual-page-for-binary":  "follows from the bzip2 expectation above; sluice(8) is shipped gzip-compressed",
			"invalid-license":            "Apache-2.0 is the SPDX identifier; rpmlint 2.4's list predates SPDX names",
		}
		cmd := exec.Command("rpmlint", outputs[2])
		cmd.Dir = repo
		out, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			m := regexp.MustCompile(`^sluice\.\S+: [EW]: (\S+)`).FindStringSubmatch(line)
			if m != nil && accepted[m[1]] == "" {
				t.Errorf("rpmlint: %s", line)
			}
		}
	})

	t.Run("shipped configuration checks", func(t *testing.T) {
		var out bytes.Buffer
		cmd := exec.Command(filepath.Join(repo, "dist/build/sluice-host"), "check", "-f", "packaging/sluice.hcl")
		cmd.Dir, cmd.Stdout, cmd.Stderr = repo, &out, &out
		if err := cmd.Run(); err != nil || strings.Contains(out.String(), "warning") {
			t.Errorf("sluice check of the shipped configuration: %v\n%s", err, out.String())
		}
	})
}
