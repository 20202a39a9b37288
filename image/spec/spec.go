// Package spec reads image.hcl, the description of what sluice-image
// builds: which sluice configuration to embed, for which architecture,
// with which kernel, network, sysctls and files, and which outputs.
// Errors point at file:line:col, like the daemon's configuration.
package spec

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	hcl "github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"

	sluicehcl "sluice/hcl"
	"sluice/image/initconf"
)

// Outputs sluice-image can build.
const (
	OutOCI       = "oci"
	OutInitramfs = "initramfs"
	OutDisk      = "disk"
)

// Arches the appliance and the OCI image can be built for.
var Arches = []string{"amd64", "arm64"}

// NetDrivers are the network card modules every appliance carries.
var NetDrivers = []string{"virtio_pci", "virtio_net", "e1000", "e1000e", "igb", "ixgbe"}

// bootModules make the ACPI power button reach the init as a key press.
var bootModules = []string{"button", "evdev"}

// DataModules let the init find and mount the data partition: disk
// controllers (virtio, NVMe, SATA) and FAT.
var DataModules = []string{"virtio_blk", "nvme", "ahci", "sd_mod", "vfat", "nls_cp437", "nls_ascii"}

// Spec is a checked image.hcl. Paths are absolute.
type Spec struct {
	File     string // image.hcl itself
	Dir      string // its directory: relative paths start here
	Arch     string
	Hostname string
	Config   string // sluice configuration: a file or a directory of *.hcl
	Binaries string // directory holding linux-ARCH/sluice and linux-ARCH/sluice-init
	CACerts  string // CA bundle for the OCI image
	Kernel   Kernel
	Cmdline  string
	Network  []initconf.Interface
	Sysctls  map[string]string
	Files    []File
	Admin    *initconf.Admin
	Outputs  []string
	OCI      OCI
	Disk     Disk
}

// Kernel says where vmlinuz and its modules come from: a linux-image .deb
// (both), or a vmlinuz path plus a modules directory.
type Kernel struct {
	Vmlinuz string
	Modules string // lib/modules/VERSION directory
	Deb     string
	Load    []string // modules to load at boot, beyond the network drivers
	EFIStub string   // systemd's EFI stub, or the systemd-boot-efi .deb holding it
}

// File is an extra file copied into the image.
type File struct {
	Path   string // inside the image
	Source string
	Mode   os.FileMode
}

// OCI describes the container image.
type OCI struct {
	Platforms []string
	Tag       string
}

// Disk describes the UEFI disk image.
type Disk struct {
	Size     int64 // whole image
	DataSize int64 // persistent data partition; 0: none
}

// Wants reports whether output is asked for.
func (s *Spec) Wants(output string) bool { return slices.Contains(s.Outputs, output) }

// Modules are the modules to load at boot, in the order asked.
func (s *Spec) Modules() []string {
	m := append(slices.Clone(NetDrivers), bootModules...)
	if s.Wants(OutDisk) && s.Disk.DataSize > 0 {
		m = append(m, DataModules...)
	}
	return append(m, s.Kernel.Load...)
}

// The schema, decoded with gohcl. Attributes that are checked beyond
// their type stay expressions, so that errors can point at them.
type fileSchema struct {
	Arch     hcl.Expression  `hcl:"arch,optional"`
	Hostname hcl.Expression  `hcl:"hostname,optional"`
	Config   hcl.Expression  `hcl:"config"`
	Binaries hcl.Expression  `hcl:"binaries,optional"`
	CACerts  hcl.Expression  `hcl:"ca_certificates,optional"`
	Cmdline  *string         `hcl:"cmdline,optional"`
	Sysctl   hcl.Expression  `hcl:"sysctl,optional"`
	Outputs  hcl.Expression  `hcl:"outputs,optional"`
	Kernel   *kernelSchema   `hcl:"kernel,block"`
	Networks []networkSchema `hcl:"network,block"`
	Files    []fileBlock     `hcl:"file,block"`
	Admin    *adminSchema    `hcl:"admin,block"`
	OCI      *ociSchema      `hcl:"oci,block"`
	Disk     *diskSchema     `hcl:"disk,block"`
}

