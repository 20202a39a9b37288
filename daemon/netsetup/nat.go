package netsetup

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"sluice/hcl"
)

// TableName is sluice's own nftables table (family inet); remove deletes
// it and nothing else.
const TableName = "sluice"

// NATRule is the SNAT of one nat = true pool. sluice binds the pool's
// first address and takes its local ports from LocalPorts, one slice of
// the pool's port count per pool address; a map rewrites each local port
// to exactly one (address, port) of the pool: the k-th port of slice i
// becomes port lo+k of address i. The mapping is one to one, so the
// kernel never searches for a free port and never runs out before sluice,
// whose exhaustion is immediate and counted.
//
// A map rather than one SNAT to the address range: the kernel picks a
// range's address by hashing source and destination addresses, the same
// for every connection from sluice to one server, so it would use one
// address; and near a full port range its search for a free port gives
// up and drops the connection.
type NATRule struct {
	pool    string
	from    netip.Addr
	slices  []netip.Addr // pool addresses, one per slice of local ports
	localLo uint16
	lo, hi  uint16
}

func (r NATRule) mapName() string { return "pool_" + r.pool }

func (r NATRule) String() string {
	localHi := int(r.localLo) + len(r.slices)*r.n() - 1
	return fmt.Sprintf("ip saddr %s tcp sport %d-%d snat ip to tcp sport map @%s", r.from, r.localLo, localHi, r.mapName())
}

func (r NATRule) n() int { return int(r.hi) - int(r.lo) + 1 }

// mapping calls f for every local port with the address and port it
// becomes.
func (r NATRule) mapping(f func(local uint16, to netip.Addr, port uint16)) {
	for i, a := range r.slices {
		for k := 0; k < r.n(); k++ {
			f(uint16(int(r.localLo)+i*r.n()+k), a, uint16(int(r.lo)+k))
		}
	}
}

// NATRules returns the rules of cfg's nat pools.
func NATRules(cfg *hcl.Config) ([]NATRule, error) {
	var rules []NATRule
	for _, name := range sortedPools(cfg) {
		p := cfg.SourcePools[name]
		if !p.NAT {
			continue
		}
		for _, a := range p.Addresses {
			if !a.Is4() {
				return nil, fmt.Errorf("source_pool %q: nat needs IPv4 addresses", name)
			}
		}
		local, _ := p.LocalPorts()
		rules = append(rules, NATRule{pool: name, from: p.Addresses[0], slices: p.Addresses, localLo: local, lo: p.PortLow, hi: p.PortHigh})
	}
	return rules, nil
}

// PlanNAT renders the table apply would install, in nft syntax; each
// map's elements are summarised one slice per line.
func PlanNAT(rules []NATRule) string {
	if len(rules) == 0 {
		return ""
	}
	s := "table inet " + TableName + " {\n"
	for _, r := range rules {
		s += fmt.Sprintf("\tmap %s {\n\t\ttype inet_service : ipv4_addr . inet_service\n", r.mapName())
		for i, a := range r.slices {
			lo := int(r.localLo) + i*r.n()
			s += fmt.Sprintf("\t\t# %d-%d : %s . %d-%d\n", lo, lo+r.n()-1, a, r.lo, r.hi)
		}
		s += "\t}\n"
	}
	s += "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
	for _, r := range rules {
		s += "\t\t" + r.String() + "\n"
	}
	return s + "\t}\n}\n"
}

// ApplyNAT replaces sluice's table with one holding rules, in one
// transaction; with no rules it only removes the table.
func ApplyNAT(rules []NATRule) error {
	c, err := nftables.New()
	if err != nil {
		return explain("nftables", err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	if exists(c) {
		c.DelTable(table)
	}
	if len(rules) > 0 {
		c.AddTable(table)
		prio := nftables.ChainPriorityNATSource
		chain := c.AddChain(&nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPostrouting, Priority: prio})
		for _, r := range rules {
			set := &nftables.Set{Table: table, Name: r.mapName(), IsMap: true, KeyType: nftables.TypeInetService,
				DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
			var elems []nftables.SetElement
			r.mapping(func(local uint16, to netip.Addr, port uint16) {
				a := to.As4()
				elems = append(elems, nftables.SetElement{Key: be16(local), Val: append(a[:], be16(port)[0], be16(port)[1], 0, 0)})
			})
			if err := c.AddSet(set, nil); err != nil {
				return explain("nftables map", err)
			}
			// In batches: one netlink message holds a limited number.
			for len(elems) > 0 {
				n := min(len(elems), 512)
				if err := c.SetAddElements(set, elems[:n]); err != nil {
					return explain("nftables map", err)
				}
				elems = elems[n:]
			}
			c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: natExprs(r, set)})
		}
	}
	if err := c.Flush(); err != nil {
		return explain("nftables: installing the rules", err)
	}
	return nil
}

// RemoveNAT deletes sluice's table, if there is one.
func RemoveNAT() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, explain("nftables", err)
	}
	if !exists(c) {
		return false, nil
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
	return true, explain("nftables: removing the table", c.Flush())
}

func exists(c *nftables.Conn) bool {
	tables, _ := c.ListTablesOfFamily(nftables.TableFamilyINet)
	for _, t := range tables {
		if t.Name == TableName {
			return true
		}
	}
	return false
}

func be16(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }

// natExprs: ip saddr FROM, tcp sport in the local range, then the map
// gives address (register 1) and port (its second 32-bit word, register
// 9) to SNAT to.
func natExprs(r NATRule, set *nftables.Set) []expr.Any {
	from := r.from.As4()
	localHi := uint16(int(r.localLo) + len(r.slices)*r.n() - 1)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: from[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: be16(r.localLo), ToData: be16(localHi)},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 9, RegProtoMax: 9, Specified: true},
	}
}
