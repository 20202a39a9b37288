// Package oci builds sluice's container image with go-containerregistry:
// one layer holding the static binary, the configuration, CA certificates
// and a minimal /etc/passwd, run as a non-root user; one image per
// architecture under a multi-arch index. It writes an OCI image layout
// and a docker-archive tarball (docker load, podman load).
package oci

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The user the container runs as.
const (
	UID  = 65532
	User = "sluice"
)

// File is one file of the image's layer.
type File struct {
	Path string
	Mode int64
	Data []byte
}

// Arch is what differs per architecture: the binary.
type Arch struct {
	Arch   string // amd64, arm64
	Sluice []byte
}

// Input is what goes into every image.
type Input struct {
	Config      []File // the sluice configuration, under /etc/sluice
	CACerts     []byte
	Ports       []int // exposed
	Created     time.Time
	ConfigPaths []string // given to sluice run -f
}

// Build returns one image per architecture and the index over them.
func Build(in Input, arches []Arch) (v1.ImageIndex, map[string]v1.Image, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	images := map[string]v1.Image{}
	for _, a := range arches {
		img, err := image(in, a)
		if err != nil {
			return nil, nil, fmt.Errorf("%s image: %w", a.Arch, err)
		}
		images[a.Arch] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: a.Arch}}})
	}
	return idx, images, nil
}

func image(in Input, a Arch) (v1.Image, error) {
	files := []File{
		{Path: "/usr/bin/sluice", Mode: 0o755, Data: a.Sluice},
		{Path: "/etc/passwd", Mode: 0o644, Data: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:sluice:/var/lib/sluice:/sbin/nologin\n", User, UID, UID)},
		{Path: "/etc/group", Mode: 0o644, Data: fmt.Appendf(nil, "root:x:0:\n%s:x:%d:\n", User, UID)},
		{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: in.CACerts},
	}
	files = append(files, in.Config...)
	layerTar, err := tarLayer(files, []string{"/run/sluice", "/tmp", "/var/lib/sluice"}, in.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", a.Arch
	cfg.Created = v1.Time{Time: in.Created}
	cfg.Config.User = strconv.Itoa(UID) + ":" + strconv.Itoa(UID)
	cfg.Config.Entrypoint = []string{"/usr/bin/sluice", "run"}
	for _, p := range in.ConfigPaths {
		cfg.Config.Cmd = append(cfg.Config.Cmd, "-f", p)
	}
	cfg.Config.Env = []string{"PATH=/usr/bin"}
	cfg.Config.WorkingDir = "/"
	cfg.Config.StopSignal = "SIGTERM"
	cfg.Config.Labels = map[string]string{"org.opencontainers.image.title": "sluice"}
	if len(in.Ports) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range in.Ports {
			cfg.Config.ExposedPorts[fmt.Sprintf("%d/tcp", p)] = struct{}{}
		}
	}
	cfg.History = []v1.History{{Created: v1.Time{Time: in.Created}, CreatedBy: "sluice-image"}}
	return mutate.ConfigFile(img, cfg)
}

// tarLayer writes files and writable directories (owned by the sluice
// user) into a tar with sorted entries and fixed times.
func tarLayer(files []File, writable []string, mtime time.Time) ([]byte, error) {
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	entries := map[string]entry{}
	dir := func(p string, uid int, mode int64) {
		entries[p+"/"] = entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: p[1:] + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: mtime}}
	}
	parents := func(p string) {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d+"/"]; !ok {
				dir(d, 0, 0o755)
			}
		}
	}
	for _, w := range writable {
		parents(w)
		dir(w, UID, 0o755)
	}
	for _, f := range files {
		parents(f.Path)
		entries[f.Path] = entry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: f.Path[1:], Mode: f.Mode, Size: int64(len(f.Data)), ModTime: mtime}, data: f.Data}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLayout writes an OCI image layout at dir whose index.json points
// at the multi-arch index, named tag.
func WriteLayout(dir string, idx v1.ImageIndex, tag string) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag}))
}

// WriteDockerArchive writes img as a docker-archive tarball named tag.
func WriteDockerArchive(file string, img v1.Image, tag string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(file, ref, img)
}
