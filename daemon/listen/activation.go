package listen

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Activated is a socket passed by systemd socket activation
// (sd_listen_fds(3): LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES).
type Activated struct {
	FD    int
	Name  string         // FileDescriptorName=, or "" when unnamed
	Local netip.AddrPort // the address it is bound to
}

// Activation returns the sockets systemd passed to this process, with
// close-on-exec set, and clears the variables so children do not claim them.
func Activation() []Activated {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	if pid, err := strconv.Atoi(os.Getenv("LISTEN_PID")); err != nil || pid != os.Getpid() {
		return nil
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	var out []Activated
	for i := range n {
		fd := 3 + i
		unix.CloseOnExec(fd)
		a := Activated{FD: fd}
		if i < len(names) && names[i] != "unknown" {
			a.Name = names[i]
		}
		if sa, err := unix.Getsockname(fd); err == nil {
			switch sa := sa.(type) {
			case *unix.SockaddrInet4:
				a.Local = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
			case *unix.SockaddrInet6:
				a.Local = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
			}
		}
		out = append(out, a)
	}
	return out
}

// Match finds the activated socket for a bind address: the one named after
// it, or the one bound to it ("" and "*" hosts match the IPv6 or IPv4
// wildcard).
func Match(bind string, sockets []Activated) (int, bool) {
	for _, s := range sockets {
		if s.Name == bind {
			return s.FD, true
		}
	}
	host, p, err := net.SplitHostPort(bind)
	if err != nil {
		return -1, false
	}
	port, _ := strconv.Atoi(p)
	for _, s := range sockets {
		if int(s.Local.Port()) != port {
			continue
		}
		a := s.Local.Addr()
		if host == "" || host == "*" {
			if a.IsUnspecified() {
				return s.FD, true
			}
			continue
		}
		if want, err := netip.ParseAddr(host); err == nil && want.Unmap() == a.Unmap() {
			return s.FD, true
		}
	}
	return -1, false
}
