// Package packaging tests what dps ships besides its Go packages: the
// container image (make image), the release binaries (make release),
// compose.yaml and the systemd unit. The image and release tests run the
// Makefile's targets into a temporary DIST, as a user would run them.
package packaging

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// root is the repository's top directory (this package is test/packaging).
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "Makefile")); err != nil {
		t.Fatalf("no Makefile at the repository root %s: %v", dir, err)
	}
	return dir
}

// runMake runs make in the repository root with the arguments (variables
// and targets) and fails the test when it fails.
func runMake(t *testing.T, args ...string) string {
	t.Helper()
	began := time.Now()
	cmd := exec.Command("make", append([]string{"--no-print-directory", "-C", root(t)}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	t.Logf("make %s: %s", strings.Join(args, " "), time.Since(began).Round(time.Millisecond))
	return out.String()
}

// checkStatic fails unless the file is a statically linked ELF executable
// for machine: no program interpreter, no shared libraries (a FROM scratch
// image has no libc to load).
func checkStatic(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: machine %s, want %s", path, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: has a program interpreter: dynamically linked", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", path, libs)
	}
}
