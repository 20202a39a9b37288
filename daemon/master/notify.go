package master

import (
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends sd_notify(3) lines to systemd when NOTIFY_SOCKET is set.
func (m *Master) notify(lines ...string) {
	if _, err := daemon.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		m.log.Warn("sd_notify failed", "err", err)
	}
}
