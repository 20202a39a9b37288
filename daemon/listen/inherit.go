package listen

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// EnvFDs names the environment variable that tells a child which inherited
// descriptor is which bind address: "addr=fd,addr=fd".
const EnvFDs = "SLUICE_LISTEN_FDS"

// Encode returns the EnvFDs value for files that will be at descriptors
// first, first+1, ... in the child, in the order of addrs.
func Encode(addrs []string, first int) string {
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = a + "=" + strconv.Itoa(first+i)
	}
	return strings.Join(parts, ",")
}

// Inherited returns the listeners a parent passed, by bind address, and
// clears EnvFDs so that nothing started later inherits the claim.
func Inherited() (map[string]*net.TCPListener, error) {
	v := os.Getenv(EnvFDs)
	os.Unsetenv(EnvFDs)
	out := map[string]*net.TCPListener{}
	if v == "" {
		return out, nil
	}
	for _, part := range strings.Split(v, ",") {
		i := strings.LastIndexByte(part, '=')
		if i < 0 {
			return nil, fmt.Errorf("%s: bad entry %q", EnvFDs, part)
		}
		fd, err := strconv.Atoi(part[i+1:])
		if err != nil || fd < 3 {
			return nil, fmt.Errorf("%s: bad descriptor in %q", EnvFDs, part)
		}
		ln, err := FromFD(uintptr(fd), part[:i])
		if err != nil {
			return nil, fmt.Errorf("inherited listener %s: %w", part[:i], err)
		}
		out[part[:i]] = ln
	}
	return out, nil
}
