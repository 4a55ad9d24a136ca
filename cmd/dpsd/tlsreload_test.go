package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps/internal/dpstest"
)

// writeServerPair writes a self-signed certificate for cn, valid from
// notBefore to notAfter, and its key as PEM files in dir.
func writeServerPair(t *testing.T, dir, cn string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	ck := dpstest.SelfSigned(t, cn, dpstest.Validity(notBefore, notAfter))
	der, err := x509.MarshalECPrivateKey(ck.Key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
	// Written next to the files and renamed over them, as an operator's
	// tooling (certbot, cert-manager) replaces certificates.
	for path, data := range map[string][]byte{certFile: []byte(ck.PEM()), keyFile: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})} {
		if err := os.WriteFile(path+".new", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// servedCN is the common name of the certificate a new TLS connection to
// addr is served.
func servedCN(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestCertificateReloadedOnChange starts dpsd with certificate files, replaces
// them on disk, and sees new HTTPS and MQTT connections served the new
// certificate while a connection opened before keeps working.
func TestCertificateReloadedOnChange(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	certFile, keyFile := writeServerPair(t, dir, "first", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	cfgPath := dpstest.WriteFile(t, "dpsd.yaml", `idScope: 0ne000TLS01
dataDir: `+filepath.Join(dir, "data")+`
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: "" }
tls: { certFile: `+certFile+`, keyFile: `+keyFile+` }
`)
	cfg, err := loadConfig(cfgPath, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	srv, err := start(context.Background(), cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	https, mqtt := srv.httpsLn.Addr().String(), srv.mqtt.Addr().String()
	if got := servedCN(t, https); got != "first" {
		t.Fatalf("HTTPS serves %q, want first", got)
	}
	old, err := tls.Dial("tcp", https, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	writeServerPair(t, dir, "second", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	deadline := time.Now().Add(10 * time.Second)
	for servedCN(t, https) != "second" {
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS still serves the first certificate 10 s after the files changed; log:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := servedCN(t, mqtt); got != "second" {
		t.Errorf("MQTT serves %q after the reload, want second", got)
	}
	// The connection opened before the change still answers.
	if _, err := old.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 12)
	if _, err := old.Read(buf); err != nil || !strings.HasPrefix(string(buf), "HTTP/1.1") {
		t.Errorf("the earlier connection after the reload: %q, %v", buf, err)
	}
	if !strings.Contains(logs.String(), "server certificate reloaded") {
		t.Errorf("no reload log line:\n%s", logs.String())
	}
}

// TestExpiredCertificateRefusesStart: dpsd exits with one line naming the
// file and the expiry date.
func TestExpiredCertificateRefusesStart(t *testing.T) {
	dir := t.TempDir()
	expiry := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	certFile, keyFile := writeServerPair(t, dir, "old", expiry.Add(-365*24*time.Hour), expiry)
	cfg, err := loadConfig(dpstest.WriteFile(t, "dpsd.yaml", `idScope: 0ne000TLS01
dataDir: `+filepath.Join(dir, "data")+`
listen: { https: "127.0.0.1:0", mqtt: "", admin: "" }
tls: { certFile: `+certFile+`, keyFile: `+keyFile+` }
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := start(context.Background(), cfg, &bytes.Buffer{})
	if err == nil {
		srv.Close(context.Background())
		t.Fatal("dpsd started with an expired certificate")
	}
	msg := err.Error()
	for _, want := range []string{certFile, "expired on " + expiry.UTC().Format(time.RFC3339)} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
}

// TestCertificateExpiryWarnings: a certificate expiring within 30 days is
// warned about at start and again every day.
func TestCertificateExpiryWarnings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		now := time.Now()
		certFile, keyFile := writeServerPair(t, dir, "soon", now.Add(-time.Hour), now.Add(10*24*time.Hour))
		var logs syncBuffer
		c, err := newCertSource(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)), time.Now)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(logs.String(), "expires soon"); n != 1 {
			t.Fatalf("%d warnings at start, want 1:\n%s", n, logs.String())
		}
		stop := goUntilClose(c.run)
		time.Sleep(2*24*time.Hour + time.Minute)
		stop()
		if n := strings.Count(logs.String(), "expires soon"); n != 3 {
			t.Errorf("%d warnings after two days, want 3:\n%s", n, logs.String())
		}
		if !strings.Contains(logs.String(), "days_left=9") {
			t.Errorf("the daily warning does not count the days left:\n%s", logs.String())
		}
	})
	// A certificate valid for longer is not warned about.
	dir := t.TempDir()
	certFile, keyFile := writeServerPair(t, dir, "later", time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	var logs syncBuffer
	if _, err := newCertSource(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)), time.Now); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "expires soon") {
		t.Errorf("warned about a certificate valid for 90 days:\n%s", logs.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
