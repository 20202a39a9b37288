package initramfs

import (
	"bytes"
	"io"
	"testing"

	"github.com/cavaliergopher/cpio"
)

// TestReadBack reads the archive with an independent newc reader.
func TestReadBack(t *testing.T) {
	a := New()
	a.File("usr/bin/sluice", 0o755, []byte("binary"))
	a.CharDev("dev/console", 0o600, 5, 1)
	var buf bytes.Buffer
	if err := a.WriteCpio(&buf); err != nil {
		t.Fatal(err)
	}
	raw := bytes.Clone(buf.Bytes())
	r := cpio.NewReader(&buf)
	got := map[string]*cpio.Header{}
	var names []string
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "usr/bin/sluice" {
			if b, _ := io.ReadAll(r); string(b) != "binary" {
				t.Errorf("file content %q", b)
			}
		}
		got[h.Name] = h
		names = append(names, h.Name)
	}
	want := []string{"dev", "dev/console", "usr", "usr/bin", "usr/bin/sluice"}
	if len(names) != len(want) {
		t.Fatalf("entries %v, want %v", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %v, want %v (sorted, parents first)", names, want)
		}
	}
	if h := got["dev/console"]; h.Mode&cpio.ModeType != cpio.TypeChar {
		t.Errorf("dev/console mode %o", h.Mode)
	}
	if h := got["usr/bin/sluice"]; h.Mode.Perm() != 0o755 || !h.Mode.IsRegular() || !h.ModTime.IsZero() && h.ModTime.Unix() != 0 {
		t.Errorf("sluice header %+v", h)
	}
	// Device numbers: rdevmajor and rdevminor, fields 10 and 11.
	i := bytes.Index(raw, []byte("dev/console\x00"))
	hdr := string(raw[i-110 : i])
	if hdr[6+9*8:6+10*8] != "00000005" || hdr[6+10*8:6+11*8] != "00000001" {
		t.Errorf("dev/console device numbers in %q, want 5,1", hdr)
	}
}
