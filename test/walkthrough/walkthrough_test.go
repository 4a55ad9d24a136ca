// Package walkthrough runs the README's walkthroughs exactly as written.
//
// A walkthrough is a scenario of fenced blocks, each right after a marker
//
//	<!-- walkthrough: SCENARIO server|run|output -->
//
// A server block is started first, in the background, as a reader runs it
// in a shell of its own, and the scenario goes on once it has printed
// "dpsd is ready."; the run blocks then run, in the order of the README, in
// one other shell (a reader's second shell: variables carry over); an
// output block is what the run block before it prints: a JSON block is
// matched by its members (those the README shows must be there with these
// values), a text block line by line, somewhere in the output (runs of
// blanks are one, "…" stands for any text and, alone on a line, for any
// lines; timestamps and event-log positions differ from run to run).
//
// Each scenario runs from a copy of the checkout's files (what a fresh
// clone holds) in a network namespace of its own, so that the README's
// default ports (443, 8883, 9090, 8080) are free and nothing leaves
// loopback. Only the environment differs from a reader's: no DPS_/DPSD_
// variables, and the go command told to build without cgo and local paths
// (CGO_ENABLED=0, GOFLAGS=-trimpath), which lets every copy share the build
// cache with make static instead of compiling the module again.
package walkthrough

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// scenarios are the walkthroughs the README must have.
var scenarios = []string{"quickstart", "other-ports", "custom-allocation"}

type block struct {
	role, lang, text string
	line             int
}

var marker = regexp.MustCompile(`^<!-- walkthrough: ([a-z0-9-]+) (server|run|output) -->$`)

// parse returns each scenario's blocks in README order.
func parse(readme string) (map[string][]block, error) {
	lines := strings.Split(readme, "\n")
	out := map[string][]block{}
	for i := 0; i < len(lines); i++ {
		m := marker.FindStringSubmatch(strings.TrimSpace(lines[i]))
		if m == nil {
			if strings.Contains(lines[i], "<!-- walkthrough") {
				return nil, fmt.Errorf("README.md:%d: malformed walkthrough marker %q", i+1, lines[i])
			}
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) == "" {
			j++
		}
		if j == len(lines) || !strings.HasPrefix(lines[j], "```") {
			return nil, fmt.Errorf("README.md:%d: walkthrough marker not followed by a fenced block", i+1)
		}
		b := block{role: m[2], lang: strings.TrimPrefix(lines[j], "```"), line: j + 1}
		var body []string
		for j++; j < len(lines) && !strings.HasPrefix(lines[j], "```"); j++ {
			body = append(body, lines[j])
		}
		if j == len(lines) {
			return nil, fmt.Errorf("README.md:%d: unterminated block", b.line)
		}
		b.text = strings.Join(body, "\n") + "\n"
		if b.role != "output" && b.lang != "sh" {
			return nil, fmt.Errorf("README.md:%d: a %s block must be ```sh", b.line, b.role)
		}
		out[m[1]] = append(out[m[1]], b)
		i = j
	}
	return out, nil
}

func TestREADME(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: each walkthrough runs in a network namespace of its own (ip netns), where its default ports are free")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("ip (iproute2) is not installed: make deps installs it")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	walks, err := parse(string(readme))
	if err != nil {
		t.Fatal(err)
	}
	for name := range walks {
		found := false
		for _, s := range scenarios {
			found = found || s == name
		}
		if !found {
			t.Errorf("README.md has a walkthrough %q that this test does not know: add it to scenarios", name)
		}
	}
	for _, name := range scenarios {
		t.Run(name, func(t *testing.T) {
			blocks := walks[name]
			var servers, runs int
			for _, b := range blocks {
				servers += map[bool]int{true: 1}[b.role == "server"]
				runs += map[bool]int{true: 1}[b.role == "run"]
			}
			if servers == 0 || runs == 0 {
				t.Fatalf("README.md: walkthrough %q has %d server and %d run blocks; want both", name, servers, runs)
			}
			runScenario(t, root, name, blocks)
		})
	}
}

