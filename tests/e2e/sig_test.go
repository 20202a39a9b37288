package e2e

import "syscall"

var sigusr2 = syscall.SIGUSR2
