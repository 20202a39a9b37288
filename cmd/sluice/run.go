package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"sluice/daemon/engine"
	"sluice/daemon/logging"
	"sluice/hcl"
	"sluice/version"
)

func runCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	paths := configFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	*paths = append(*paths, fs.Args()...)
	if len(*paths) == 0 {
		fmt.Fprintln(stderr, "sluice run: no configuration given (-f PATH)")
		return 2
	}
	log := slog.New(logging.NewHandler(stderr, slog.LevelInfo))
	// SLUICE_CPUPROFILE=FILE writes a pprof CPU profile until sluice stops.
	if path := os.Getenv("SLUICE_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	cfg, _, diags := hcl.Load(*paths)
	hcl.WriteDiagnostics(stderr, diags)
	if cfg == nil {
		return 1
	}
	// Catch signals before serving, so none is lost in between.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)

	e, err := engine.New(context.Background(), cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if err := e.Listen(); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	e.Start()
	log.Info("sluice started", "version", version.Version, "pid", os.Getpid(), "maxconn", e.Process.MaxConn())
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP, syscall.SIGUSR2:
			log.Warn("reload is not available in this version; restart sluice to apply a new configuration", "signal", sig.String())
			continue
		case syscall.SIGINT:
			log.Info("fast stop", "signal", sig.String())
			e.Stop(1)
			return 0
		default:
			grace := cfg.Global.HardStopAfter
			log.Info("graceful stop: no new connections, waiting for sessions", "signal", sig.String(), "hard_stop_after", grace.String())
			if !e.Stop(grace) {
				log.Warn("hard_stop_after reached: closing remaining sessions")
			}
			return 0
		}
	}
	return 0
}
