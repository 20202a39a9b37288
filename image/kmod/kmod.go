// Package kmod takes a kernel and the modules an appliance needs from a
// Debian linux-image package or a modules directory, and orders the
// modules so that each comes after those it depends on. Dependencies are
// read from each module's own .modinfo section ("depends="), since
// Debian's package carries no modules.dep.
package kmod

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/blakesmith/ar"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Module is one kernel module, uncompressed.
type Module struct {
	Name    string // as the kernel knows it: dashes become underscores
	File    string // file name in the image: NAME.ko
	Depends []string
	Data    []byte
}

// Kernel is a vmlinuz and the modules found beside it.
type Kernel struct {
	Version string
	Vmlinuz []byte
	files   map[string]string // module name to its file, read when needed
	builtin map[string]bool   // from modules.builtin: no module needed
}

// FromDeb reads vmlinuz and the modules from a linux-image .deb. The
// package is unpacked once into cacheDir, under its SHA-256: decompressing
// hundreds of megabytes of modules takes longer than the rest of a build.
func FromDeb(debPath, cacheDir string) (*Kernel, error) {
	sum, err := fileSum(debPath)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cacheDir, "kernel-"+sum[:24])
	if _, err := os.Stat(filepath.Join(dir, "vmlinuz")); err != nil {
		if err := unpackDeb(debPath, dir); err != nil {
			return nil, err
		}
	}
	version, err := os.ReadFile(filepath.Join(dir, "version"))
	if err != nil {
		return nil, err
	}
	k, err := FromDir(filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "modules"))
	if k != nil {
		k.Version = string(version)
	}
	return k, err
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// unpackDeb writes vmlinuz, version and modules/ (uncompressed .ko files
// and modules.builtin) into dir, atomically.
func unpackDeb(debPath, dir string) error {
	f, err := os.Open(debPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tmp := fmt.Sprintf("%s.%d.tmp", dir, os.Getpid())
	os.RemoveAll(tmp)
	defer os.RemoveAll(tmp)
	if err := os.MkdirAll(filepath.Join(tmp, "modules"), 0o755); err != nil {
		return err
	}
	r := ar.NewReader(f)
	for {
		h, err := r.Next()
		if err != nil {
			return fmt.Errorf("%s: no data.tar member: %w", debPath, err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if !strings.HasPrefix(name, "data.tar") {
			continue
		}
		dr, err := Decompressor(name, r)
		if err != nil {
			return fmt.Errorf("%s: %w", debPath, err)
		}
		if err := unpackTar(tar.NewReader(dr), tmp); err != nil {
			return fmt.Errorf("%s: %w", debPath, err)
		}
		break
	}
	if _, err := os.Stat(filepath.Join(tmp, "vmlinuz")); err != nil {
		return fmt.Errorf("%s: no /boot/vmlinuz-* in the package", debPath)
	}
	os.MkdirAll(filepath.Dir(dir), 0o755)
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) {
		if _, statErr := os.Stat(filepath.Join(dir, "vmlinuz")); statErr != nil {
			return err // not a concurrent unpack that finished first
		}
	}
	return nil
}

// Decompressor returns a reader of name's contents, by its extension.
func Decompressor(name string, r io.Reader) (io.Reader, error) {
	switch path.Ext(name) {
	case ".xz":
		return xz.NewReader(r)
	case ".gz":
		return gzip.NewReader(r)
	case ".zst":
		return zstd.NewReader(r)
	case ".tar", ".ko":
		return r, nil
	}
	return nil, fmt.Errorf("unknown compression of %s", name)
}

func unpackTar(tr *tar.Reader, dir string) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(h.Name, ".")
		base := path.Base(name)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		var out string
		var r io.Reader = tr
		switch {
		case strings.HasPrefix(name, "/boot/vmlinuz-"):
			out = filepath.Join(dir, "vmlinuz")
			if err := os.WriteFile(filepath.Join(dir, "version"), []byte(strings.TrimPrefix(name, "/boot/vmlinuz-")), 0o644); err != nil {
				return err
			}
		case !strings.Contains(name, "/lib/modules/"):
			continue
		case base == "modules.builtin":
			out = filepath.Join(dir, "modules", base)
		case strings.Contains(base, ".ko"):
			i := strings.Index(base, ".ko")
			if r, err = Decompressor(base[i:], tr); err != nil {
				return err
			}
			out = filepath.Join(dir, "modules", base[:i]+".ko")
		default:
			continue
		}
		w, err := os.Create(out)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, r)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// FromDir reads vmlinuz from a file and indexes the modules under a
// lib/modules/VERSION directory (compressed or not).
func FromDir(vmlinuz, modulesDir string) (*Kernel, error) {
	k := &Kernel{files: map[string]string{}, builtin: map[string]bool{}, Version: filepath.Base(modulesDir)}
	var err error
	if k.Vmlinuz, err = os.ReadFile(vmlinuz); err != nil {
		return nil, err
	}
	err = filepath.WalkDir(modulesDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		base := e.Name()
		if base == "modules.builtin" {
			list, err := os.ReadFile(p)
			for _, l := range strings.Fields(string(list)) {
				k.builtin[moduleName(path.Base(l))] = true
			}
			return err
		}
		if strings.Contains(base, ".ko") {
			k.files[moduleName(base)] = p
		}
		return nil
	})
	return k, err
}

// moduleName is the kernel's name for a module file: no extension, and
// underscores for dashes.
func moduleName(file string) string {
	if i := strings.Index(file, ".ko"); i >= 0 {
		file = file[:i]
	}
	return strings.ReplaceAll(file, "-", "_")
}

// load reads a module file, uncompressed, with its dependencies.
func (k *Kernel) load(name string) (*Module, error) {
	p := k.files[name]
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	base := filepath.Base(p)
	dec, err := Decompressor(base[strings.Index(base, ".ko"):], f)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(dec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	m := &Module{Name: name, File: name + ".ko", Data: data}
	if m.Depends, err = depends(data); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

// depends reads "depends=" from the module's .modinfo section.
func depends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, errors.New("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			deps := strings.Split(string(v), ",")
			for i, d := range deps {
				deps[i] = strings.ReplaceAll(d, "-", "_")
			}
			return deps, nil
		}
	}
	return nil, nil
}

// Resolve returns the named modules and everything they depend on, each
// after its dependencies. Names the kernel has built in are no error:
// they need no module.
func (k *Kernel) Resolve(names []string) ([]*Module, error) {
	var order []*Module
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name string, from string) error
	visit = func(name, from string) error {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			return fmt.Errorf("module %s depends on itself through %s", name, from)
		case 2:
			return nil
		}
		if k.files[name] == "" {
			if k.builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) is not in kernel %s", name, from, k.Version)
			}
			return fmt.Errorf("module %s is not in kernel %s", name, k.Version)
		}
		m, err := k.load(name)
		if err != nil {
			return err
		}
		state[name] = 1
		deps := append([]string(nil), m.Depends...)
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, m)
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}
