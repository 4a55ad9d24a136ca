// Package pgtest starts a throwaway PostgreSQL cluster for tests: initdb in
// a temporary directory, a server on a free loopback port, stopped and
// removed afterwards. It uses the PostgreSQL server binaries of the
// machine (Debian's postgresql package; `make test` installs it when
// missing). Tests that use it fail, never skip, when it cannot start.
//
// DPS_TEST_POSTGRES, when set to a DSN, is used instead of a new cluster.
package pgtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Cluster is a running throwaway PostgreSQL server.
type Cluster struct {
	DSN  string
	dir  string
	bin  string
	opts string
	asPG bool
}

func binDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	if len(dirs) == 0 {
		return "", fmt.Errorf("pgtest: PostgreSQL server binaries not found (install Debian's postgresql package; make test does)")
	}
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a < b
	})
	return dirs[len(dirs)-1], nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run runs a PostgreSQL binary, as the postgres user when we are root
// (initdb and postgres refuse to run as root).
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.asPG {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	return cmd.CombinedOutput()
}

// Start starts a cluster. Call Stop when done.
func Start() (*Cluster, error) {
	if dsn := os.Getenv("DPS_TEST_POSTGRES"); dsn != "" {
		return &Cluster{DSN: dsn}, nil
	}
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dps-pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, bin: bin}
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		c.asPG = true
		if pg, err := user.Lookup("postgres"); err == nil {
			uid, _ := strconv.Atoi(pg.Uid)
			gid, _ := strconv.Atoi(pg.Gid)
			os.Chown(dir, uid, gid)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := c.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	c.opts = fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c max_connections=300 -c shared_buffers=64MB", port, dir)
	if out, err := c.run("pg_ctl", "-D", data, "-o", c.opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	c.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("pgtest: server does not accept connections: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c, nil
}

// Pause stops the server and keeps its files (a database outage).
func (c *Cluster) Pause() error {
	out, err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "fast", "-w", "stop")
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl stop: %v\n%s", err, out)
	}
	return nil
}

// Resume starts a paused server again on the same port.
func (c *Cluster) Resume() error {
	out, err := c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-o", c.opts, "-l", filepath.Join(c.dir, "log"), "-w", "-t", "60", "start")
	if err != nil {
		return fmt.Errorf("pgtest: pg_ctl start: %v\n%s", err, out)
	}
	return nil
}

// Stop stops the server and removes its files.
func (c *Cluster) Stop() {
	if c == nil || c.dir == "" {
		return
	}
	c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	os.RemoveAll(c.dir)
}

// Schema returns a fresh, unique schema name for one test.
func Schema(prefix string) string {
	return strings.ToLower(fmt.Sprintf("t_%s_%d", prefix, time.Now().UnixNano()))
}
