// Command sluice-init is the appliance's PID 1. It mounts the kernel's
// filesystems, loads the network drivers, sets the hostname and sysctls,
// brings the network up (static or DHCP, with lease renewal), then runs
// sluice as master and supervises it: restarts it with backoff if it
// crashes, reaps orphans, turns SIGHUP/SIGUSR2 into a reload, and on
// SIGTERM or the ACPI power button stops sluice gracefully, syncs and
// powers off. Everything it does is logged on the console.
package main

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"sluice/image/initconf"
)

var boot = time.Now()

// logf writes one line to the console, with the time since boot.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%8.3f] sluice-init: %s\n", time.Since(boot).Seconds(), fmt.Sprintf(format, args...))
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "sluice-init is the appliance's PID 1; it does not run as an ordinary program")
		os.Exit(2)
	}
	logf("starting")
	mountAll()
	cfg, err := initconf.Read(initconf.Path)
	if err != nil {
		logf("cannot read %s: %v; continuing with DHCP and no sysctls", initconf.Path, err)
		cfg = &initconf.Config{Hostname: "sluice", Config: initconf.SluiceConfig}
	}
	loadModules(cfg.Modules)
	waitEntropy()
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		logf("hostname: %v", err)
	}
	applySysctls(cfg.Sysctls)
	raiseLimits()
	if cfg.DataPartition != "" {
		cfg.Config = persistentConfig(cfg.DataPartition, cfg.Config)
	}
	// Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	if err := setupNetwork(cfg); err != nil {
		logf("network: %v", err)
	}
	s := newSupervisor(cfg)
	s.run() // returns when asked to stop
	powerOff()
}

// mountAll mounts what the kernel does not: /proc, /sys, /dev (devtmpfs),
// /run and /tmp.
func mountAll() {
	for _, m := range []struct {
		fstype, target, data string
		flags                uintptr
	}{
		{"proc", "/proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"devtmpfs", "/dev", "mode=0755", unix.MS_NOSUID},
		{"devpts", "/dev/pts", "gid=5,mode=620", unix.MS_NOSUID | unix.MS_NOEXEC},
		{"tmpfs", "/run", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/tmp", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
	} {
		os.MkdirAll(m.target, 0o755)
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil && err != unix.EBUSY {
			logf("mount %s on %s: %v", m.fstype, m.target, err)
		}
	}
	os.Symlink("/proc/self/fd", "/dev/fd")
}

// loadModules loads modules in the order given, which puts each after
// those it depends on.
func loadModules(names []string) {
	loaded := 0
	for _, name := range names {
		f, err := os.Open(filepath.Join(initconf.ModulesDir, name))
		if err != nil {
			logf("module %s: %v", name, err)
			continue
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			logf("module %s: %v", name, err)
			continue
		}
		loaded++
	}
	logf("loaded %d of %d kernel modules", loaded, len(names))
}

// waitEntropy blocks until the kernel's random pool is ready. A blocking
// getrandom is what makes the kernel generate entropy from timer jitter
// when the machine has no hardware source (a VM without virtio-rng);
// without it, the DHCP client's transaction IDs would wait for ever.
func waitEntropy() {
	start := time.Now()
	b := make([]byte, 1)
	for {
		if _, err := unix.Getrandom(b, 0); err != unix.EINTR {
			break
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		logf("random pool ready after %.1f s", d.Seconds())
	}
}

func applySysctls(sysctls map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(sysctls)) {
		v := sysctls[k]
		p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			logf("sysctl %s = %s: %v", k, v, err)
			continue
		}
		logf("sysctl %s = %s", k, v)
	}
}

// raiseLimits lifts the open-files limit to the kernel's ceiling, which
// sluice inherits: a balancer needs two descriptors per connection.
func raiseLimits() {
	max := uint64(1 << 20)
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		fmt.Sscan(string(b), &max)
	}
	lim := unix.Rlimit{Cur: max, Max: max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		logf("open files limit: %v", err)
	}
}

// powerOff ends the appliance: every process is asked to stop, then
// killed; filesystems are synced; the machine is powered off.
func powerOff() {
	unix.Kill(-1, unix.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	logf("powering off")
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	for {
		time.Sleep(time.Hour)
	}
}
