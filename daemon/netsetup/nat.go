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

// NATRule is the SNAT of one nat = true pool: TCP from the pool's first
// address is rewritten over the whole pool and its port range.
type NATRule struct {
	pool     string
	from     netip.Addr
	min, max netip.Addr
	lo, hi   uint16
}

func (r NATRule) String() string {
	return fmt.Sprintf("ip saddr %s meta l4proto tcp snat ip to %s-%s:%d-%d", r.from, r.min, r.max, r.lo, r.hi)
}

// NATRules returns the rules of cfg's nat pools. Their addresses must be
// consecutive IPv4 addresses, as an SNAT range is.
func NATRules(cfg *hcl.Config) ([]NATRule, error) {
	var rules []NATRule
	for _, name := range sortedPools(cfg) {
		p := cfg.SourcePools[name]
		if !p.NAT {
			continue
		}
		for i, a := range p.Addresses {
			if !a.Is4() || (i > 0 && a != p.Addresses[i-1].Next()) {
				return nil, fmt.Errorf("source_pool %q: nat needs consecutive IPv4 addresses", name)
			}
		}
		rules = append(rules, NATRule{name, p.Addresses[0], p.Addresses[0], p.Addresses[len(p.Addresses)-1], p.PortLow, p.PortHigh})
	}
	return rules, nil
}

// PlanNAT renders the table apply would install, in nft syntax.
func PlanNAT(rules []NATRule) string {
	if len(rules) == 0 {
		return ""
	}
	s := "table inet " + TableName + " {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
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
			c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: natExprs(r)})
		}
	}
	if err := c.Flush(); err != nil {
		return explain("installing nftables rules (is nf_tables in the kernel?)", err)
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
	return true, explain("removing the nftables table", c.Flush())
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

func natExprs(r NATRule) []expr.Any {
	from, min, max := r.from.As4(), r.min.As4(), r.max.As4()
	port := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: from[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Immediate{Register: 1, Data: min[:]},
		&expr.Immediate{Register: 2, Data: max[:]},
		&expr.Immediate{Register: 3, Data: port(r.lo)},
		&expr.Immediate{Register: 4, Data: port(r.hi)},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 2, RegProtoMin: 3, RegProtoMax: 4, Specified: true},
	}
}
