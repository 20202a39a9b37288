package proxy

import "testing"

// TestWithoutCookie takes one cookie out of a Cookie header's value, in
// place, wherever it stands.
func TestWithoutCookie(t *testing.T) {
	for in, want := range map[string]string{
		"SRV=a":                 "",
		"SRV=a; x=1":            "x=1",
		"x=1; SRV=a":            "x=1",
		"x=1; SRV=a; y=2":       "x=1; y=2",
		"x=1;SRV=a;y=2":         "x=1;y=2",
		"SRVX=1; SRV=b; SRV=c":  "SRVX=1",
		"x=1":                   "x=1",
		"  SRV=a;  y=2 ;z=3":    "y=2 ;z=3",
		"SRV=; x=1":             "x=1",
		"x=1; ; SRV=a":          "x=1",
		"SRV":                   "SRV",
		"x=\"a;b\"; SRV=a; y=2": "x=\"a;b\"; y=2",
	} {
		b := []byte(in)
		if got := string(withoutCookie(b, "SRV")); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
