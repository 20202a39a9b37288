// Package initconf is what sluice-image tells the appliance's init: a
// small JSON file at Path, written at build time and read at boot.
package initconf

import (
	"encoding/json"
	"os"
)

// Path is where the init finds its configuration in the image.
const Path = "/etc/sluice/appliance.json"

// Paths inside the image.
const (
	SluiceBinary = "/usr/bin/sluice"
	SluiceConfig = "/etc/sluice/sluice.hcl" // or a directory of *.hcl
	ModulesDir   = "/lib/modules"
)

// Config is the appliance's boot-time configuration.
type Config struct {
	Hostname string            `json:"hostname"`
	Modules  []string          `json:"modules"` // file names under ModulesDir, in load order
	Network  []Interface       `json:"network"` // empty: DHCP on every ethernet interface
	Sysctls  map[string]string `json:"sysctls"`
	Admin    *Admin            `json:"admin,omitempty"`
	Config   string            `json:"config"` // SluiceConfig, or the directory holding the configuration
	// DataPartition is the GPT name of a partition to mount on DataDir,
	// where the configuration then lives and persists; empty: none.
	DataPartition string `json:"data_partition,omitempty"`
}

// DataDir is where the data partition is mounted.
const DataDir = "/var/lib/sluice"

// Interface is one network interface's settings.
type Interface struct {
	Name    string   `json:"name"`
	DHCP    bool     `json:"dhcp"`
	Address string   `json:"address,omitempty"` // CIDR
	Gateway string   `json:"gateway,omitempty"`
	DNS     []string `json:"dns,omitempty"`
}

// Admin is the runtime API's TCP socket, for pushing configurations.
type Admin struct {
	Address string `json:"address"`
	Level   string `json:"level"`
}

// Read loads the configuration at path.
func Read(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	return &c, json.Unmarshal(b, &c)
}
