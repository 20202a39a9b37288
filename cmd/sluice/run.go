package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"syscall"
	"time"

	"sluice/daemon/api"
	"sluice/daemon/engine"
	"sluice/daemon/listen"
	"sluice/daemon/logging"
	"sluice/daemon/master"
	"sluice/daemon/metrics"
	"sluice/daemon/proxy"
	"sluice/hcl"
	"sluice/version"
)

// defaultControl is where the master listens for sluice reload.
const defaultControl = "/run/sluice/control.sock"

func runCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	paths := configFlags(fs)
	noMaster := fs.Bool("no-master", false, "run a single process, without master and workers")
	control := fs.String("control", defaultControl, "control socket of the master (for sluice reload)")
	worker := fs.Bool("worker", false, "internal: run as a worker of a master")
	takeover := fs.String("takeover", "", "with --no-master: take the listening sockets of the sluice behind this admin socket, then make it drain")
	adminSocket := fs.String("admin-socket", "", "one more admin socket beside the configuration's: a unix socket path or tcp://IP:port")
	adminLevel := fs.String("admin-level", "admin", "level of --admin-socket: user, operator or admin")
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
	// SLUICE_TRACE=FILE writes a runtime execution trace (go tool trace)
	// until sluice stops.
	if path := os.Getenv("SLUICE_TRACE"); path != "" {
		if f, err := os.Create(path); err == nil && trace.Start(f) == nil {
			defer trace.Stop()
		}
	}
	// SLUICE_ALLOCPROFILE=FILE writes a pprof profile of allocations when sluice stops.
	if path := os.Getenv("SLUICE_ALLOCPROFILE"); path != "" {
		defer func() {
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	var extraAdmin *hcl.AdminSocket
	var workerArgs []string
	if *adminSocket != "" {
		switch *adminLevel {
		case "user", "operator", "admin":
		default:
			fmt.Fprintf(stderr, "sluice run: --admin-level %q: levels are user, operator and admin\n", *adminLevel)
			return 2
		}
		extraAdmin = &hcl.AdminSocket{Path: *adminSocket, Level: *adminLevel, Mode: 0o600}
		workerArgs = []string{"--admin-socket", *adminSocket, "--admin-level", *adminLevel}
	}
	if !*noMaster && !*worker {
		opt := master.Options{Paths: *paths, Control: *control, Args: os.Args[1:], WorkerArgs: workerArgs, Log: log}
		if extraAdmin != nil {
			opt.ExtraAdmin = extraAdmin.Path
		}
		return master.Run(opt)
	}
	if *worker {
		log = log.With("worker", os.Getpid())
	}
	if *takeover != "" && !*noMaster {
		fmt.Fprintln(stderr, "sluice run: --takeover needs --no-master")
		return 2
	}
	return serve(*paths, *worker, *takeover, extraAdmin, log, stderr)
}

// serve runs one generation in this process: standalone (--no-master) or
// as a master's worker, which inherits its sockets and says when it is ready.
func serve(paths []string, worker bool, takeover string, extraAdmin *hcl.AdminSocket, log *slog.Logger, stderr io.Writer) int {
	cfg, _, diags := hcl.Load(paths)
	hcl.WriteDiagnostics(stderr, diags)
	if cfg == nil {
		return 1
	}
	if extraAdmin != nil {
		cfg.Global.AdminSockets = append(cfg.Global.AdminSockets, *extraAdmin)
	}
	// Catch signals before serving, so none is lost in between.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR2)
	master.UnblockSignals() // a worker inherits its master's mask, which may block them

	inherited, err := listen.Inherited()
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if takeover != "" {
		taken, err := api.FetchListeners(takeover)
		if err != nil {
			log.Error("cannot take the listeners over", "socket", takeover, "err", err)
			return 1
		}
		for addr, ln := range taken {
			inherited[addr] = ln
		}
		log.Info("took the listening sockets over", "socket", takeover, "count", len(taken))
	}
	if activated := listen.Activation(); len(activated) > 0 {
		for _, fe := range cfg.Frontends {
			for _, b := range fe.Binds {
				if fd, ok := listen.Match(b.Address, activated); ok {
					if ln, err := listen.FromFD(uintptr(fd), b.Address); err == nil {
						inherited[b.Address] = ln
						log.Info("using the socket systemd passed", "addr", b.Address)
					}
				}
			}
		}
	}
	e, err := engine.New(context.Background(), cfg, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	e.Service = func(fe *proxy.Frontend) http.Handler { return service(fe, e, log) }
	if err := e.Listen(inherited); err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	// Runtime changes (maintenance, drain, weights) made on the previous
	// generation survive: ask it over its admin socket, which ours replaces.
	// An inherited TCP one has nobody behind it before the first
	// generation (a command would wait in its queue).
	predecessor := takeover != "" || os.Getenv("SLUICE_GENERATION") != "1"
	for _, a := range cfg.Global.AdminSockets {
		if a.Level == "user" {
			continue
		}
		if inherited[a.Path] != nil && !predecessor {
			break
		}
		if state, err := api.Command(a.Path, "show servers state"); err == nil {
			if n := api.ApplyServersState(e, state); n > 0 {
				log.Info("kept the runtime state of the previous generation", "servers", n)
			}
		}
		break
	}
	e.Start()
	if takeover != "" {
		// We accept on the same sockets now: the predecessor may drain.
		if _, err := api.Command(takeover, "_drain"); err != nil {
			log.Warn("cannot tell the predecessor to drain", "err", err)
		}
	}
	var admins []*api.Server
	// What a successor takes over: the frontends' sockets and those of
	// the admin sockets over TCP, by the names the master uses too.
	listeners := func() map[string]*net.TCPListener {
		out := e.Listeners()
		for _, srv := range admins {
			if ln := srv.TCPListener(); ln != nil {
				out[srv.Path()] = ln
			}
		}
		return out
	}
	for _, a := range cfg.Global.AdminSockets {
		srv, err := api.Listen(a, inherited[a.Path], log)
		if err != nil {
			log.Error("cannot open the admin socket", "path", a.Path, "err", err)
			continue
		}
		srv.Listeners = listeners
		srv.Engine = e
		srv.ConfigPaths = paths
		srv.OnDrain = func() { sigs <- syscall.SIGTERM }
		admins = append(admins, srv)
	}
	for _, srv := range admins {
		go srv.Serve() // once admins is complete: listeners reads it
	}
	// Retiring: no new connection and no new command; what is under way
	// goes on. (Admin sockets close too: a successor may be taking the
	// address over.)
	stopAccepting := func() {
		e.StopAccepting()
		for _, srv := range admins {
			srv.Close()
		}
	}
	// On the way out, stop answering, but let commands under way finish:
	// a reload asked over this socket answers after we were told to drain.
	defer func() {
		for _, srv := range admins {
			srv.Shutdown(10 * time.Second)
		}
	}()
	if worker {
		if fd, err := strconv.Atoi(os.Getenv("SLUICE_READY_FD")); err == nil {
			// Say we serve, then answer the master's health probes.
			probe := os.NewFile(uintptr(fd), "probe")
			probe.Write([]byte{1})
			go func() {
				b := make([]byte, 1)
				for {
					if _, err := probe.Read(b); err != nil {
						// The master is gone (its end of the socket closed):
						// drain and exit rather than serve unsupervised.
						log.Warn("master gone: draining and exiting")
						sigs <- syscall.SIGTERM
						return
					}
					if b[0] == master.ProbeStop {
						// A new generation serves: stop accepting before
						// saying so (the master answers the reload then),
						// and drain.
						stopAccepting()
						probe.Write(b)
						sigs <- syscall.SIGTERM
						return
					}
					probe.Write(b)
				}
			}()
		}
		log.Info("worker serving", "generation", os.Getenv("SLUICE_GENERATION"), "maxconn", e.Process.MaxConn())
	} else {
		log.Info("sluice started", "version", version.Version, "pid", os.Getpid(), "maxconn", e.Process.MaxConn())
	}
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP, syscall.SIGUSR2:
			if worker {
				continue // reloads are the master's
			}
			log.Warn("reload needs the master: run without --no-master, or restart to apply a new configuration", "signal", sig.String())
		case syscall.SIGINT:
			log.Info("fast stop", "signal", sig.String())
			e.Stop(1)
			return 0
		default:
			grace := cfg.Global.HardStopAfter
			stopAccepting()
			log.Info("graceful stop: no new connections, waiting for sessions", "signal", sig.String(), "hard_stop_after", grace.String())
			if !e.Stop(grace) {
				log.Warn("hard_stop_after reached: closing remaining sessions")
			}
			return 0
		}
	}
	return 0
}

// service is the handler of a frontend that sluice answers itself: its
// stats page and Prometheus metrics. It is nil for proxying frontends.
func service(fe *proxy.Frontend, e *engine.Engine, log *slog.Logger) http.Handler {
	cfg := fe.Config
	if cfg.Stats == nil && cfg.Prometheus == nil {
		return nil
	}
	mux := http.NewServeMux()
	if cfg.Prometheus != nil {
		mux.Handle(cfg.Prometheus.URI, metrics.Handler(&metrics.Collector{
			Process: e.Process, Frontends: e.Frontends, Backends: e.Backends, Started: e.Started(), Idle: e.Idle,
		}))
	}
	if cfg.Stats != nil {
		page := api.NewStatsPage(cfg.Stats, e, log)
		// The page, its ";csv" and ";json" forms, and a trailing slash.
		mux.Handle(cfg.Stats.URI, page)
		mux.Handle(cfg.Stats.URI+"/", page)
		mux.Handle(cfg.Stats.URI+";csv", page)
		mux.Handle(cfg.Stats.URI+";json", page)
	}
	return mux
}
