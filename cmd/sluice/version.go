package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"

	"sluice/daemon/limits"
	"sluice/version"
)

func versionCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", stderr)
	verbose := fs.Bool("v", false, "print build details")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fmt.Fprintf(stdout, "sluice version %s\n", version.Version)
	if !*verbose {
		return 0
	}
	cgo := version.Setting("CGO_ENABLED")
	link := "static (CGO disabled)"
	if cgo != "0" {
		link = "CGO_ENABLED=" + cgo + ": may be dynamically linked"
	}
	tags := version.Setting("-tags")
	resolver := "pure Go (netgo)"
	if cgo != "0" && !slices.Contains(strings.Split(tags, ","), "netgo") {
		resolver = "cgo or pure Go, chosen at run time"
	}
	soft, hard, _ := limits.RaiseNoFile(0)
	fmt.Fprintf(stdout, "Commit: %s, built %s\n", version.Commit, version.Date)
	fmt.Fprintf(stdout, "Go version: %s\n", runtime.Version())
	fmt.Fprintf(stdout, "Linking: %s\n", link)
	fmt.Fprintf(stdout, "Build tags: %s; trimpath: %s\n", or(tags, "none"), or(version.Setting("-trimpath"), "false"))
	fmt.Fprintf(stdout, "DNS resolver: %s\n", resolver)
	fmt.Fprintf(stdout, "Target: %s/%s\n", runtime.GOOS, runtime.GOARCH)
	fmt.Fprintln(stdout, "Features: +TCP +SPLICE +PROXY_V1 +PROXY_V2 +SYSLOG +HEALTHCHECK +SOURCE_PORT_RANGE +CPU_AFFINITY -HTTP")
	fmt.Fprintln(stdout, "Balance algorithms: roundrobin static-rr leastconn first source random (hash_type map-based, consistent)")
	fmt.Fprintf(stdout, "Default limits: threads = %d (one per CPU), maxconn = (open files - reserve) / 2, open files now %d (hard %d)\n",
		runtime.NumCPU(), soft, hard)
	return 0
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
