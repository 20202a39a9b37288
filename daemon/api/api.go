// Package api is sluice's runtime API: line commands on unix sockets, in
// the spirit of HAProxy's stats socket. A socket has a level (user,
// operator, admin); with expose_listeners it also hands the listening
// sockets to a successor over SCM_RIGHTS, as HAProxy's "expose-fd
// listeners" does for "haproxy -x".
package api

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"sluice/daemon/engine"
	"sluice/daemon/listen"
	"sluice/hcl"
)

// fdBatch is how many descriptors one message carries.
const fdBatch = 16

// Server answers commands on one admin socket.
type Server struct {
	cfg hcl.AdminSocket
	ln  net.Listener
	log *slog.Logger
	// Listeners returns the listening sockets by bind address, for _getsocks.
	Listeners func() map[string]*net.TCPListener
	// OnDrain is called by _drain: stop accepting and finish what is under way.
	OnDrain func()
	// Engine is the generation the commands show and change.
	Engine *engine.Engine
	// Started is when the process started, for show info.
	Started time.Time
	// ConfigPaths are the configuration paths this process runs from:
	// set config writes the new configuration there.
	ConfigPaths []string

	sessions  sync.WaitGroup
	serving   sync.Mutex // held by Serve while it accepts
	closeOnce sync.Once
	// shared: the socket is inherited, and the next generation accepts on
	// it too.
	shared bool
}

// Listen opens the socket at cfg.Path. A unix socket is created beside
// it and renamed into place, so that a predecessor still serving on the
// same path (during a takeover) is replaced without a moment with no
// socket. A TCP socket is the one inherited when given (from the master,
// or taken over), so that a reload refuses no command: connections
// waiting in its queue are the next generation's.
func Listen(cfg hcl.AdminSocket, inherited *net.TCPListener, log *slog.Logger) (*Server, error) {
	srv := &Server{cfg: cfg, log: log.With("component", "api", "socket", cfg.Path), Started: time.Now()}
	if addr, ok := strings.CutPrefix(cfg.Path, "tcp://"); ok {
		if inherited != nil {
			srv.ln, srv.shared = inherited, true
			return srv, nil
		}
		// SO_REUSEPORT, as the master opens it: a generation started by
		// hand may open the same address while another still answers.
		ln, err := listen.Listen(addr, listen.Options{ReusePort: true})
		if err != nil {
			return nil, err
		}
		srv.ln = ln
		return srv, nil
	}
	tmp := fmt.Sprintf("%s.%d.tmp", cfg.Path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Server, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, os.FileMode(cfg.Mode)); err != nil {
		return fail(err)
	}
	if cfg.User != "" || cfg.Group != "" {
		uid, gid, err := owner(cfg.User, cfg.Group)
		if err != nil {
			return fail(err)
		}
		if err := os.Chown(tmp, uid, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, cfg.Path); err != nil {
		return fail(err)
	}
	srv.ln = ln
	return srv, nil
}

// owner resolves user and group names (or numbers) from /etc/passwd and
// /etc/group; -1 keeps the current one.
func owner(userName, groupName string) (int, int, error) {
	uid, gid := -1, -1
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			if u, err = user.LookupId(userName); err != nil {
				return 0, 0, fmt.Errorf("admin socket user %q: %w", userName, err)
			}
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			if g, err = user.LookupGroupId(groupName); err != nil {
				return 0, 0, fmt.Errorf("admin socket group %q: %w", groupName, err)
			}
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	return uid, gid, nil
}

// Close stops accepting and closes the socket. A socket of its own (a
// unix socket whose path a successor has taken over, or a TCP one it
// opened) is closed only after the connections waiting in its queue are
// taken: closing would reset them, failing commands sent during a
// reload. An inherited socket's queue is left to the successor, which
// shares it.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if d, ok := s.ln.(interface{ SetDeadline(time.Time) error }); ok {
			d.SetDeadline(time.Now()) // Serve's Accept returns
		}
		s.serving.Lock()
		defer s.serving.Unlock()
		if !s.shared {
			s.acceptQueued()
		}
		s.ln.Close()
	})
}

// acceptQueued starts a session for each connection waiting in the
// socket's queue, without waiting for more. (Accept cannot: its
// deadline has passed.)
func (s *Server) acceptQueued() {
	sc, ok := s.ln.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	for {
		fd, aerr := -1, error(nil)
		rc.Control(func(lfd uintptr) {
			for {
				if fd, _, aerr = unix.Accept4(int(lfd), unix.SOCK_CLOEXEC); aerr != unix.EINTR {
					return
				}
			}
		})
		if aerr != nil {
			return // EAGAIN: the queue is empty
		}
		f := os.NewFile(uintptr(fd), "admin connection")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			continue
		}
		s.sessions.Add(1)
		go s.session(c)
	}
}

// Path is the socket's path, or tcp://IP:port.
func (s *Server) Path() string { return s.cfg.Path }

// TCPListener is the socket of an admin socket over TCP, nil for a unix
// one: a successor takes it over with the frontends' sockets.
func (s *Server) TCPListener() *net.TCPListener {
	ln, _ := s.ln.(*net.TCPListener)
	return ln
}

