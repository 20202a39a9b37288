package api

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sluice/daemon/master"
	"sluice/hcl"
)

// readPayload recognises a command line ending in "<<" or "<<WORD" and
// reads its payload from r: up to an empty line, or up to a line that is
// WORD.
func readPayload(r *bufio.Reader, line string) (cmd string, payload []byte, ok bool) {
	line = strings.TrimRight(line, "\r\n")
	i := strings.LastIndex(line, "<<")
	if i < 0 || strings.ContainsAny(line[i+2:], " \t;") {
		return "", nil, false
	}
	end := line[i+2:]
	var b bytes.Buffer
	for {
		l, err := r.ReadString('\n')
		trimmed := strings.TrimRight(l, "\r\n")
		if (end == "" && trimmed == "") || (end != "" && trimmed == end) {
			break
		}
		b.WriteString(l)
		if err != nil {
			break // the payload ends with the connection
		}
	}
	return strings.TrimSpace(line[:i]), b.Bytes(), true
}

// payloadCommand runs a command that came with a payload.
func (s *Server) payloadCommand(w io.Writer, cmd string, payload []byte) {
	if strings.Join(strings.Fields(cmd), " ") != "set config" {
		fmt.Fprintf(w, "Unknown command: '%s': only set config takes a payload\n\n", cmd)
		return
	}
	if levels[s.cfg.Level] < levels["admin"] {
		fmt.Fprint(w, "Permission denied\n\n")
		return
	}
	fmt.Fprintf(w, "%s\n\n", s.setConfig(payload))
}

// setConfig checks a new configuration and, when it loads, writes it over
// the file this process runs from. It takes effect at the next reload;
// a configuration with errors changes nothing.
func (s *Server) setConfig(payload []byte) string {
	if len(s.ConfigPaths) != 1 {
		return "set config: this process runs from several configuration paths; it replaces a single file"
	}
	path := s.ConfigPaths[0]
	if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
		return fmt.Sprintf("set config: %s is not a regular file; set config replaces a single configuration file", path)
	}
	// Written beside the target, so that relative paths in it (file())
	// resolve the same, and so that the rename is atomic.
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.%d.new.hcl", filepath.Base(path), os.Getpid()))
	if err := os.WriteFile(tmp, payload, 0o640); err != nil {
		return fmt.Sprintf("set config: cannot write %s: %v", tmp, err)
	}
	defer os.Remove(tmp)
	_, _, diags := hcl.Load([]string{tmp})
	if diags.HasErrors() {
		var b strings.Builder
		fmt.Fprintln(&b, "set config: the new configuration has errors; nothing changed:")
		hcl.WriteDiagnostics(&b, diags)
		return strings.TrimRight(strings.ReplaceAll(b.String(), tmp, "<payload>"), "\n")
	}
	if err := syncFile(tmp); err != nil {
		return fmt.Sprintf("set config: %v; nothing changed", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Sprintf("set config: cannot replace %s: %v; nothing changed", path, err)
	}
	syncFile(filepath.Dir(path)) // the rename itself, on disk
	s.log.Info("configuration replaced over the runtime API", "path", path, "bytes", len(payload))
	return fmt.Sprintf("Configuration written to %s (%d bytes); reload to apply it.", path, len(payload))
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// cmdReload asks the master for a reload, like HAProxy's master CLI
// "reload", and returns its outcome.
func cmdReload(s *Server, w io.Writer, _ []string) string {
	control := os.Getenv(master.EnvControl)
	if control == "" {
		return "reload: this process has no master (it runs with --no-master)"
	}
	_, lines, err := master.Ask(control, "reload", 2*time.Minute)
	if err != nil {
		return "reload: " + err.Error()
	}
	return strings.Join(lines, "\n") // "OK ..." or "FAIL ...", then details
}

func cmdSetConfig(s *Server, w io.Writer, _ []string) string {
	return "set config takes the configuration as a payload: set config <<EOF, the file, then a line EOF"
}
