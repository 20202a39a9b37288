// Package disk writes the appliance's UEFI disk image: a GPT disk whose
// EFI system partition (FAT32) holds the unified kernel image at the
// path firmware boots by default, and optionally a data partition for
// persistent state. GUIDs are fixed and the filesystem is made in
// go-diskfs's reproducible mode, so the same inputs give the same bytes.
package disk

import (
	"fmt"
	"os"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Fixed identifiers: the disk is a product, not an installation.
const (
	diskGUID = "5C1A1CE0-0000-4000-8000-000000000001"
	espGUID  = "5C1A1CE0-0000-4000-8000-000000000002"
	dataGUID = "5C1A1CE0-0000-4000-8000-000000000003"
)

// DataPartition is the GPT name of the data partition; the init mounts
// the partition it finds by that name.
const DataPartition = "sluice-data"

// BootPath is where UEFI firmware looks for a loader on removable media.
func BootPath(arch string) string {
	if arch == "arm64" {
		return "/EFI/BOOT/BOOTAA64.EFI"
	}
	return "/EFI/BOOT/BOOTX64.EFI"
}

const sector = 512

// Write creates the disk image at path: size bytes in all, a data
// partition of dataSize bytes (none if 0), the rest for the ESP.
func Write(path string, size, dataSize int64, arch string, uki []byte) error {
	os.Remove(path)
	d, err := diskfs.Create(path, size, diskfs.SectorSizeDefault)
	if err != nil {
		return err
	}
	defer d.Close()
	// 1 MiB at the start for the protective MBR and the primary GPT, and
	// 1 MiB at the end for the backup GPT.
	first := uint64(2048)
	last := uint64(size/sector) - 2048
	espEnd := last - 1
	if dataSize > 0 {
		espEnd = last - uint64(dataSize/sector) - 1
	}
	parts := []*gpt.Partition{{Index: 1, Start: first, End: espEnd, Type: gpt.EFISystemPartition, Name: "EFI system", GUID: espGUID}}
	if dataSize > 0 {
		parts = append(parts, &gpt.Partition{Index: 2, Start: espEnd + 1, End: last - 1, Type: gpt.LinuxFilesystem, Name: DataPartition, GUID: dataGUID})
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true, GUID: diskGUID, Partitions: parts}); err != nil {
		return fmt.Errorf("partition table: %w", err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: "EFI", Reproducible: true})
	if err != nil {
		return fmt.Errorf("EFI system partition: %w", err)
	}
	if err := fs.Mkdir("/EFI/BOOT"); err != nil {
		return err
	}
	f, err := fs.OpenFile(BootPath(arch), os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	if _, err := f.Write(uki); err != nil {
		return fmt.Errorf("writing the unified kernel image: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if dataSize > 0 {
		if _, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 2, FSType: filesystem.TypeFat32, VolumeLabel: "SLUICEDATA", Reproducible: true}); err != nil {
			return fmt.Errorf("data partition: %w", err)
		}
	}
	return nil
}
