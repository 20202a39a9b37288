// Package netsetup adds the addresses of source pools to their interfaces
// (netlink), so that sluice can bind them, and removes exactly what it
// added. It runs from "sluice net", with CAP_NET_ADMIN, apart from the
// daemon, which never needs that capability.
package netsetup

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"sluice/hcl"
)

// Change is one address to add to an interface.
type Change struct {
	Interface string
	Addr      netip.Addr
}

func (c Change) String() string {
	return fmt.Sprintf("add %s dev %s", netip.PrefixFrom(c.Addr, c.Addr.BitLen()), c.Interface)
}

// label marks the IPv4 addresses sluice added, so that remove takes away
// those and nothing else. A label must start with the interface's name and
// fit in 15 bytes.
func label(iface string) string {
	l := iface + ":sl"
	if len(l) > 15 {
		return ""
	}
	return l
}

// Plan returns the addresses apply would add, and an error for what it
// cannot do: a missing interface, or an address another interface owns.
func Plan(cfg *hcl.Config) ([]Change, error) {
	owners, err := addressOwners()
	if err != nil {
		return nil, err
	}
	var changes []Change
	for _, name := range sortedPools(cfg) {
		p := cfg.SourcePools[name]
		if p.Interface == "" {
			continue
		}
		link, err := netlink.LinkByName(p.Interface)
		if err != nil {
			return nil, fmt.Errorf("source_pool %q: interface %q not found", name, p.Interface)
		}
		for _, a := range p.Addresses {
			owner, taken := owners[a]
			switch {
			case taken && owner == link.Attrs().Name:
				// already there: nothing to do
			case taken:
				return nil, fmt.Errorf("source_pool %q: %s is already owned by interface %s", name, a, owner)
			default:
				changes = append(changes, Change{Interface: p.Interface, Addr: a})
			}
		}
	}
	return changes, nil
}

// Apply makes the changes of Plan.
func Apply(changes []Change) error {
	for _, c := range changes {
		link, err := netlink.LinkByName(c.Interface)
		if err != nil {
			return fmt.Errorf("interface %q not found", c.Interface)
		}
		addr := &netlink.Addr{IPNet: ipNet(c.Addr)}
		if c.Addr.Is4() {
			addr.Label = label(c.Interface)
		}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return explain("adding "+c.String(), err)
		}
	}
	return nil
}

// Remove deletes the pool addresses that apply added (IPv4: those carrying
// sluice's label; IPv6, which has no labels: the pool's addresses on the
// pool's interface) and returns what it removed.
func Remove(cfg *hcl.Config) ([]Change, error) {
	var removed []Change
	for _, name := range sortedPools(cfg) {
		p := cfg.SourcePools[name]
		if p.Interface == "" {
			continue
		}
		link, err := netlink.LinkByName(p.Interface)
		if err != nil {
			continue // nothing of ours can be there
		}
		inPool := map[netip.Addr]bool{}
		for _, a := range p.Addresses {
			inPool[a] = true
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return removed, explain("listing addresses", err)
		}
		for _, ad := range addrs {
			a, ok := netip.AddrFromSlice(ad.IP)
			if !ok || !inPool[a.Unmap()] {
				continue
			}
			if a.Unmap().Is4() && ad.Label != label(p.Interface) {
				continue // not ours
			}
			if err := netlink.AddrDel(link, &ad); err != nil {
				return removed, explain("removing "+a.String(), err)
			}
			removed = append(removed, Change{Interface: p.Interface, Addr: a.Unmap()})
		}
	}
	return removed, nil
}

func addressOwners() (map[netip.Addr]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, explain("listing interfaces", err)
	}
	owners := map[netip.Addr]string{}
	for _, l := range links {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, explain("listing addresses", err)
		}
		for _, ad := range addrs {
			if a, ok := netip.AddrFromSlice(ad.IP); ok {
				owners[a.Unmap()] = l.Attrs().Name
			}
		}
	}
	return owners, nil
}

func ipNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

func explain(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%s: no permission (sluice net needs root or CAP_NET_ADMIN): %w", what, err)
	}
	if strings.HasPrefix(what, "nftables") && noNFTables(err) {
		return fmt.Errorf("%s: the kernel has no nf_tables (load the nf_tables module, or use nat = false, which needs no rules): %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// noNFTables recognises what netlink answers when the kernel has no
// nf_tables: no such netfilter subsystem, or no netfilter netlink at all.
func noNFTables(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP)
}

func sortedPools(cfg *hcl.Config) []string {
	return slices.Sorted(maps.Keys(cfg.SourcePools))
}
