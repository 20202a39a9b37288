// Package uki builds a unified kernel image: systemd's EFI stub with the
// kernel, the initramfs, the command line and an os-release appended as
// PE sections. Firmware starts the stub, which boots the .linux section
// with the .initrd and .cmdline it carries. The stub is read with
// debug/pe; the new section headers and data are written here.
package uki

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
)

// Section is one section to append.
type Section struct {
	Name string // at most 8 bytes, like ".linux"
	Data []byte
}

const (
	sectionHeaderSize = 40
	// IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
	dataCharacteristics = 0x40000040
)

// Build returns the stub with sections appended in the order given. The
// stub's own headers must leave room for the new section headers, which
// systemd's stubs do. Put .linux last: the stub hands the kernel the
// memory that follows it.
func Build(stub []byte, sections []Section) ([]byte, error) {
	f, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		return nil, fmt.Errorf("EFI stub: %w", err)
	}
	opt, ok := f.OptionalHeader.(*pe.OptionalHeader64)
	if !ok {
		return nil, errors.New("EFI stub: not a PE32+ image")
	}
	// Where the headers are, read from the DOS and COFF headers.
	peOff := int(binary.LittleEndian.Uint32(stub[0x3c:]))
	coffOff := peOff + 4
	optOff := coffOff + 20
	secTable := optOff + int(f.FileHeader.SizeOfOptionalHeader)
	nsec := len(f.Sections)
	if need := secTable + (nsec+len(sections))*sectionHeaderSize; need > int(opt.SizeOfHeaders) {
		return nil, fmt.Errorf("EFI stub: no room for %d more section headers (%d bytes of headers, %d needed)", len(sections), opt.SizeOfHeaders, need)
	}
	for _, s := range f.Sections {
		for _, n := range sections {
			if s.Name == n.Name {
				return nil, fmt.Errorf("EFI stub already has a %s section", s.Name)
			}
		}
	}
	fileAlign, sectAlign := opt.FileAlignment, opt.SectionAlignment
	// New sections start after the stub's last one, in memory and on disk.
	var vaEnd uint32
	for _, s := range f.Sections {
		vaEnd = max(vaEnd, s.VirtualAddress+max(s.VirtualSize, s.Size))
	}
	out := make([]byte, alignUp(uint32(len(stub)), fileAlign))
	copy(out, stub)
	va := alignUp(vaEnd, sectAlign)
	for i, s := range sections {
		if len(s.Name) > 8 {
			return nil, fmt.Errorf("section name %q is longer than 8 bytes", s.Name)
		}
		raw := uint32(len(out))
		size := alignUp(uint32(len(s.Data)), fileAlign)
		out = append(out, s.Data...)
		out = append(out, make([]byte, int(size)-len(s.Data))...)
		h := out[secTable+(nsec+i)*sectionHeaderSize:]
		clear(h[:sectionHeaderSize])
		copy(h[0:8], s.Name)
		binary.LittleEndian.PutUint32(h[8:], uint32(len(s.Data))) // VirtualSize
		binary.LittleEndian.PutUint32(h[12:], va)                 // VirtualAddress
		binary.LittleEndian.PutUint32(h[16:], size)               // SizeOfRawData
		binary.LittleEndian.PutUint32(h[20:], raw)                // PointerToRawData
		binary.LittleEndian.PutUint32(h[36:], dataCharacteristics)
		opt.SizeOfInitializedData += size
		va = alignUp(va+uint32(len(s.Data)), sectAlign)
	}
	binary.LittleEndian.PutUint16(out[coffOff+2:], uint16(nsec+len(sections))) // NumberOfSections
	binary.LittleEndian.PutUint32(out[optOff+8:], opt.SizeOfInitializedData)
	binary.LittleEndian.PutUint32(out[optOff+56:], va) // SizeOfImage
	binary.LittleEndian.PutUint32(out[optOff+64:], 0)  // CheckSum: firmware ignores it
	// Check the result reads back as the image we meant.
	g, err := pe.NewFile(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("unified kernel image does not parse: %w", err)
	}
	if len(g.Sections) != nsec+len(sections) {
		return nil, errors.New("unified kernel image: section count mismatch")
	}
	return out, nil
}

func alignUp(n, a uint32) uint32 {
	if a == 0 {
		return n
	}
	return (n + a - 1) / a * a
}
