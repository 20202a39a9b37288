// Package build turns a checked image.hcl into the outputs it asks for:
// vmlinuz and initramfs.cpio.gz, disk.img (UEFI), and the OCI image as a
// layout (oci/) and a docker-archive (sluice-oci.tar).
package build

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/blakesmith/ar"

	sluicehcl "sluice/hcl"
	"sluice/image/disk"
	"sluice/image/initconf"
	"sluice/image/initramfs"
	"sluice/image/kmod"
	"sluice/image/oci"
	"sluice/image/spec"
	"sluice/image/uki"
	"sluice/version"
)

// Output file names in the output directory.
const (
	Vmlinuz       = "vmlinuz"
	Initramfs     = "initramfs.cpio.gz"
	Disk          = "disk.img"
	OCILayout     = "oci"
	DockerArchive = "sluice-oci.tar"
)

// MaxInitramfs is the size budget of the compressed initramfs.
const MaxInitramfs = 12 << 20

// DefaultEFIStub is where Debian's systemd-boot-efi puts the x86-64 stub.
const DefaultEFIStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// Options are the build host's side: where things are and go.
type Options struct {
	Out       string
	Binaries  string // overrides image.hcl's binaries
	KernelDeb string // the kernel when image.hcl names none
	EFIStub   string // overrides image.hcl's efi_stub
	CacheDir  string // unpacked kernel packages
	Epoch     time.Time
	Log       io.Writer
}

// Result reports what was built.
type Result struct {
	Files map[string]int64 // output name to size
	Took  time.Duration
}

type builder struct {
	s   *spec.Spec
	o   Options
	res *Result
	// The sluice configuration's files with their paths in the image,
	// and the path sluice runs with.
	config     []oci.File
	configPath string
}

// Build builds every output s asks for into o.Out.
func Build(s *spec.Spec, o Options) (*Result, error) {
	start := time.Now()
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.Binaries != "" {
		s.Binaries = o.Binaries
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	b := &builder{s: s, o: o, res: &Result{Files: map[string]int64{}}}
	var err error
	if b.config, b.configPath, err = configFiles(s.Config); err != nil {
		return nil, err
	}
	if s.Wants(spec.OutInitramfs) || s.Wants(spec.OutDisk) {
		if err := b.appliance(); err != nil {
			return nil, err
		}
	}
	if s.Wants(spec.OutOCI) {
		if err := b.oci(); err != nil {
			return nil, err
		}
	}
	b.res.Took = time.Since(start)
	return b.res, nil
}

func (b *builder) binary(arch, name string) ([]byte, error) {
	p := filepath.Join(b.s.Binaries, "linux-"+arch, name)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%s for %s: %w (make image builds it; or set binaries in image.hcl)", name, arch, err)
	}
	return data, nil
}

func (b *builder) write(name string, data []byte) error {
	p := filepath.Join(b.o.Out, name)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	b.res.Files[name] = int64(len(data))
	fmt.Fprintf(b.o.Log, "wrote %s (%s)\n", p, human(int64(len(data))))
	return nil
}

// configFiles are the sluice configuration's files with their paths in
// the image, and the path sluice runs with: /etc/sluice/sluice.hcl for a
// file, /etc/sluice/conf.d for a directory.
func configFiles(config string) ([]oci.File, string, error) {
	st, err := os.Stat(config)
	if err != nil {
		return nil, "", err
	}
	if !st.IsDir() {
		data, err := os.ReadFile(config)
		return []oci.File{{Path: initconf.SluiceConfig, Mode: 0o644, Data: data}}, initconf.SluiceConfig, err
	}
	names, err := filepath.Glob(filepath.Join(config, "*.hcl"))
	if err != nil {
		return nil, "", err
	}
	sort.Strings(names)
	var files []oci.File
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			return nil, "", err
		}
		files = append(files, oci.File{Path: "/etc/sluice/conf.d/" + filepath.Base(n), Mode: 0o644, Data: data})
	}
	return files, "/etc/sluice/conf.d", nil
}

