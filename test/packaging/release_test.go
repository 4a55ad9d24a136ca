package packaging

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestRelease runs make release: static dpsd and dpsctl for linux/amd64
// and linux/arm64 (cross-compiled, no cgo), listed with their SHA-256 in
// SHA256SUMS, stamped with the module, the build settings and (in a git
// clone) the commit.
func TestRelease(t *testing.T) {
	dist := filepath.Join(t.TempDir(), "dist")
	runMake(t, "release", "DIST="+dist)

	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q: want sha256sum's format", sc.Text())
		}
		listed[name] = sum
	}
	revision := headRevision(t)
	for _, arch := range []struct {
		goarch  string
		machine elf.Machine
	}{{"amd64", elf.EM_X86_64}, {"arm64", elf.EM_AARCH64}} {
		for _, prog := range []string{"dpsd", "dpsctl"} {
			name := prog + "-linux-" + arch.goarch
			path := filepath.Join(dist, name)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			sum := sha256.Sum256(b)
			if got := hex.EncodeToString(sum[:]); listed[name] != got {
				t.Errorf("%s: SHA256SUMS says %q, the file's is %s", name, listed[name], got)
			}
			delete(listed, name)
			checkStatic(t, path, arch.machine)
			bi, err := buildinfo.ReadFile(path)
			if err != nil {
				t.Errorf("%s: no build information: %v", name, err)
				continue
			}
			settings := map[string]string{}
			for _, s := range bi.Settings {
				settings[s.Key] = s.Value
			}
			if bi.Path != "github.com/opendps/dps/cmd/"+prog || bi.Main.Path != "github.com/opendps/dps" || bi.Main.Version == "" {
				t.Errorf("%s: built from %s in module %s %q", name, bi.Path, bi.Main.Path, bi.Main.Version)
			}
			for k, want := range map[string]string{"GOOS": "linux", "GOARCH": arch.goarch, "CGO_ENABLED": "0", "-trimpath": "true"} {
				if settings[k] != want {
					t.Errorf("%s: build setting %s=%q, want %q", name, k, settings[k], want)
				}
			}
			if revision != "" && settings["vcs.revision"] != revision {
				t.Errorf("%s: vcs.revision %q, want the checkout's %s", name, settings["vcs.revision"], revision)
			}
			if arch.goarch == runtime.GOARCH {
				args := map[string][]string{"dpsd": {"--version"}, "dpsctl": {"version"}}[prog]
				out, err := exec.Command(path, args...).CombinedOutput()
				if err != nil || !strings.HasPrefix(string(out), prog+" "+bi.Main.Version+" ") {
					t.Errorf("%s %v: %q, %v; want %s %s …", name, args, out, err, prog, bi.Main.Version)
				}
			}
		}
	}
	if len(listed) > 0 {
		t.Errorf("SHA256SUMS lists files that are not release binaries: %v", slices.Sorted(maps.Keys(listed)))
	}
}

// headRevision is the commit of the checkout when the go command stamps
// it into binaries (a clone: .git is a directory; a git worktree's .git
// file is not recognised by the go command), else "".
func headRevision(t *testing.T) string {
	t.Helper()
	fi, err := os.Stat(filepath.Join(root(t), ".git"))
	if err != nil || !fi.IsDir() {
		t.Log("not a git clone: the binaries carry no VCS revision")
		return ""
	}
	out, err := exec.Command("git", "-C", root(t), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Logf("git rev-parse HEAD: %v", err)
		return ""
	}
	return strings.TrimSpace(string(out))
}
