package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"sluice/image/initconf"
)

// linkWait bounds how long the init waits for network cards to appear
// after their drivers were loaded (probing is asynchronous).
const linkWait = 10 * time.Second

// setupNetwork brings loopback up, then the configured interfaces; with
// none configured, it runs DHCP on every ethernet interface.
func setupNetwork(cfg *initconf.Config) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	ifaces := cfg.Network
	if len(ifaces) == 0 {
		names := ethernetLinks()
		if len(names) == 0 {
			return fmt.Errorf("no network interface appeared within %s", linkWait)
		}
		for _, n := range names {
			ifaces = append(ifaces, initconf.Interface{Name: n, DHCP: true})
		}
	}
	var dns []string
	for _, ifc := range ifaces {
		link, err := waitLink(ifc.Name)
		if err != nil {
			logf("interface %s: %v", ifc.Name, err)
			continue
		}
		if err := netlink.LinkSetUp(link); err != nil {
			logf("interface %s: %v", ifc.Name, err)
			continue
		}
		if ifc.DHCP {
			logf("interface %s: up, asking for a DHCP lease", ifc.Name)
			servers, err := startDHCP(link)
			if err != nil {
				logf("interface %s: DHCP: %v", ifc.Name, err)
				continue
			}
			dns = append(dns, servers...)
			continue
		}
		if err := static(link, ifc); err != nil {
			logf("interface %s: %v", ifc.Name, err)
			continue
		}
		dns = append(dns, ifc.DNS...)
	}
	return writeResolvConf(dns)
}

// ethernetLinks waits for at least one non-loopback device and returns
// their names once no new one appeared for a moment.
func ethernetLinks() []string {
	deadline := time.Now().Add(linkWait)
	var names []string
	for time.Now().Before(deadline) {
		links, _ := netlink.LinkList()
		var found []string
		for _, l := range links {
			if l.Type() == "device" && l.Attrs().EncapType == "ether" {
				found = append(found, l.Attrs().Name)
			}
		}
		if len(found) > 0 && len(found) == len(names) {
			return found
		}
		names = found
		time.Sleep(300 * time.Millisecond)
	}
	return names
}

func waitLink(name string) (netlink.Link, error) {
	deadline := time.Now().Add(linkWait)
	for {
		link, err := netlink.LinkByName(name)
		if err == nil || time.Now().After(deadline) {
			return link, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func static(link netlink.Link, ifc initconf.Interface) error {
	addr, err := netlink.ParseAddr(ifc.Address)
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return err
	}
	logf("interface %s: address %s", ifc.Name, ifc.Address)
	if ifc.Gateway != "" {
		gw := net.ParseIP(ifc.Gateway)
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
		logf("interface %s: default route via %s", ifc.Name, gw)
	}
	return nil
}

// startDHCP obtains a lease, applies it, and keeps renewing it in the
// background. It returns the DNS servers offered.
func startDHCP(link netlink.Link) ([]string, error) {
	name := link.Attrs().Name
	client, err := nclient4.New(name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	lease, err := client.Request(ctx)
	cancel()
	if err != nil {
		client.Close()
		return nil, err
	}
	if err := applyLease(link, lease, nil); err != nil {
		client.Close()
		return nil, err
	}
	go renew(client, link, lease)
	var dns []string
	for _, ip := range lease.ACK.DNS() {
		dns = append(dns, ip.String())
	}
	return dns, nil
}

// applyLease sets the leased address (replacing the previous one if it
// changed) and the default route.
func applyLease(link netlink.Link, lease *nclient4.Lease, previous *nclient4.Lease) error {
	ack := lease.ACK
	ones, _ := ack.SubnetMask().Size()
	if ack.SubnetMask() == nil {
		ones = 24
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: net.CIDRMask(ones, 32)},
		ValidLft: int(ack.IPAddressLeaseTime(time.Hour).Seconds()), PreferedLft: int(ack.IPAddressLeaseTime(time.Hour).Seconds())}
	if previous != nil && !previous.ACK.YourIPAddr.Equal(ack.YourIPAddr) {
		old := &netlink.Addr{IPNet: &net.IPNet{IP: previous.ACK.YourIPAddr, Mask: addr.Mask}}
		netlink.AddrDel(link, old)
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return err
	}
	name := link.Attrs().Name
	if previous == nil {
		logf("interface %s: DHCP lease %s/%d from %s for %s", name, ack.YourIPAddr, ones, ack.ServerIdentifier(), ack.IPAddressLeaseTime(time.Hour))
	}
	if routers := ack.Router(); len(routers) > 0 {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: routers[0]}); err != nil {
			return fmt.Errorf("default route via %s: %w", routers[0], err)
		}
		if previous == nil {
			logf("interface %s: default route via %s", name, routers[0])
		}
	}
	return nil
}

// renew renews the lease at half its time (T1); when renewal keeps
// failing until the lease ends, it starts over with a new request.
func renew(client *nclient4.Client, link netlink.Link, lease *nclient4.Lease) {
	name := link.Attrs().Name
	for {
		life := lease.ACK.IPAddressLeaseTime(time.Hour)
		t1 := lease.ACK.IPAddressRenewalTime(life / 2)
		expires := lease.CreationTime.Add(life)
		time.Sleep(time.Until(lease.CreationTime.Add(t1)))
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			next, err := client.Renew(ctx, lease)
			if err != nil && time.Now().After(expires) {
				next, err = client.Request(ctx)
			}
			cancel()
			if err == nil {
				if err := applyLease(link, next, lease); err != nil {
					logf("interface %s: DHCP renewal: %v", name, err)
				} else {
					logf("interface %s: DHCP lease renewed for %s", name, next.ACK.IPAddressLeaseTime(time.Hour))
				}
				lease = next
				break
			}
			logf("interface %s: DHCP renewal failed: %v; retrying", name, err)
			time.Sleep(min(time.Until(expires)/2+time.Second, time.Minute))
		}
	}
}

func writeResolvConf(servers []string) error {
	if len(servers) == 0 {
		return nil
	}
	var b strings.Builder
	seen := map[string]bool{}
	for _, s := range servers {
		if !seen[s] {
			seen[s] = true
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
	}
	return os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
}