type kernelSchema struct {
	Vmlinuz hcl.Expression `hcl:"vmlinuz,optional"`
	Modules hcl.Expression `hcl:"modules,optional"`
	Deb     hcl.Expression `hcl:"deb,optional"`
	EFIStub hcl.Expression `hcl:"efi_stub,optional"`
	Load    []string       `hcl:"load,optional"`
	Body    hcl.Body       `hcl:",body"`
}

type networkSchema struct {
	Name    string         `hcl:"name,label"`
	DHCP    *bool          `hcl:"dhcp,optional"`
	Address hcl.Expression `hcl:"address,optional"`
	Gateway hcl.Expression `hcl:"gateway,optional"`
	DNS     hcl.Expression `hcl:"dns,optional"`
	Body    hcl.Body       `hcl:",body"`
}

type fileBlock struct {
	Path   string         `hcl:"path,label"`
	Source hcl.Expression `hcl:"source"`
	Mode   *string        `hcl:"mode,optional"`
	Body   hcl.Body       `hcl:",body"`
}

type adminSchema struct {
	Address hcl.Expression `hcl:"address"`
	Level   hcl.Expression `hcl:"level,optional"`
}

type ociSchema struct {
	Platforms hcl.Expression `hcl:"platforms,optional"`
	Tag       *string        `hcl:"tag,optional"`
}

type diskSchema struct {
	Size hcl.Expression `hcl:"size,optional"`
	Data hcl.Expression `hcl:"data,optional"`
}

type decoder struct{ diags hcl.Diagnostics }

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	r := rng
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary,
		Detail: fmt.Sprintf(format, args...), Subject: &r})
}

// set reports whether an optional attribute was written.
func set(e hcl.Expression) bool {
	if e == nil {
		return false
	}
	v, diags := e.Value(nil)
	return diags.HasErrors() || !v.IsNull()
}

// value decodes e into target when it was written.
func (d *decoder) value(e hcl.Expression, target any) bool {
	if !set(e) {
		return false
	}
	ds := gohcl.DecodeExpression(e, nil, target)
	d.diags = append(d.diags, ds...)
	return !ds.HasErrors()
}

func (d *decoder) str(e hcl.Expression, def string) string {
	s := def
	d.value(e, &s)
	return s
}

