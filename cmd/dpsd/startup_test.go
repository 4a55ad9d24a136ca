package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/pgtest"
)

const startupScope = "0ne000STRT0"

// startupConfig writes a dpsd configuration on storage; the listeners take
// free ports (admin, if not "", on that address).
func startupConfig(t *testing.T, storage, admin string) string {
	t.Helper()
	return dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf(`idScope: %s
dataDir: %q
storage: %q
listen: { https: "127.0.0.1:0", mqtt: "", admin: %q }
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: %q, rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
log: { level: debug }
`, startupScope, t.TempDir(), storage, admin, ownerKey))
}

// runToExit runs dpsd and waits for it to end (at most 30 s: a dpsd that
// starts serving instead of failing is killed and the test fails).
func runToExit(t *testing.T, bin, config string) (code int, output string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--config", config).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("dpsd did not exit (it started instead of failing):\n%s", out)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	}
	t.Fatalf("run dpsd: %v", err)
	return 0, ""
}

// wantOneLineExit checks how dpsd failed at start: a non-zero exit, no
// panic, and exactly one line that names the setting and contains every
// one of want and none of secrets.
func wantOneLineExit(t *testing.T, code int, out, key string, want, secrets []string) {
	t.Helper()
	if code == 0 {
		t.Errorf("exit code 0, want non-zero")
	}
	for _, bad := range []string{"panic", "SIGSEGV", "goroutine "} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q:\n%s", bad, out)
		}
	}
	var lines []string
	for l := range strings.Lines(out) {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) != 1 {
		t.Fatalf("output is %d lines, want 1:\n%s", len(lines), out)
	}
	if !strings.Contains(lines[0], key) {
		t.Errorf("the line does not name %s: %s", key, lines[0])
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("the line does not say %q: %s", w, lines[0])
		}
	}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the output shows the password %q: %s", s, out)
		}
	}
}

// freeLoopbackPort returns a loopback port nothing listens on.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// passwordRole makes the cluster check passwords over TCP for role (the
// throwaway cluster trusts everyone) and creates role with password.
func passwordRole(t *testing.T, dsn, role, password string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var hba string
	if err := conn.QueryRow(ctx, "SHOW hba_file").Scan(&hba); err != nil {
		t.Fatal(err)
	}
	literal := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	for _, q := range []string{
		"CREATE ROLE " + pgx.Identifier{role}.Sanitize() + " LOGIN PASSWORD " + literal(password),
		// The server writes its own pg_hba.conf (superuser COPY), then reloads it.
		"COPY (SELECT unnest(ARRAY['local all all trust', 'host all " + role + " 127.0.0.1/32 scram-sha-256', 'host all all 127.0.0.1/32 trust'])) TO " + literal(hba),
		"SELECT pg_reload_conf()",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The reload is asynchronous: wait until a wrong password is refused.
	u, _ := url.Parse(dsn)
	u.User = url.UserPassword(role, password+"-not")
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := pgx.Connect(ctx, u.String())
		if err != nil && strings.Contains(err.Error(), "28P01") {
			return
		}
		if c != nil {
			c.Close(ctx)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster does not check passwords: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStartupStorageFailures runs the real dpsd on stores that cannot be
// opened: each time it exits non-zero with one line that names the storage
// setting and the cause, never a panic, never the password.
func TestStartupStorageFailures(t *testing.T) {
	bin := dpstest.BuildDPSD(t)
	cluster, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Stop()
	const role, rightPassword, wrongPassword = "dps_app", "right-Passw0rd", "wr0ng-S3cret-pw"
	passwordRole(t, cluster.DSN, role, rightPassword)
	withUser := func(dsn, user, password, db string) string {
		u, _ := url.Parse(dsn)
		u.User = url.UserPassword(user, password)
		if db != "" {
			u.Path = "/" + db
		}
		return u.String()
	}
	notADir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notADir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	down := fmt.Sprintf("postgres://postgres:d0wn-S3cret-pw@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", freeLoopbackPort(t))

	for _, tt := range []struct {
		name, storage string
		want, secrets []string
	}{
		{"fail/sqlite-unwritable-path", "sqlite:" + filepath.Join(notADir, "dps.db"), []string{"not a directory"}, nil},
		{"fail/postgres-wrong-password", withUser(cluster.DSN, role, wrongPassword, ""), []string{"password authentication failed", "REDACTED"}, []string{wrongPassword}},
		{"fail/postgres-server-down", down, []string{"connection refused", "REDACTED"}, []string{"d0wn-S3cret-pw"}},
		{"fail/postgres-missing-database", withUser(cluster.DSN, role, rightPassword, "no_such_database"), []string{"no_such_database", "does not exist"}, []string{rightPassword}},
		{"fail/postgres-password-parameter", replaceDB(cluster.DSN, "no_such_database") + "&password=" + url.QueryEscape(wrongPassword), []string{"does not exist"}, []string{wrongPassword}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out := runToExit(t, bin, startupConfig(t, tt.storage, ""))
			wantOneLineExit(t, code, out, "storage", tt.want, tt.secrets)
			t.Logf("dpsd said: %s", strings.TrimSpace(out))
		})
	}
}

// TestSecondProcessOnOneSQLiteFile: a second dpsd on the SQLite file a
// running one holds exits at once with a message saying so (two processes
// would each trust the groups they keep in memory); the first keeps
// serving; once the first has stopped, the file opens again.
func TestSecondProcessOnOneSQLiteFile(t *testing.T) {
	bin := dpstest.BuildDPSD(t)
	storage := "sqlite:" + filepath.Join(t.TempDir(), "dps.db")
	first := dpstest.StartDPSD(t, bin, startupConfig(t, storage, ""))

	code, out := runToExit(t, bin, startupConfig(t, storage, ""))
	wantOneLineExit(t, code, out, "storage", []string{"in use by another process (pid", "PostgreSQL"}, nil)
	t.Logf("second dpsd said: %s", strings.TrimSpace(out))

	svc := startupClient(t, first)
	if _, err := svc.Group(context.Background(), "nothing"); client.StatusOf(err) != http.StatusNotFound {
		t.Errorf("the first dpsd after the second was refused: %v, want a 404", err)
	}
	first.Stop()
	dpstest.StartDPSD(t, bin, startupConfig(t, storage, "")).Stop()
}

// startupClient is a service API client of a dpsd process started by
// dpstest.StartDPSD.
func startupClient(t *testing.T, p *dpstest.Process) *client.Client {
	t.Helper()
	// The banner names a configured key without printing it.
	c, err := client.FromConnectionString("HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c.Endpoint, c.HTTP = "https://"+p.HTTPS, &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	return c
}
