// Package version holds what the build stamped into the binary.
package version

import (
	"runtime/debug"
)

// Set with -ldflags "-X sluice/version.Version=... -X sluice/version.Commit=...".
var (
	Version = "dev"
	Commit  = "unknown"
	Date    = "unknown"
)

// Setting returns a build setting recorded by the Go toolchain, such as
// "CGO_ENABLED", "-tags" or "-trimpath"; "" when absent.
func Setting(key string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == key {
			return s.Value
		}
	}
	return ""
}
