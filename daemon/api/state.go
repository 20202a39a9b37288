package api

import (
	"strconv"
	"strings"

	"sluice/daemon/engine"
)

// ApplyServersState carries runtime changes from a predecessor's "show
// servers state" into e: maintenance and drain, and the weight where the
// configured weight is still the one the predecessor started from (as
// HAProxy does with a server-state file). It returns how many servers it
// changed.
func ApplyServersState(e *engine.Engine, text string) int {
	changed := 0
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || strings.HasPrefix(line, "#") {
			continue
		}
		beName, srvName := f[1], f[3]
		admin, err1 := strconv.Atoi(f[6])
		uweight, err2 := strconv.Atoi(f[7])
		iweight, err3 := strconv.Atoi(f[8])
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		for _, b := range e.Backends {
			if b.Name != beName {
				continue
			}
			sv := b.Server(srvName)
			if sv == nil {
				continue
			}
			did := false
			if admin&1 != 0 {
				sv.SetMaint(true)
				did = true
			}
			if admin&8 != 0 {
				sv.SetDrain(true)
				did = true
			}
			if sv.InitialWeight == iweight && uweight != sv.Weight() {
				b.SetWeight(sv, uweight)
				did = true
			}
			if did {
				b.Rebalance()
				changed++
			}
		}
	}
	return changed
}
