// Package initramfs writes the appliance's initramfs: a newc cpio archive,
// gzip-compressed, with entries sorted and timestamps zero so that the
// same inputs give the same bytes.
//
// The writer is our own: the cpio libraries at hand cannot write a device
// node's major and minor numbers, and the kernel needs dev/console
// (char 5,1) in the archive, since it mounts no devtmpfs before /init runs.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Entry types.
const (
	typeDir  = 0o040000
	typeReg  = 0o100000
	typeChar = 0o020000
)

// Archive is an initramfs being assembled. Parent directories are added
// on their own.
type Archive struct {
	entries map[string]*entry
}

type entry struct {
	mode         uint32
	data         []byte
	major, minor uint32
}

// New returns an empty archive.
func New() *Archive { return &Archive{entries: map[string]*entry{}} }

// File adds a regular file.
func (a *Archive) File(name string, perm uint32, data []byte) {
	a.add(name, &entry{mode: typeReg | perm&0o7777, data: data})
}

// Dir adds a directory.
func (a *Archive) Dir(name string, perm uint32) { a.add(name, &entry{mode: typeDir | perm&0o7777}) }

// CharDev adds a character device node.
func (a *Archive) CharDev(name string, perm, major, minor uint32) {
	a.add(name, &entry{mode: typeChar | perm&0o7777, major: major, minor: minor})
}

func (a *Archive) add(name string, e *entry) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	for dir := path.Dir(name); dir != "." && dir != "/"; dir = path.Dir(dir) {
		if a.entries[dir] == nil {
			a.entries[dir] = &entry{mode: typeDir | 0o755}
		}
	}
	a.entries[name] = e
}

// WriteCpio writes the uncompressed newc archive. Entries come in sorted
// order, which puts every directory before what it holds.
func (a *Archive) WriteCpio(w io.Writer) error {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	cw := &countWriter{w: w}
	for i, n := range names {
		e := a.entries[n]
		nlink := 1
		if e.mode&0o170000 == typeDir {
			nlink = 2
		}
		writeHeader(cw, uint32(i+1), e, nlink, n)
		cw.Write(e.data)
		cw.pad()
	}
	writeHeader(cw, 0, &entry{}, 1, "TRAILER!!!")
	return cw.err
}

// writeHeader writes a "070701" header: thirteen 8-digit hex fields, then
// the NUL-terminated name, padded to four bytes.
func writeHeader(cw *countWriter, ino uint32, e *entry, nlink int, name string) {
	fmt.Fprintf(cw, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.major, e.minor, len(name)+1, 0)
	io.WriteString(cw, name+"\x00")
	cw.pad()
}

// Gzip returns the archive compressed with gzip at its best compression;
// Go's compressor has no timestamp or name in its header unless told.
func (a *Archive) Gzip() ([]byte, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err := a.WriteCpio(zw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// pad writes zeros up to the next multiple of four.
func (c *countWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.Write(make([]byte, 4-r))
	}
}
