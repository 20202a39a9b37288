// Package proxyproto reads and writes the PROXY protocol header, versions
// 1 (text) and 2 (binary), as specified in HAProxy's proxy-protocol.txt
// (https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt).
//
// Reading peeks at the socket and then consumes exactly the header, so
// that the connection is left as a bare *net.TCPConn for the splice path.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Header is what a PROXY header says about the original connection.
type Header struct {
	Version int
	// Local is true for v2 LOCAL and v1 UNKNOWN: the sender's own
	// connection (a health check), with no addresses to use.
	Local    bool
	Src, Dst netip.AddrPort
}

var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// maxV1 is the longest v1 line, CRLF included; maxV2 bounds v2's TLVs.
const (
	maxV1 = 107
	maxV2 = 16 + 1024
)

// ErrInvalid reports a malformed header.
var ErrInvalid = errors.New("invalid PROXY protocol header")

// Read consumes a PROXY header from c, waiting until deadline.
func Read(c *net.TCPConn, deadline time.Time) (Header, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return Header{}, err
	}
	defer c.SetReadDeadline(time.Time{})
	rc, err := c.SyscallConn()
	if err != nil {
		return Header{}, err
	}
	var buf [maxV2]byte
	var h Header
	var size int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, e := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case e == unix.EAGAIN:
			return false
		case e != nil:
			perr = e
			return true
		case n == 0:
			perr = io.ErrUnexpectedEOF
			return true
		}
		h, size, perr = Parse(buf[:n])
		// Wait for more bytes while the header is merely incomplete; the
		// poller wakes us when new data arrives.
		return perr != errIncomplete
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return Header{}, err
	}
	_, err = io.ReadFull(c, buf[:size])
	return h, err
}

var errIncomplete = errors.New("incomplete PROXY header")

// Parse decodes a header at the start of b and returns its size.
func Parse(b []byte) (Header, int, error) {
	if len(b) < len(sigV2) && (bytes.HasPrefix(sigV2, b) || bytes.HasPrefix([]byte("PROXY "), b)) {
		return Header{}, 0, errIncomplete
	}
	if bytes.HasPrefix(b, sigV2) {
		return parseV2(b)
	}
	if bytes.HasPrefix(b, []byte("PROXY ")) {
		return parseV1(b)
	}
	return Header{}, 0, ErrInvalid
}

func parseV1(b []byte) (Header, int, error) {
	end := bytes.Index(b, []byte("\r\n"))
	if end < 0 {
		if len(b) >= maxV1 {
			return Header{}, 0, ErrInvalid
		}
		return Header{}, 0, errIncomplete
	}
	if end+2 > maxV1 {
		return Header{}, 0, ErrInvalid
	}
	f := bytes.Split(b[:end], []byte(" "))
	h := Header{Version: 1}
	if len(f) >= 2 && string(f[1]) == "UNKNOWN" {
		h.Local = true
		return h, end + 2, nil
	}
	if len(f) != 6 || (string(f[1]) != "TCP4" && string(f[1]) != "TCP6") {
		return Header{}, 0, ErrInvalid
	}
	src, err1 := netip.ParseAddr(string(f[2]))
	dst, err2 := netip.ParseAddr(string(f[3]))
	sp, err3 := parsePort(f[4])
	dp, err4 := parsePort(f[5])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || src.Is4() != (string(f[1]) == "TCP4") || src.Is4() != dst.Is4() {
		return Header{}, 0, ErrInvalid
	}
	h.Src, h.Dst = netip.AddrPortFrom(src, sp), netip.AddrPortFrom(dst, dp)
	return h, end + 2, nil
}

func parsePort(b []byte) (uint16, error) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, ErrInvalid
	}
	n, err := strconv.ParseUint(string(b), 10, 16)
	return uint16(n), err
}

func parseV2(b []byte) (Header, int, error) {
	if len(b) < 16 {
		return Header{}, 0, errIncomplete
	}
	verCmd, fam := b[12], b[13]
	size := 16 + int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 || size > maxV2 {
		return Header{}, 0, ErrInvalid
	}
	if len(b) < size {
		return Header{}, 0, errIncomplete
	}
	h := Header{Version: 2}
	switch verCmd & 0xf {
	case 0:
		h.Local = true
		return h, size, nil
	case 1:
	default:
		return Header{}, 0, ErrInvalid
	}
	body := b[16:size]
	switch fam {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return Header{}, 0, ErrInvalid
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:10]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:12]))
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return Header{}, 0, ErrInvalid
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])), binary.BigEndian.Uint16(body[32:34]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])), binary.BigEndian.Uint16(body[34:36]))
	default:
		// UNSPEC, UDP or unix sockets: keep the connection, ignore the addresses.
		h.Local = true
	}
	return h, size, nil
}

// Append appends a header of the given version (1 or 2) describing a
// connection from src to dst.
func Append(b []byte, version int, src, dst netip.AddrPort) []byte {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	sameFamily := src.Addr().Is4() == dst.Addr().Is4() && src.IsValid() && dst.IsValid()
	if version == 1 {
		if !sameFamily {
			return append(b, "PROXY UNKNOWN\r\n"...)
		}
		proto := "TCP6"
		if src.Addr().Is4() {
			proto = "TCP4"
		}
		return fmt.Appendf(b, "PROXY %s %s %s %d %d\r\n", proto, src.Addr(), dst.Addr(), src.Port(), dst.Port())
	}
	b = append(b, sigV2...)
	switch {
	case !sameFamily:
		return append(b, 0x20, 0x00, 0, 0) // LOCAL, UNSPEC
	case src.Addr().Is4():
		b = append(b, 0x21, 0x11, 0, 12)
		s, d := src.Addr().As4(), dst.Addr().As4()
		b = append(append(b, s[:]...), d[:]...)
	default:
		b = append(b, 0x21, 0x21, 0, 36)
		s, d := src.Addr().As16(), dst.Addr().As16()
		b = append(append(b, s[:]...), d[:]...)
	}
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, src.Port()), dst.Port())
}
