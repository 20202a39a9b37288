package appliance

import (
	"archive/tar"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestOCI checks the layout and the docker-archive with
// go-containerregistry's own validation, then what a user of the image
// relies on: its platforms, entrypoint, user and files.
func TestOCI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	build(t, writeSpec(t, dir, `"oci"`, `oci {
  platforms = ["amd64", "arm64"]
  tag       = "sluice:test"
}`), out)

	lp, err := layout.FromPath(filepath.Join(out, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(top); err != nil {
		t.Fatalf("OCI layout does not validate: %v", err)
	}
	topManifest, _ := top.IndexManifest()
	if len(topManifest.Manifests) != 1 || topManifest.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "sluice:test" {
		t.Fatalf("index.json: %+v, want one multi-arch index named sluice:test", topManifest.Manifests)
	}
	idx, err := top.ImageIndex(topManifest.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	var arches []string
	for _, d := range im.Manifests {
		arches = append(arches, d.Platform.Architecture)
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, d.Platform.Architecture)
	}
	slices.Sort(arches)
	if !slices.Equal(arches, []string{"amd64", "arm64"}) {
		t.Errorf("platforms %v, want amd64 and arm64", arches)
	}

	img, err := tarball.ImageFromPath(filepath.Join(out, "sluice-oci.tar"), nil)
	if err != nil {
		t.Fatalf("docker-archive: %v", err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("docker-archive does not validate: %v", err)
	}
	checkImage(t, img, "amd64")
}

func checkImage(t *testing.T, img v1.Image, arch string) {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != arch || cfg.OS != "linux" {
		t.Errorf("%s image says %s/%s", arch, cfg.OS, cfg.Architecture)
	}
	if cfg.Config.User == "" || cfg.Config.User == "0" || cfg.Config.User[0] == '0' || cfg.Config.User == "root" {
		t.Errorf("%s image runs as %q, want a non-root user", arch, cfg.Config.User)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/bin/sluice", "run"}) || !slices.Equal(cfg.Config.Cmd, []string{"-f", "/etc/sluice/sluice.hcl"}) {
		t.Errorf("%s image: entrypoint %q cmd %q", arch, cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if _, ok := cfg.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("%s image exposes %v, want 8080/tcp from the configuration", arch, cfg.Config.ExposedPorts)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(mutate.Extract(img))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
	}
	for _, want := range []string{"usr/bin/sluice", "etc/sluice/sluice.hcl", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group"} {
		if files[want] == nil {
			t.Errorf("%s image lacks /%s", arch, want)
		}
	}
	if h := files["usr/bin/sluice"]; h != nil && h.Mode&0o111 == 0 {
		t.Errorf("/usr/bin/sluice is not executable: %o", h.Mode)
	}
	if h := files["run/sluice"]; h == nil || h.Uid == 0 {
		t.Errorf("%s image: /run/sluice missing or not writable by the sluice user", arch)
	}
	if len(files) > 20 {
		t.Errorf("%s image holds %d entries; it should hold only sluice, its configuration, CA certificates and passwd", arch, len(files))
	}
}
