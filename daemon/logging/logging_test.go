package logging

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"sluice/hcl"
)

func TestTCPLogFormat(t *testing.T) {
	e := &TCPEntry{
		Client: netip.MustParseAddrPort("127.0.0.1:34567"), Accept: time.Date(2026, 11, 23, 20, 30, 0, 123e6, time.UTC),
		Frontend: "fe", Backend: "be", Server: "s1", Tw: 0, Tc: 1, Tt: 5007, Bytes: 212, Term: [2]byte{'-', '-'},
		ActConn: 1, FeConn: 1, BeConn: 1, SrvConn: 1, Retries: 1, Redispatched: true,
	}
	got := string(AppendTCPLog(nil, e))
	want := "127.0.0.1:34567 [23/Nov/2026:20:30:00.123] fe be/s1 0/1/5007 212 -- 1/1/1/1/+1 0/0"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { AppendTCPLog(make([]byte, 0, 256), e) }); n > 1 {
		t.Errorf("AppendTCPLog allocates %v times", n)
	}
}

func TestSyslogFormats(t *testing.T) {
	for _, tc := range []struct {
		format string
		want   string
	}{
		{"rfc3164", `^<134>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d sluice\[\d+\]: hello$`},
		{"rfc5424", `^<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\S+ \S+ sluice \d+ - - hello$`},
	} {
		t.Run(tc.format, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			l := New([]hcl.LogTarget{{Network: "udp", Address: pc.LocalAddr().String(), Facility: 16, Format: tc.format, Tag: "sluice"}})
			l.Printf(Info, "hello")
			buf := make([]byte, 1024)
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _, err := pc.ReadFrom(buf)
			l.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(tc.want).Match(buf[:n]) {
				t.Errorf("datagram %q does not match %s", buf[:n], tc.want)
			}
		})
	}
}

func TestSyslogTCPOctetCounting(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	l := New([]hcl.LogTarget{{Network: "tcp", Address: ln.Addr().String(), Facility: 16, Format: "rfc5424", Tag: "sluice"}})
	l.Printf(Info, "one")
	l.Printf(Info, "two")
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	l.Close()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var all []byte
	for {
		n, err := c.Read(buf)
		all = append(all, buf[:n]...)
		if err != nil {
			break
		}
	}
	s := string(all)
	if !regexp.MustCompile(`^\d+ <134>1 .* - - one\d+ <134>1 .* - - two$`).MatchString(s) || strings.Count(s, "<134>") != 2 {
		t.Errorf("stream %q is not two octet-counted messages", s)
	}
}

// TestSendDuringClose logs from many goroutines while the logger closes:
// nothing may panic (a session can end while a hard stop closes the logs).
func TestSendDuringClose(t *testing.T) {
	for range 20 {
		l := New([]hcl.LogTarget{{Network: "udp", Address: "127.0.0.1:9", Facility: 16, Format: "rfc3164", Tag: "t"}})
		done := make(chan struct{})
		for range 4 {
			go func() {
				for i := 0; ; i++ {
					select {
					case <-done:
						return
					default:
						l.Printf(Info, "line %d", i)
					}
				}
			}()
		}
		time.Sleep(time.Millisecond)
		l.Close()
		close(done)
	}
}
