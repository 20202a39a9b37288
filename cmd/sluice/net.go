package main

import (
	"fmt"
	"io"

	"sluice/daemon/netsetup"
	"sluice/hcl"
)

// netCmd adds or removes the source pools' addresses: sluice net
// plan|apply|remove -f CONFIG.
func netCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "plan" && args[0] != "apply" && args[0] != "remove") {
		fmt.Fprintln(stderr, "usage: sluice net plan|apply|remove -f CONFIG")
		return 2
	}
	action := args[0]
	fs := newFlags("net "+action, stderr)
	paths := configFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg, _, diags := hcl.Load(*paths)
	hcl.WriteDiagnostics(stderr, diags)
	if cfg == nil {
		return 1
	}
	if action == "remove" {
		removed, err := netsetup.Remove(cfg)
		for _, c := range removed {
			fmt.Fprintf(stdout, "removed %s\n", c.String()[len("add "):])
		}
		if err == nil {
			var had bool
			if had, err = netsetup.RemoveNAT(); had {
				fmt.Fprintf(stdout, "removed table inet %s\n", netsetup.TableName)
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "sluice net remove: %v\n", err)
			return 1
		}
		return 0
	}
	changes, err := netsetup.Plan(cfg)
	var rules []netsetup.NATRule
	if err == nil {
		rules, err = netsetup.NATRules(cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice net %s: %v\n", action, err)
		return 1
	}
	for _, c := range changes {
		fmt.Fprintln(stdout, c)
	}
	fmt.Fprint(stdout, netsetup.PlanNAT(rules))
	if len(changes) == 0 && len(rules) == 0 {
		fmt.Fprintln(stdout, "nothing to do")
	}
	if action == "plan" {
		return 0
	}
	if err := netsetup.Apply(changes); err != nil {
		fmt.Fprintf(stderr, "sluice net apply: %v\n", err)
		return 1
	}
	if len(rules) > 0 {
		if err := netsetup.ApplyNAT(rules); err != nil {
			fmt.Fprintf(stderr, "sluice net apply: %v\n", err)
			return 1
		}
	}
	return 0
}