func runScenario(t *testing.T, root, name string, blocks []block) {
	dir := freshCopy(t, root)
	ns := netns(t, name)
	env := environ()

	for _, b := range blocks {
		if b.role == "server" {
			startServer(t, ns, dir, env, b)
		}
	}
	// The run blocks, in one shell, each announced by a line of its own.
	const sep = "@@walkthrough-block@@"
	var script strings.Builder
	var runs []block
	for _, b := range blocks {
		if b.role == "run" {
			fmt.Fprintf(&script, "echo '%s'\n%s", sep, b.text)
			runs = append(runs, b)
		}
	}
	out, err := shell(t, ns, dir, env, script.String(), 5*time.Minute)
	chunks := strings.Split(out, sep+"\n")[1:]
	if err != nil {
		t.Fatalf("the run blocks failed (%v) in block %d (README.md:%d); their output:\n%s", err, len(chunks), runs[max(len(chunks), 1)-1].line, out)
	}
	if len(chunks) != len(runs) {
		t.Fatalf("%d run blocks, %d outputs:\n%s", len(runs), len(chunks), out)
	}
	ran := -1
	for _, b := range blocks {
		switch b.role {
		case "run":
			ran++
		case "output":
			if ran < 0 {
				t.Fatalf("README.md:%d: an output block before any run block", b.line)
			}
			if err := matchOutput(b, chunks[ran]); err != nil {
				t.Errorf("README.md:%d: the output of the block at README.md:%d does not match: %v\nit printed:\n%s", b.line, runs[ran].line, err, chunks[ran])
			}
		}
	}
}

// freshCopy copies what a clone of the checkout holds (tracked files, and
// new files git does not ignore) into a temporary directory.
func freshCopy(t *testing.T, root string) string {
	t.Helper()
	list, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files in %s: %v", root, err)
	}
	dir := filepath.Join(t.TempDir(), "dps")
	for _, name := range strings.Split(strings.TrimRight(string(list), "\x00"), "\x00") {
		src := filepath.Join(root, name)
		fi, err := os.Lstat(src)
		if err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, or not a file
		}
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, fi.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// netns creates a network namespace with loopback up, removed at cleanup.
func netns(t *testing.T, name string) string {
	t.Helper()
	ns := fmt.Sprintf("dps-walk-%d-%s", os.Getpid(), name)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("loopback up in %s: %v\n%s", ns, err, out)
	}
	return ns
}

// environ is the test's environment without dps's own variables, with the
// go command told to build as make static does.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DPS_") || strings.HasPrefix(k, "DPSD_") || k == "GOFLAGS" || k == "CGO_ENABLED" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "CGO_ENABLED=0", "GOFLAGS=-trimpath", "GOPROXY=off", "GOTOOLCHAIN=local")
}

// command is sh -eu running text in the namespace, in its own process
// group (the group is ended at cleanup, with what the text started in the
// background).
func command(t *testing.T, ns, dir string, env []string, text string) *exec.Cmd {
	cmd := exec.Command("ip", "netns", "exec", ns, "sh", "-eu", "-c", text)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// endGroup sends SIGTERM to a process group, then SIGKILL after 20 s.
func endGroup(pgid int, done <-chan struct{}) {
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// shell runs text to completion and returns what it printed; background
// processes it started are ended when it exits.
func shell(t *testing.T, ns, dir string, env []string, text string, timeout time.Duration) (string, error) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := command(t, ns, dir, env, text)
	cmd.Stdout, cmd.Stderr = f, f // a file: background processes keep no pipe open
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(timeout):
		err = fmt.Errorf("still running after %s", timeout)
	}
	exited := make(chan struct{})
	close(exited)
	endGroup(cmd.Process.Pid, exited)
	out, _ := os.ReadFile(f.Name())
	return string(out), err
}

// lockedBuffer collects a server's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServer starts a server block and waits for dpsd's banner; the
// block's process group is ended at cleanup.
func startServer(t *testing.T, ns, dir string, env []string, b block) {
	t.Helper()
	var out lockedBuffer
	cmd := command(t, ns, dir, env, b.text)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		endGroup(cmd.Process.Pid, done)
		<-done
		if t.Failed() {
			t.Logf("the server block at README.md:%d printed:\n%s", b.line, out.String())
		}
	})
	// make build may compile first.
	if err := waitFor(&out, "dpsd is ready.", done, 5*time.Minute); err != nil {
		t.Fatalf("the server block at README.md:%d %v:\n%s", b.line, err, out.String())
	}
	// The banner's last line: the block's reader has all of it.
	if err := waitFor(&out, "Linked hubs:", done, 30*time.Second); err != nil {
		t.Fatalf("the server block at README.md:%d printed \"dpsd is ready.\" but %v (the banner's last line):\n%s", b.line, err, out.String())
	}
}

