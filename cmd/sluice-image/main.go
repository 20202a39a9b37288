// Command sluice-image builds sluice appliances on a build host, in pure
// Go, without root or external tools: an OCI image, an initramfs whose
// PID 1 is sluice-init, and a UEFI-bootable disk image, as image.hcl
// describes.
//
//	sluice-image build -f image.hcl -o OUTDIR
//	sluice-image check -f image.hcl
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	sluicehcl "sluice/hcl"
	"sluice/image/build"
	"sluice/image/spec"
	"sluice/version"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  sluice-image build -f image.hcl -o OUTDIR [--bin DIR] [--kernel-deb FILE] [--efi-stub FILE]
  sluice-image check -f image.hcl
  sluice-image version
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "build":
		return buildCmd(args[1:], stdout, stderr)
	case "check":
		return checkCmd(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "sluice-image %s\n", version.Version)
		return 0
	case "-h", "--help", "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "sluice-image: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func load(path string, stderr io.Writer) *spec.Spec {
	s, diags := spec.Load(path)
	sluicehcl.WriteDiagnostics(stderr, diags)
	return s
}

func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "image.hcl", "image description")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s := load(*file, stderr)
	if s == nil {
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid: %s appliance, outputs %v\n", *file, s.Arch, s.Outputs)
	return 0
}

func buildCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "image.hcl", "image description")
	out := fs.String("o", "dist/appliance", "output directory")
	bin := fs.String("bin", "", "directory holding linux-ARCH/sluice and linux-ARCH/sluice-init (overrides image.hcl)")
	kernelDeb := fs.String("kernel-deb", "", "linux-image .deb to take vmlinuz and modules from when image.hcl names no kernel")
	efiStub := fs.String("efi-stub", "", "systemd EFI stub, or the systemd-boot-efi .deb (overrides image.hcl)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s := load(*file, stderr)
	if s == nil {
		return 1
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	// SOURCE_DATE_EPOCH fixes every timestamp the outputs carry.
	epoch := time.Unix(0, 0)
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			fmt.Fprintf(stderr, "sluice-image: SOURCE_DATE_EPOCH=%q is not a number of seconds\n", v)
			return 2
		}
		epoch = time.Unix(n, 0)
	}
	res, err := build.Build(s, build.Options{Out: *out, Binaries: *bin, KernelDeb: *kernelDeb, EFIStub: *efiStub,
		CacheDir: filepath.Join(cache, "sluice-image"), Epoch: epoch, Log: stdout})
	if err != nil {
		fmt.Fprintf(stderr, "sluice-image: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "built %s in %.1f s\n", *out, res.Took.Seconds())
	return 0
}