// Shutdown stops accepting and waits, up to wait, for the commands under
// way to finish.
func (s *Server) Shutdown(wait time.Duration) {
	s.Close()
	done := make(chan struct{})
	go func() { s.sessions.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
	}
}

// Serve answers connections until Close.
func (s *Server) Serve() {
	s.serving.Lock()
	defer s.serving.Unlock()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.sessions.Add(1)
		go s.session(c)
	}
}

func (s *Server) session(c net.Conn) {
	defer s.sessions.Done()
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("command crashed", "panic", r)
		}
	}()
	// Like HAProxy's CLI: one line of ";"-separated commands, then the
	// connection closes, unless "prompt" turned on interactive mode.
	r := bufio.NewReader(io.LimitReader(c, 1<<20))
	interactive := false
	for {
		if interactive {
			fmt.Fprint(c, "> ")
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := r.ReadString('\n')
		if cmd, payload, ok := readPayload(r, line); ok {
			// "COMMAND <<" takes the lines up to an empty one as its
			// payload, as HAProxy's CLI does; "COMMAND <<WORD" takes them
			// up to a line that is WORD, so that a payload may hold empty
			// lines (a configuration file does).
			s.payloadCommand(c, cmd, payload)
			if !interactive {
				return
			}
			continue
		}
		for _, cmd := range strings.Split(strings.TrimSpace(line), ";") {
			switch cmd = strings.TrimSpace(cmd); cmd {
			case "":
			case "prompt":
				interactive = !interactive
			case "quit":
				return
			default:
				if cmd == "_getsocks" {
					s.getsocks(c)
					continue
				}
				s.command(c, cmd)
			}
		}
		if err != nil || !interactive {
			return
		}
	}
}

// getsocks answers _getsocks when this socket may expose its listeners.
func (s *Server) getsocks(conn net.Conn) {
	c, unixSocket := conn.(*net.UnixConn)
	if s.cfg.Level != "admin" || !s.cfg.ExposeListeners || !unixSocket {
		fmt.Fprint(c, "Permission denied: this socket does not expose its listeners (expose_listeners = true, level admin).\n\n")
		return
	}
	if err := s.sendListeners(c); err != nil {
		s.log.Warn("sending listeners failed", "err", err)
	}
}

// sendListeners writes "N\n", then messages each carrying up to fdBatch
// descriptors with their bind addresses, one per line, as data.
func (s *Server) sendListeners(c *net.UnixConn) error {
	lns := s.Listeners()
	addrs := make([]string, 0, len(lns))
	for a := range lns {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	if _, err := fmt.Fprintf(c, "%d\n", len(addrs)); err != nil {
		return err
	}
	for start := 0; start < len(addrs); start += fdBatch {
		batch := addrs[start:min(start+fdBatch, len(addrs))]
		var fds []int
		for _, a := range batch {
			fd, err := listen.DupFD(lns[a])
			if err != nil {
				return err
			}
			fds = append(fds, fd)
		}
		_, _, err := c.WriteMsgUnix([]byte(strings.Join(batch, "\n")+"\n"), unix.UnixRights(fds...), nil)
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// FetchListeners asks the process behind the admin socket at path for its
// listening sockets.
func FetchListeners(path string) (map[string]*net.TCPListener, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	uc := c.(*net.UnixConn)
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprint(uc, "_getsocks\n"); err != nil {
		return nil, err
	}
	// The count line comes alone, before any descriptor.
	var head []byte
	one := make([]byte, 1)
	for {
		if _, err := uc.Read(one); err != nil {
			return nil, fmt.Errorf("reading the listener count: %w", err)
		}
		if one[0] == '\n' {
			break
		}
		head = append(head, one[0])
		if len(head) > 200 {
			break
		}
	}
	var n int
	if _, err := fmt.Sscanf(string(head), "%d", &n); err != nil {
		return nil, fmt.Errorf("the other process refused: %s", head)
	}
	out := map[string]*net.TCPListener{}
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(fdBatch*4))
	for len(out) < n {
		nr, noob, _, _, err := uc.ReadMsgUnix(buf, oob)
		if err != nil {
			return nil, err
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:noob])
		if err != nil || len(msgs) == 0 {
			return nil, fmt.Errorf("no descriptors in the message")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil {
			return nil, err
		}
		addrs := strings.Split(strings.TrimSuffix(string(buf[:nr]), "\n"), "\n")
		if len(addrs) != len(fds) {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("%d addresses for %d descriptors", len(addrs), len(fds))
		}
		for i, fd := range fds {
			unix.CloseOnExec(fd)
			ln, err := listen.FromFD(uintptr(fd), addrs[i])
			if err != nil {
				return nil, err
			}
			out[addrs[i]] = ln
		}
	}
	return out, nil
}

// Command sends one command to the admin socket at path (a unix socket
// path or tcp://IP:port) and returns the answer (up to the empty line).
func Command(path, cmd string) (string, error) {
	network, addr := "unix", path
	if a, ok := strings.CutPrefix(path, "tcp://"); ok {
		network, addr = "tcp", a
	}
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "%s\n", cmd)
	var b strings.Builder
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if line == "\n" || err != nil {
			return b.String(), nil
		}
		b.WriteString(line)
	}
}