// waitFor waits until out holds text; an error when done is closed (the
// block ended) or after timeout.
func waitFor(out fmt.Stringer, text string, done <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !strings.Contains(out.String(), text) {
		select {
		case <-done:
			if strings.Contains(out.String(), text) {
				return nil
			}
			return fmt.Errorf("ended before it printed %q", text)
		case <-ctx.Done():
			return fmt.Errorf("printed no %q within %s", text, timeout)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// matchOutput checks a run block's output against an output block.
func matchOutput(b block, got string) error {
	if b.lang == "json" {
		var want any
		if err := json.Unmarshal([]byte(b.text), &want); err != nil {
			return fmt.Errorf("the README's JSON does not parse: %v", err)
		}
		v, err := firstJSON(got)
		if err != nil {
			return err
		}
		return subset("", want, v)
	}
	return matchLines(b.text, got)
}

// firstJSON decodes the JSON value that starts at the output's first line
// beginning with "{".
func firstJSON(out string) (any, error) {
	i := strings.Index("\n"+out, "\n{")
	if i < 0 {
		return nil, fmt.Errorf("no JSON object in the output")
	}
	var v any
	if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(&v); err != nil {
		return nil, fmt.Errorf("the output's JSON: %v", err)
	}
	return v, nil
}

// subset reports where want is not part of got: objects need want's
// members (got may have more), arrays and scalars are equal.
func subset(path string, want, got any) error {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: the README shows an object, the output has %v", orRoot(path), got)
		}
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				return fmt.Errorf("%s.%s: in the README, not in the output", orRoot(path), k)
			}
			if err := subset(path+"."+k, wv, gv); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Errorf("%s: the README shows %v, the output has %v", orRoot(path), want, got)
		}
		for i := range w {
			if err := subset(fmt.Sprintf("%s[%d]", path, i), w[i], g[i]); err != nil {
				return err
			}
		}
		return nil
	default:
		if want != got {
			return fmt.Errorf("%s: the README shows %v, the output has %v", orRoot(path), want, got)
		}
		return nil
	}
}

func orRoot(path string) string {
	if path == "" {
		return "(top)"
	}
	return path
}

var (
	timestamp = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	position  = regexp.MustCompile(`^#\d+ `)
	blanks    = regexp.MustCompile(`\s+`)
)

func normalize(line string) string {
	line = blanks.ReplaceAllString(strings.TrimSpace(line), " ")
	line = timestamp.ReplaceAllString(line, "<time>")
	return position.ReplaceAllString(line, "#<n> ")
}

// matchLines: want's lines appear in got one after the other ("…" alone
// on a line skips any lines, "…" in a line any text).
func matchLines(want, got string) error {
	var pats []*regexp.Regexp // nil: any lines
	for _, l := range strings.Split(strings.TrimSpace(want), "\n") {
		if n := normalize(l); n == "…" {
			pats = append(pats, nil)
		} else {
			pats = append(pats, regexp.MustCompile("^"+strings.ReplaceAll(regexp.QuoteMeta(n), "…", ".*")+"$"))
		}
	}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(got))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if n := normalize(sc.Text()); n != "" {
			lines = append(lines, n)
		}
	}
	var match func(p, l int) bool
	match = func(p, l int) bool {
		if p == len(pats) {
			return true
		}
		if pats[p] == nil {
			for k := l; k <= len(lines); k++ {
				if match(p+1, k) {
					return true
				}
			}
			return false
		}
		return l < len(lines) && pats[p].MatchString(lines[l]) && match(p+1, l+1)
	}
	for start := range lines {
		if match(0, start) {
			return nil
		}
	}
	return fmt.Errorf("the README's lines\n%s\nare not in the output", want)
}