// path decodes a path relative to dir; must says it has to exist.
func (d *decoder) path(e hcl.Expression, dir string, must bool) string {
	var p string
	if !d.value(e, &p) || p == "" {
		return ""
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	if _, err := os.Stat(p); must && err != nil {
		d.errorf(e.Range(), "File not found", "%v.", err)
	}
	return p
}

func (d *decoder) size(e hcl.Expression, def int64) int64 {
	var s string
	if !d.value(e, &s) {
		return def
	}
	n, err := sluicehcl.ParseSize(s)
	if err != nil {
		d.errorf(e.Range(), "Invalid size", "%v.", err)
	}
	return n
}

// Load reads and checks image.hcl. The returned parser holds the source,
// for diagnostics with context.
func Load(path string) (*Spec, hcl.Diagnostics) {
	parser := hclparse.NewParser()
	f, diags := parser.ParseHCLFile(path)
	if diags.HasErrors() {
		return nil, diags
	}
	var raw fileSchema
	if ds := gohcl.DecodeBody(f.Body, nil, &raw); ds.HasErrors() {
		return nil, append(diags, ds...)
	}
	abs, _ := filepath.Abs(path)
	s := &Spec{File: abs, Dir: filepath.Dir(abs), Sysctls: map[string]string{}}
	d := &decoder{diags: diags}
	d.decode(s, &raw)
	if d.diags.HasErrors() {
		return nil, d.diags
	}
	return s, d.diags
}

func (d *decoder) decode(s *Spec, raw *fileSchema) {
	s.Arch = d.str(raw.Arch, "amd64")
	if !slices.Contains(Arches, s.Arch) {
		d.errorf(raw.Arch.Range(), "Unknown architecture", "%q: sluice images are built for %s.", s.Arch, strings.Join(Arches, ", "))
	}
	s.Hostname = d.str(raw.Hostname, "sluice")
	if s.Hostname == "" || len(s.Hostname) > 64 || strings.ContainsAny(s.Hostname, " ./\t") {
		d.errorf(raw.Hostname.Range(), "Invalid hostname", "%q is not a host name (1 to 64 characters, no dots, spaces or slashes).", s.Hostname)
	}
	s.Config = d.path(raw.Config, s.Dir, true)
	if s.Config != "" && !d.diags.HasErrors() {
		if _, _, ds := sluicehcl.Load([]string{s.Config}); ds.HasErrors() {
			d.errorf(raw.Config.Range(), "Invalid sluice configuration", "%s does not load: %s.", s.Config, ds.Error())
		}
	}
	s.Binaries = filepath.Join(s.Dir, "bin")
	if set(raw.Binaries) {
		s.Binaries = d.path(raw.Binaries, s.Dir, false)
	}
	if set(raw.CACerts) {
		s.CACerts = d.path(raw.CACerts, s.Dir, true)
	}
	s.Cmdline = "console=ttyS0 panic=-1"
	if raw.Cmdline != nil {
		s.Cmdline = *raw.Cmdline
	}
	var sysctls map[string]string
	if d.value(raw.Sysctl, &sysctls) {
		for k, v := range sysctls {
			if k == "" || strings.ContainsAny(k, "/ ") || strings.Contains(k, "..") {
				d.errorf(raw.Sysctl.Range(), "Invalid sysctl", "%q is not a sysctl name (like net.core.somaxconn).", k)
			}
			s.Sysctls[k] = v
		}
	}
	s.Outputs = []string{OutOCI, OutInitramfs, OutDisk}
	if d.value(raw.Outputs, &s.Outputs) {
		for _, o := range s.Outputs {
			if o != OutOCI && o != OutInitramfs && o != OutDisk {
				d.errorf(raw.Outputs.Range(), "Unknown output", "%q: outputs are %q, %q and %q.", o, OutOCI, OutInitramfs, OutDisk)
			}
		}
	}
	if k := raw.Kernel; k != nil {
		s.Kernel.Deb = d.path(k.Deb, s.Dir, true)
		s.Kernel.Vmlinuz = d.path(k.Vmlinuz, s.Dir, true)
		s.Kernel.Modules = d.path(k.Modules, s.Dir, true)
		s.Kernel.Load = k.Load
		s.Kernel.EFIStub = d.path(k.EFIStub, s.Dir, true)
		rng := k.Body.MissingItemRange()
		switch {
		case s.Kernel.Deb != "" && (s.Kernel.Vmlinuz != "" || s.Kernel.Modules != ""):
			d.errorf(rng, "Conflicting kernel sources", "name either deb (vmlinuz and modules from one package) or vmlinuz and modules, not both.")
		case s.Kernel.Deb == "" && (s.Kernel.Vmlinuz == "") != (s.Kernel.Modules == ""):
			d.errorf(rng, "Incomplete kernel", "vmlinuz and modules go together, so that the modules match the kernel.")
		}
	}
	d.networks(s, raw.Networks)
	for _, f := range raw.Files {
		file := File{Path: f.Path, Source: d.path(f.Source, s.Dir, true), Mode: 0o644}
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path {
			d.errorf(f.Body.MissingItemRange(), "Invalid file path", "%q: a file's path in the image is absolute and clean.", f.Path)
		}
		if f.Mode != nil {
			var m uint32
			if _, err := fmt.Sscanf(*f.Mode, "%o", &m); err != nil || m > 0o7777 {
				d.errorf(f.Body.MissingItemRange(), "Invalid mode", "%q is not an octal file mode like \"0644\".", *f.Mode)
			}
			file.Mode = os.FileMode(m)
		}
		s.Files = append(s.Files, file)
	}
	sort.Slice(s.Files, func(i, j int) bool { return s.Files[i].Path < s.Files[j].Path })
	if a := raw.Admin; a != nil {
		s.Admin = &initconf.Admin{Address: d.str(a.Address, ""), Level: d.str(a.Level, "admin")}
		if _, err := netip.ParseAddrPort(s.Admin.Address); err != nil {
			d.errorf(a.Address.Range(), "Invalid admin address", "%q: an admin socket address is IP:port (%v).", s.Admin.Address, err)
		}
		if !slices.Contains([]string{"user", "operator", "admin"}, s.Admin.Level) {
			d.errorf(a.Level.Range(), "Invalid level", "%q: levels are user, operator and admin.", s.Admin.Level)
		}
	}
	s.OCI = OCI{Platforms: []string{"amd64", "arm64"}, Tag: "sluice:latest"}
	if o := raw.OCI; o != nil {
		if d.value(o.Platforms, &s.OCI.Platforms) {
			for _, p := range s.OCI.Platforms {
				if !slices.Contains(Arches, p) {
					d.errorf(o.Platforms.Range(), "Unknown platform", "%q: platforms are %s.", p, strings.Join(Arches, ", "))
				}
			}
		}
		if o.Tag != nil {
			s.OCI.Tag = *o.Tag
		}
	}
	s.Disk = Disk{Size: 128 << 20}
	if k := raw.Disk; k != nil {
		s.Disk.Size = d.size(k.Size, s.Disk.Size)
		s.Disk.DataSize = d.size(k.Data, 0)
		if s.Disk.DataSize >= s.Disk.Size-(32<<20) {
			d.errorf(k.Size.Range(), "Disk too small", "the EFI partition needs 32 MiB beside the data partition.")
		}
	}
}

func (d *decoder) networks(s *Spec, raw []networkSchema) {
	seen := map[string]bool{}
	for _, n := range raw {
		rng := n.Body.MissingItemRange()
		if seen[n.Name] {
			d.errorf(rng, "Duplicate network", "interface %q is configured twice.", n.Name)
		}
		seen[n.Name] = true
		iface := initconf.Interface{Name: n.Name}
		if n.DHCP != nil {
			iface.DHCP = *n.DHCP
		}
		if set(n.Address) {
			iface.Address = d.str(n.Address, "")
			if _, err := netip.ParsePrefix(iface.Address); err != nil {
				d.errorf(n.Address.Range(), "Invalid address", "%q: a static address is written with its prefix, like 192.0.2.10/24.", iface.Address)
			}
		}
		if set(n.Gateway) {
			iface.Gateway = d.str(n.Gateway, "")
			if _, err := netip.ParseAddr(iface.Gateway); err != nil {
				d.errorf(n.Gateway.Range(), "Invalid gateway", "%q is not an IP address.", iface.Gateway)
			}
		}
		if d.value(n.DNS, &iface.DNS) {
			for _, a := range iface.DNS {
				if _, err := netip.ParseAddr(a); err != nil {
					d.errorf(n.DNS.Range(), "Invalid DNS server", "%q is not an IP address.", a)
				}
			}
		}
		switch {
		case iface.DHCP && iface.Address != "":
			d.errorf(rng, "Conflicting network settings", "interface %q: either dhcp or a static address.", n.Name)
		case !iface.DHCP && iface.Address == "":
			d.errorf(rng, "Incomplete network", "interface %q: set dhcp = true or a static address.", n.Name)
		}
		s.Network = append(s.Network, iface)
	}
}
