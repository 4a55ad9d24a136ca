package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
)

// TestCheckConfig: a good configuration is "configuration OK"; a bad one
// lists every problem, in the settings and in the files they name, and
// nothing is opened (no data directory, no listener).
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	certFile, keyFile := writeServerPair(t, dir, "ok", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	dataDir := filepath.Join(dir, "data")
	good := dpstest.WriteFile(t, "good.yaml", `dataDir: `+dataDir+`
listen: { https: "127.0.0.1:0" }
tls: { certFile: `+certFile+`, keyFile: `+keyFile+` }
`)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"--check-config", "--config", good}, noEnv, &out, &errOut); err != nil {
		t.Fatalf("good configuration: %v\n%s", err, errOut.String())
	}
	if strings.TrimSpace(out.String()) != "configuration OK" {
		t.Errorf("good configuration printed %q", out.String())
	}
	if _, err := filepath.Glob(filepath.Join(dataDir, "*")); err != nil || dirExists(dataDir) {
		t.Errorf("--check-config created the data directory")
	}

	expDir := t.TempDir()
	expCert, expKey := writeServerPair(t, expDir, "old", now.Add(-400*24*time.Hour), now.Add(-24*time.Hour))
	bad := dpstest.WriteFile(t, "bad.yaml", `dataDir: `+dataDir+`
listen: { https: "127.0.0.1:0" }
retryAfterSeconds: 0
tls: { certFile: `+expCert+`, keyFile: `+expKey+` }
webhook: { caFile: `+filepath.Join(dir, "no-such-ca.pem")+` }
x509: { crlFiles: [`+filepath.Join(dir, "no-such.crl")+`] }
`)
	out.Reset()
	errOut.Reset()
	err := run(context.Background(), []string{"--check-config", "--config", bad}, noEnv, &out, &errOut)
	if err == nil {
		t.Fatalf("bad configuration passed:\n%s", out.String())
	}
	for _, want := range []string{"retryAfterSeconds", expCert + ": the server certificate expired on", "webhook.caFile", "no-such-ca.pem", "x509.crlFiles", "no-such.crl"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("the problems do not mention %q:\n%s", want, errOut.String())
		}
	}
	if strings.Contains(out.String(), "configuration OK") {
		t.Errorf("bad configuration printed OK")
	}
}

func dirExists(p string) bool {
	m, _ := filepath.Glob(p)
	return len(m) > 0
}

func TestVersionFlag(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--version"}, noEnv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.HasPrefix(s, "dpsd ") || !strings.Contains(s, "go="+runtime.Version()) || !strings.Contains(s, "revision=") {
		t.Errorf("dpsd --version printed %q", s)
	}
}

// TestBanner: the URLs carry their ports; a configured owner key is not
// printed, a generated one is; with log.format json the banner is one JSON
// record with the same fields.
func TestBanner(t *testing.T) {
	for _, tt := range []struct {
		name, extra string
		generated   bool
	}{
		{"configured-key/text", "accessPolicies:\n  - { name: provisioningserviceowner, primaryKey: \"" + ownerKey + "\", rights: [ServiceConfig] }\n", false},
		{"generated-key/json", "log: { format: json }\n", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadConfig(dpstest.WriteFile(t, "dpsd.yaml", `idScope: 0ne000BNR01
dataDir: `+t.TempDir()+`
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: "" }
`+tt.extra), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := start(context.Background(), cfg, &bytes.Buffer{})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close(context.Background())
			var b bytes.Buffer
			srv.printBanner(&b)
			text := b.String()
			_, httpsPort, _ := net.SplitHostPort(srv.httpsLn.Addr().String())
			_, mqttPort, _ := net.SplitHostPort(srv.mqtt.Addr().String())
			for _, want := range []string{"https://localhost:" + httpsPort, "mqtts://localhost:" + mqttPort} {
				if !strings.Contains(text, want) {
					t.Errorf("banner lacks %q:\n%s", want, text)
				}
			}
			if got := strings.Contains(text, srv.owner.PrimaryKey); got != tt.generated {
				t.Errorf("banner shows the owner key: %v, want %v:\n%s", got, tt.generated, text)
			}
			if strings.Contains(tt.name, "json") {
				var rec map[string]any
				if err := json.Unmarshal(b.Bytes(), &rec); err != nil || strings.Count(strings.TrimSpace(text), "\n") != 0 {
					t.Fatalf("json banner is not one JSON record: %v\n%s", err, text)
				}
				if rec["id_scope"] != "0ne000BNR01" || rec["service_connection"] == nil || rec["hub_connections"] == nil {
					t.Errorf("json banner lacks fields: %v", rec)
				}
			}
		})
	}
}
