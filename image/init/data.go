package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"sluice/image/initconf"
)

// persistentConfig mounts the data partition and returns the
// configuration to run: the one kept there, which the runtime API's set
// config replaces and which so survives reboots; on first boot the
// image's is copied there. Without the partition, the image's is used.
func persistentConfig(partName, imageConfig string) string {
	dev := findPartition(partName)
	if dev == "" {
		logf("data partition %q not found: the configuration will not persist", partName)
		return imageConfig
	}
	os.MkdirAll(initconf.DataDir, 0o755)
	if err := unix.Mount(dev, initconf.DataDir, "vfat", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "umask=077"); err != nil {
		logf("mount %s on %s: %v", dev, initconf.DataDir, err)
		return imageConfig
	}
	logf("mounted data partition %s on %s", dev, initconf.DataDir)
	st, err := os.Stat(imageConfig)
	if err != nil || st.IsDir() {
		return imageConfig // a directory of files stays the image's
	}
	kept := filepath.Join(initconf.DataDir, filepath.Base(imageConfig))
	if _, err := os.Stat(kept); err == nil {
		logf("using the configuration kept in %s", kept)
		return kept
	}
	if err := copyFile(imageConfig, kept); err != nil {
		logf("cannot keep the configuration on the data partition: %v", err)
		return imageConfig
	}
	unix.Sync()
	return kept
}

// findPartition waits for a block device whose GPT partition name is
// name (the kernel reports it as PARTNAME in uevent) and returns its
// /dev path.
func findPartition(name string) string {
	deadline := time.Now().Add(linkWait)
	for time.Now().Before(deadline) {
		uevents, _ := filepath.Glob("/sys/class/block/*/uevent")
		for _, u := range uevents {
			f, err := os.Open(u)
			if err != nil {
				continue
			}
			var dev, part string
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "DEVNAME="); ok {
					dev = v
				}
				if v, ok := strings.CutPrefix(sc.Text(), "PARTNAME="); ok {
					part = v
				}
			}
			f.Close()
			if part == name && dev != "" {
				return "/dev/" + dev
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return ""
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
