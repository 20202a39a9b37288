package packages

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// debianRoot returns a writable copy of the cached Debian 12 root, as an
// overlay that is unmounted when the test ends.
func debianRoot(t *testing.T) string {
	t.Helper()
	need(t, "debootstrap", "debootstrap")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("installing into a chroot needs root")
		}
		t.Skip("installing into a chroot needs root")
	}
	base := debianBase(t)
	work := t.TempDir()
	merged := filepath.Join(work, "merged")
	for _, d := range []string{"upper", "work", "merged"} {
		os.MkdirAll(filepath.Join(work, d), 0o755)
	}
	opts := "lowerdir=" + base + ",upperdir=" + work + "/upper,workdir=" + work + "/work"
	if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("overlay: %v", err)
	}
	if err := syscall.Mount("proc", merged+"/proc", "proc", 0, ""); err != nil {
		t.Fatalf("proc: %v", err)
	}
	t.Cleanup(func() {
		syscall.Unmount(merged+"/proc", syscall.MNT_DETACH)
		syscall.Unmount(merged, syscall.MNT_DETACH)
	})
	return merged
}

func chroot(t *testing.T, root string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("chroot", append([]string{root}, args...)...).CombinedOutput()
	return string(out), err
}

func mustChroot(t *testing.T, root string, args ...string) string {
	t.Helper()
	out, err := chroot(t, root, args...)
	if err != nil {
		t.Fatalf("chroot %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestDebInstallRemovePurge installs the .deb into a Debian 12 root and
// checks what an administrator would: files and modes, the user, the unit
// where systemd looks, the shipped configuration checks; then that remove
// keeps the configuration and purge leaves nothing.
func TestDebInstallRemovePurge(t *testing.T) {
	root := debianRoot(t)
	run(t, "packaging/build.sh", version, ldflags)
	data, err := os.ReadFile(filepath.Join(repo, outputs[0]))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "var/tmp/sluice.deb"), data, 0o644)
	mustChroot(t, root, "dpkg", "-i", "/var/tmp/sluice.deb")

	for path, mode := range map[string]os.FileMode{
		"usr/sbin/sluice": 0o755, "etc/sluice/sluice.hcl": 0o644, "usr/lib/systemd/system/sluice.service": 0o644,
		"usr/lib/sysusers.d/sluice.conf": 0o644, "usr/lib/tmpfiles.d/sluice.conf": 0o644, "etc/default/sluice": 0o644,
	} {
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("/%s: %v, mode %v; want %v", path, err, st.Mode().Perm(), mode)
		}
	}
	if st, err := os.Stat(filepath.Join(root, "etc/sluice/conf.d")); err != nil || !st.IsDir() {
		t.Errorf("/etc/sluice/conf.d: %v", err)
	}
	if out := mustChroot(t, root, "getent", "passwd", "sluice"); !strings.Contains(out, "/usr/sbin/nologin") {
		t.Errorf("sluice user: %q", out)
	}
	// systemd finds the unit (and it is enabled for boot).
	if out := mustChroot(t, root, "systemctl", "is-enabled", "sluice.service"); strings.TrimSpace(out) != "enabled" {
		t.Errorf("systemctl is-enabled: %q", out)
	}
	mustChroot(t, root, "/usr/sbin/sluice", "check", "-f", "/etc/sluice/sluice.hcl", "-f", "/etc/sluice/conf.d")

	mustChroot(t, root, "dpkg", "-r", "sluice")
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/sluice")); err == nil {
		t.Error("dpkg -r left /usr/sbin/sluice")
	}
	if _, err := os.Stat(filepath.Join(root, "etc/sluice/sluice.hcl")); err != nil {
		t.Error("dpkg -r removed the configuration; only purge may")
	}
	mustChroot(t, root, "dpkg", "-P", "sluice")
	for _, p := range []string{"etc/sluice", "etc/default/sluice", "usr/lib/systemd/system/sluice.service"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("dpkg -P left /%s", p)
		}
	}
	if out, err := chroot(t, root, "getent", "passwd", "sluice"); err == nil {
		t.Errorf("dpkg -P left the user: %q", out)
	}
	if out := mustChroot(t, root, "sh", "-c", "dpkg -l sluice 2>&1 || true"); strings.Contains(out, "ii  sluice") || strings.Contains(out, "rc  sluice") {
		t.Errorf("dpkg still knows sluice:\n%s", out)
	}
}

// TestRpmInstallIntoScratchRoot installs the .rpm into an empty root.
func TestRpmInstallIntoScratchRoot(t *testing.T) {
	need(t, "rpm", "rpm")
	run(t, "packaging/build.sh", version, ldflags)
	scratch := t.TempDir()
	out, err := exec.Command("rpm", "--root", scratch, "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts", "-i", filepath.Join(repo, outputs[2])).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -i: %v\n%s", err, out)
	}
	for _, p := range []string{"usr/sbin/sluice", "etc/sluice/sluice.hcl", "etc/sysconfig/sluice", "usr/lib/systemd/system/sluice.service", "usr/share/man/man8/sluice.8.gz"} {
		if _, err := os.Stat(filepath.Join(scratch, p)); err != nil {
			t.Errorf("rpm did not install /%s", p)
		}
	}
}
