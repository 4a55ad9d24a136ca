package dpstest

import (
	"bufio"
	"bytes"
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

// BuildDPSD builds the dpsd binary into a temporary directory.
func BuildDPSD(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "dpsd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/opendps/dps/cmd/dpsd").CombinedOutput(); err != nil {
		tb.Fatalf("build dpsd: %v\n%s", err, out)
	}
	return bin
}

// Process is a dpsd process started by StartDPSD, with what its banner said.
type Process struct {
	cmd              *exec.Cmd
	mu               sync.Mutex
	logs             bytes.Buffer
	HTTPS, MQTT      string // host:port
	Scope            string
	ConnectionString string
	// HubConnectionString is the first built-in hub's generated
	// iothubowner connection string ("" when none was printed).
	HubConnectionString string
	CAFile              string
	done                chan struct{}
}

// PID is the process ID (for /proc/PID/status).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Logs returns what the process wrote to stderr.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.logs.Write(b)
}

// StartDPSD runs bin with the configuration file and waits for its banner.
// The process is stopped at cleanup (and its log printed if the test failed).
func StartDPSD(tb testing.TB, bin, config string) *Process {
	tb.Helper()
	p := &Process{cmd: exec.Command(bin, "--config", config), done: make(chan struct{})}
	p.cmd.Stderr = lockedWriter{p}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		p.Stop()
		if tb.Failed() {
			tb.Logf("dpsd %s log:\n%s", config, p.Logs())
		}
	})
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Linked hubs:") {
				banner <- b.String()
			}
		}
	}()
	var text string
	select {
	case text = <-banner:
	case <-p.done:
		tb.Fatalf("dpsd exited at start:\n%s", p.Logs())
	case <-time.After(60 * time.Second):
		tb.Fatalf("dpsd did not start:\n%s", p.Logs())
	}
	find := func(re string) string {
		if m := regexp.MustCompile(re).FindStringSubmatch(text); m != nil {
			return m[1]
		}
		return ""
	}
	p.HTTPS, p.MQTT = find(`\(HTTPS ([0-9.:\[\]]+)\)`), find(`\(TLS ([0-9.:\[\]]+)\)`)
	p.Scope, p.ConnectionString, p.CAFile = find(`ID scope:\s+(\S+)`), find(`Service connection:\s+(\S+)`), find(`CA certificate:\s+(\S+)`)
	p.HubConnectionString = find(`Hub connection:\s+(\S+)`)
	return p
}

// Kill ends the process with SIGKILL: no shutdown work runs.
func (p *Process) Kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop ends the process gracefully (SIGTERM), then by SIGKILL after 15s.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Kill()
	}
}

// WriteFile writes a file in a test's temporary directory and returns its path.
func WriteFile(tb testing.TB, name, content string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