// kernel opens the kernel image.hcl names, or the package make image
// downloaded.
func (b *builder) kernel() (*kmod.Kernel, error) {
	k := b.s.Kernel
	switch {
	case k.Deb != "":
		return kmod.FromDeb(k.Deb, b.o.CacheDir)
	case k.Vmlinuz != "":
		return kmod.FromDir(k.Vmlinuz, k.Modules)
	case b.o.KernelDeb != "":
		return kmod.FromDeb(b.o.KernelDeb, b.o.CacheDir)
	}
	return nil, errors.New("no kernel: name one in image.hcl (kernel { deb = ... }) or pass --kernel-deb")
}

// appliance builds vmlinuz, the initramfs and the disk image.
func (b *builder) appliance() error {
	k, err := b.kernel()
	if err != nil {
		return err
	}
	modules, err := k.Resolve(b.s.Modules())
	if err != nil {
		return err
	}
	initBin, err := b.binary(b.s.Arch, "sluice-init")
	if err != nil {
		return err
	}
	sluiceBin, err := b.binary(b.s.Arch, "sluice")
	if err != nil {
		return err
	}
	conf := initconf.Config{Hostname: b.s.Hostname, Network: b.s.Network, Sysctls: b.s.Sysctls, Admin: b.s.Admin, Config: b.configPath}
	if b.s.Wants(spec.OutDisk) && b.s.Disk.DataSize > 0 {
		conf.DataPartition = disk.DataPartition
	}
	a := initramfs.New()
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "var/lib/sluice", "etc/sluice"} {
		a.Dir(d, 0o755)
	}
	a.CharDev("dev/console", 0o600, 5, 1)
	a.CharDev("dev/null", 0o666, 1, 3)
	a.File("init", 0o755, initBin)
	a.File(initconf.SluiceBinary, 0o755, sluiceBin)
	for _, f := range b.config {
		a.File(f.Path, uint32(f.Mode), f.Data)
	}
	for _, m := range modules {
		a.File(path.Join(initconf.ModulesDir, m.File), 0o644, m.Data)
		conf.Modules = append(conf.Modules, m.File)
	}
	for _, f := range b.s.Files {
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return err
		}
		a.File(f.Path, uint32(f.Mode), data)
	}
	confJSON, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	a.File(initconf.Path, 0o644, confJSON)
	a.File("etc/os-release", 0o644, b.osRelease())
	initrd, err := a.Gzip()
	if err != nil {
		return err
	}
	if len(initrd) > MaxInitramfs {
		return fmt.Errorf("the initramfs is %s, over its %s budget", human(int64(len(initrd))), human(MaxInitramfs))
	}
	fmt.Fprintf(b.o.Log, "kernel %s, %d modules: %s\n", k.Version, len(modules), moduleNames(modules))
	if b.s.Wants(spec.OutInitramfs) {
		if err := b.write(Vmlinuz, k.Vmlinuz); err != nil {
			return err
		}
		if err := b.write(Initramfs, initrd); err != nil {
			return err
		}
	}
	if b.s.Wants(spec.OutDisk) {
		return b.disk(k.Vmlinuz, initrd)
	}
	return nil
}

func moduleNames(ms []*kmod.Module) string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	return strings.Join(names, " ")
}

func (b *builder) osRelease() []byte {
	return fmt.Appendf(nil, "NAME=sluice\nID=sluice\nPRETTY_NAME=\"sluice appliance %s\"\nVERSION_ID=%s\nHOME_URL=https://github.com/sluice\n", version.Version, version.Version)
}

// disk builds the unified kernel image and the GPT disk holding it.
func (b *builder) disk(vmlinuz, initrd []byte) error {
	stub, err := b.efiStub()
	if err != nil {
		return err
	}
	image, err := uki.Build(stub, []uki.Section{
		{Name: ".osrel", Data: b.osRelease()},
		{Name: ".cmdline", Data: []byte(b.s.Cmdline)},
		{Name: ".initrd", Data: initrd},
		{Name: ".linux", Data: vmlinuz},
	})
	if err != nil {
		return err
	}
	p := filepath.Join(b.o.Out, Disk)
	tmp := p + ".tmp"
	if err := disk.Write(tmp, b.s.Disk.Size, b.s.Disk.DataSize, b.s.Arch, image); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("disk image: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	b.res.Files[Disk] = b.s.Disk.Size
	fmt.Fprintf(b.o.Log, "wrote %s (%s, unified kernel image %s)\n", p, human(b.s.Disk.Size), human(int64(len(image))))
	return nil
}

// efiStub reads the stub from a file, or from the systemd-boot-efi .deb
// that holds it.
func (b *builder) efiStub() ([]byte, error) {
	p := DefaultEFIStub
	if b.s.Arch == "arm64" {
		p = "/usr/lib/systemd/boot/efi/linuxaa64.efi.stub"
	}
	if b.s.Kernel.EFIStub != "" {
		p = b.s.Kernel.EFIStub
	}
	if b.o.EFIStub != "" {
		p = b.o.EFIStub
	}
	if !strings.HasSuffix(p, ".deb") {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("EFI stub: %w (install systemd-boot-efi, or set kernel { efi_stub = ... })", err)
		}
		return data, nil
	}
	return stubFromDeb(p, b.s.Arch)
}

