package netsetup

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestExplain checks the messages an operator gets for the failures the
// issue names: no permission, and a kernel without nf_tables.
func TestExplain(t *testing.T) {
	for _, c := range []struct {
		what string
		err  error
		want string
	}{
		{"adding 198.18.0.1/32 dev eth0", fmt.Errorf("netlink: %w", os.ErrPermission), "needs root or CAP_NET_ADMIN"},
		{"nftables: installing the rules", fmt.Errorf("receive: %w", unix.ENOENT), "the kernel has no nf_tables"},
		{"nftables", unix.EPROTONOSUPPORT, "the kernel has no nf_tables"},
		{"listing addresses", unix.ENOENT, "listing addresses: no such file"},
	} {
		if got := explain(c.what, c.err).Error(); !strings.Contains(got, c.want) {
			t.Errorf("explain(%q, %v) = %q, want it to say %q", c.what, c.err, got, c.want)
		}
	}
}
