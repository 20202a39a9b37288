package master

import (
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// handoverSignals are blocked across the master's re-exec: their default
// action would kill the process in the moment between execve and the new
// image's signal.Notify. The mask survives execve and Go honours it for
// these signals, so they stay pending until UnblockSignals.
var handoverSignals = []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT}

func signalSet() *unix.Sigset_t {
	var set unix.Sigset_t
	for _, s := range handoverSignals {
		set.Val[(s-1)/64] |= 1 << ((uint(s) - 1) % 64)
	}
	return &set
}

// blockForExec blocks the hand-over signals on this thread, which must be
// the one calling execve; undo reverses it if exec fails.
func blockForExec() (undo func()) {
	runtime.LockOSThread()
	unix.PthreadSigmask(unix.SIG_BLOCK, signalSet(), nil)
	return func() {
		unix.PthreadSigmask(unix.SIG_UNBLOCK, signalSet(), nil)
		runtime.UnlockOSThread()
	}
}

// UnblockSignals lets the hand-over signals in again; call it once
// signal.Notify is in place. Pending ones are delivered then. A worker
// calls it too: it inherits the mask its master had when it forked.
func UnblockSignals() { unix.PthreadSigmask(unix.SIG_UNBLOCK, signalSet(), nil) }
