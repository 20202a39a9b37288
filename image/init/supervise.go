package main

import (
	"encoding/binary"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/image/initconf"
)

// stopTimeout bounds a graceful stop of sluice before it is killed.
const stopTimeout = 30 * time.Second

// supervisor runs sluice and is the one reaper of every child.
type supervisor struct {
	cfg     *initconf.Config
	pid     int // sluice's master, 0 while not running
	backoff time.Duration
	started time.Time
	signals chan os.Signal
	power   chan struct{}
}

func newSupervisor(cfg *initconf.Config) *supervisor {
	s := &supervisor{cfg: cfg, signals: make(chan os.Signal, 16), power: make(chan struct{}, 1)}
	signal.Notify(s.signals, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGUSR2, unix.SIGPWR)
	return s
}

// args is sluice's command line: master mode, the configuration, and the
// admin socket image.hcl asked for.
func (s *supervisor) args() []string {
	args := []string{initconf.SluiceBinary, "run", "-f", s.cfg.Config}
	if a := s.cfg.Admin; a != nil {
		args = append(args, "--admin-socket", "tcp://"+a.Address, "--admin-level", a.Level)
	}
	return args
}

func (s *supervisor) start() {
	os.MkdirAll("/run/sluice", 0o755)
	pid, err := syscall.ForkExec(initconf.SluiceBinary, s.args(), &syscall.ProcAttr{
		Env:   []string{"PATH=/usr/bin:/bin", "HOME=/"},
		Files: []uintptr{0, 1, 2}, // the console
	})
	if err != nil {
		logf("cannot start sluice: %v", err)
		s.pid = 0
		return
	}
	s.pid, s.started = pid, time.Now()
	logf("started sluice, pid %d", pid)
}

// run supervises sluice until a stop is asked for, then stops it.
func (s *supervisor) run() {
	go watchPowerButton(s.power)
	s.start()
	var restart <-chan time.Time
	if s.pid == 0 {
		restart = s.scheduleRestart()
	}
	for {
		select {
		case <-s.power:
			logf("power button pressed")
			s.stop()
			return
		case <-restart:
			restart = nil
			s.start()
			if s.pid == 0 {
				restart = s.scheduleRestart()
			}
		case sig := <-s.signals:
			switch sig {
			case unix.SIGCHLD:
				if s.reap() && restart == nil {
					restart = s.scheduleRestart()
				}
			case unix.SIGHUP, unix.SIGUSR2:
				if s.pid != 0 {
					logf("reload requested (%s)", sig)
					unix.Kill(s.pid, unix.SIGUSR2)
				}
			default: // SIGTERM, SIGINT (Ctrl-Alt-Del), SIGPWR
				logf("stop requested (%s)", sig)
				s.stop()
				return
			}
		}
	}
}

// reap collects every exited child; it reports whether sluice was one.
func (s *supervisor) reap() bool {
	sluiceExited := false
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return sluiceExited
		}
		if pid == s.pid {
			s.pid = 0
			sluiceExited = true
			if ws.Signaled() {
				logf("sluice (pid %d) was killed by %s", pid, ws.Signal())
			} else {
				logf("sluice (pid %d) exited with status %d", pid, ws.ExitStatus())
			}
		}
	}
}

// scheduleRestart waits longer after each crash in a row: 1 s, doubling
// up to 30 s; a run of a minute or more starts the count over.
func (s *supervisor) scheduleRestart() <-chan time.Time {
	if time.Since(s.started) > time.Minute {
		s.backoff = 0
	}
	s.backoff = min(max(2*s.backoff, time.Second), 30*time.Second)
	logf("restarting sluice in %s", s.backoff)
	return time.After(s.backoff)
}

// stop asks sluice to stop gracefully (it drains its sessions within
// hard_stop_after) and waits, killing it after stopTimeout.
func (s *supervisor) stop() {
	if s.pid == 0 {
		return
	}
	logf("stopping sluice (pid %d)", s.pid)
	unix.Kill(s.pid, unix.SIGTERM)
	deadline := time.After(stopTimeout)
	for s.pid != 0 {
		select {
		case sig := <-s.signals:
			if sig == unix.SIGCHLD {
				s.reap()
			}
		case <-deadline:
			logf("sluice did not stop within %s: killing it", stopTimeout)
			unix.Kill(s.pid, unix.SIGKILL)
			deadline = nil
		}
	}
	logf("sluice stopped")
}

// watchPowerButton reads the input devices for the power key, which the
// ACPI button driver reports when the machine is asked to power off.
func watchPowerButton(power chan<- struct{}) {
	const evKey, keyPower = 1, 116
	devices, _ := filepath.Glob("/dev/input/event*")
	for _, dev := range devices {
		f, err := os.Open(dev)
		if err != nil {
			continue
		}
		go func() {
			// struct input_event: a timeval (16 bytes on 64-bit), then
			// type u16, code u16, value s32.
			ev := make([]byte, 24)
			for {
				if _, err := f.Read(ev); err != nil {
					return
				}
				typ := binary.LittleEndian.Uint16(ev[16:])
				code := binary.LittleEndian.Uint16(ev[18:])
				value := int32(binary.LittleEndian.Uint32(ev[20:]))
				if typ == evKey && code == keyPower && value == 1 {
					select {
					case power <- struct{}{}:
					default:
					}
				}
			}
		}()
	}
}