func stubFromDeb(debPath, arch string) ([]byte, error) {
	want := "linuxx64.efi.stub"
	if arch == "arm64" {
		want = "linuxaa64.efi.stub"
	}
	f, err := os.Open(debPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := ar.NewReader(f)
	for {
		h, err := r.Next()
		if err != nil {
			return nil, fmt.Errorf("%s: no %s: %w", debPath, want, err)
		}
		if !strings.HasPrefix(h.Name, "data.tar") {
			continue
		}
		dr, err := kmod.Decompressor(strings.TrimSuffix(h.Name, "/"), r)
		if err != nil {
			return nil, err
		}
		tr := tar.NewReader(dr)
		for {
			th, err := tr.Next()
			if err != nil {
				return nil, fmt.Errorf("%s: no %s", debPath, want)
			}
			if path.Base(th.Name) == want {
				return io.ReadAll(tr)
			}
		}
	}
}

// oci builds the container image for every platform asked.
func (b *builder) oci() error {
	caPath := b.s.CACerts
	if caPath == "" {
		caPath = "/etc/ssl/certs/ca-certificates.crt"
	}
	ca, err := os.ReadFile(caPath)
	if err != nil {
		return fmt.Errorf("CA certificates for the OCI image: %w (set ca_certificates in image.hcl)", err)
	}
	var arches []oci.Arch
	for _, p := range b.s.OCI.Platforms {
		bin, err := b.binary(p, "sluice")
		if err != nil {
			return err
		}
		arches = append(arches, oci.Arch{Arch: p, Sluice: bin})
	}
	in := oci.Input{Config: b.config, CACerts: ca, Ports: b.ports(), Created: b.o.Epoch.UTC(), ConfigPaths: []string{b.configPath}}
	idx, images, err := oci.Build(in, arches)
	if err != nil {
		return err
	}
	dir := filepath.Join(b.o.Out, OCILayout)
	os.RemoveAll(dir)
	if err := oci.WriteLayout(dir, idx, b.s.OCI.Tag); err != nil {
		return fmt.Errorf("OCI layout: %w", err)
	}
	fmt.Fprintf(b.o.Log, "wrote %s (OCI layout, %s)\n", dir, strings.Join(b.s.OCI.Platforms, ", "))
	b.res.Files[OCILayout] = dirSize(dir)
	// docker load takes one platform: the appliance's, else the first.
	img := images[b.s.Arch]
	if img == nil {
		img = images[b.s.OCI.Platforms[0]]
	}
	p := filepath.Join(b.o.Out, DockerArchive)
	if err := oci.WriteDockerArchive(p, img, b.s.OCI.Tag); err != nil {
		return fmt.Errorf("docker archive: %w", err)
	}
	st, _ := os.Stat(p)
	b.res.Files[DockerArchive] = st.Size()
	fmt.Fprintf(b.o.Log, "wrote %s (docker-archive, %s)\n", p, human(st.Size()))
	return nil
}

// ports are the TCP ports the configuration binds, for EXPOSE.
func (b *builder) ports() []int {
	cfg, _, _ := sluicehcl.Load([]string{b.s.Config})
	if cfg == nil {
		return nil
	}
	seen := map[int]bool{}
	var ports []int
	for _, fe := range cfg.Frontends {
		for _, bind := range fe.Binds {
			i := strings.LastIndexByte(bind.Address, ':')
			var port int
			if i >= 0 {
				fmt.Sscan(bind.Address[i+1:], &port)
			}
			if port > 0 && !seen[port] {
				seen[port] = true
				ports = append(ports, port)
			}
		}
	}
	sort.Ints(ports)
	return ports
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func human(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
