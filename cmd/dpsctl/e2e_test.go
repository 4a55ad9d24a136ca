package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
)

// startDPSD builds and runs dpsd on ephemeral loopback ports and returns
// the HTTPS and MQTT addresses, the ID scope, the connection string and
// the CA file.
func startDPSD(t *testing.T) (https, mqtt, scope, cs, ca string) {
	t.Helper()
	return startDPSDWith(t, "")
}

// startDPSDWith is startDPSD with extra configuration lines.
func startDPSDWith(t *testing.T, extra string) (https, mqtt, scope, cs, ca string) {
	t.Helper()
	dir := t.TempDir()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\nretryAfterSeconds: 1\nlinkedHubs:\n  - { hostName: hub-a.example.net }\n  - { hostName: hub-b.example.net }\n", filepath.Join(dir, "data"))+extra)
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	return p.HTTPS, p.MQTT, p.Scope, p.ConnectionString, p.CAFile
}

func dpsctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := newRoot(&out, &out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestOperatorFlow is the README's flow: create enrollments with dpsctl,
// register devices with dpsctl, inspect and change them.
func TestOperatorFlow(t *testing.T) {
	https, mqtt, scope, cs, ca := startDPSD(t)
	endpoint := "https://" + https
	svc := []string{"--connection-string", cs, "--endpoint", endpoint, "--ca-file", ca}
	run := func(args ...string) string {
		t.Helper()
		out, err := dpsctl(t, args...)
		if err != nil {
			t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}

	out := run(append([]string{"enrollment", "create", "cli-dev", "--show-keys", "-o", "json", "--hub", "hub-b.example.net"}, svc...)...)
	var e struct {
		Attestation struct {
			SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
		} `json:"attestation"`
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("create output: %v\n%s", err, out)
	}
	out = run("register", "--endpoint", endpoint, "--ca-file", ca, "--id-scope", scope, "--registration-id", "cli-dev", "--key", e.Attestation.SymmetricKey.PrimaryKey, "--payload", `{"model":"t1"}`)
	if !strings.Contains(out, `"assignedHub": "hub-b.example.net"`) {
		t.Fatalf("register output:\n%s", out)
	}

	out = run(append([]string{"group", "create", "cli-grp", "--show-keys", "-o", "json"}, svc...)...)
	if err := json.Unmarshal([]byte(out), &e); err != nil || e.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("group create output: %v\n%s", err, out)
	}
	out = run("register", "--transport", "mqtt", "--mqtt-address", mqtt, "--ca-file", ca, "--id-scope", scope, "--registration-id", "cli-g-1", "--group-key", e.Attestation.SymmetricKey.PrimaryKey)
	if !strings.Contains(out, `"status": "assigned"`) {
		t.Fatalf("mqtt register output:\n%s", out)
	}

	if out = run(append([]string{"enrollment", "list"}, svc...)...); !strings.Contains(out, "cli-dev") || !strings.Contains(out, "assigned → hub-b.example.net") {
		t.Errorf("enrollment list:\n%s", out)
	}
	if out = run(append([]string{"registration", "list", "cli-grp"}, svc...)...); !strings.Contains(out, "cli-g-1") {
		t.Errorf("registration list:\n%s", out)
	}
	if out = run(append([]string{"registration", "show", "cli-dev", "-o", "json"}, svc...)...); !strings.Contains(out, `"status": "assigned"`) {
		t.Errorf("registration show:\n%s", out)
	}
	// update keeps the key; disabling makes the next registration "disabled".
	run(append([]string{"enrollment", "update", "cli-dev", "--disabled"}, svc...)...)
	if out, err := dpsctl(t, "register", "--endpoint", endpoint, "--ca-file", ca, "--id-scope", scope, "--registration-id", "cli-dev", "--key", e.Attestation.SymmetricKey.PrimaryKey); err == nil {
		t.Errorf("registration of a disabled enrollment succeeded:\n%s", out)
	}
	if out = run(append([]string{"enrollment", "show", "cli-dev", "--show-keys"}, svc...)...); !strings.Contains(out, "disabled") {
		t.Errorf("enrollment show:\n%s", out)
	}
	run(append([]string{"enrollment", "delete", "cli-dev"}, svc...)...)
	if _, err := dpsctl(t, append([]string{"enrollment", "show", "cli-dev"}, svc...)...); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("show after delete: %v", err)
	}
	// CA certificates: add, prove possession, list.
	caDir := t.TempDir()
	root := dpstest.NewRoot(t, "CLI Root")
	os.WriteFile(filepath.Join(caDir, "root.pem"), []byte(root.PEM()), 0o600)
	if out = run(append([]string{"ca", "add", "cli-root", "--cert", filepath.Join(caDir, "root.pem")}, svc...)...); !strings.Contains(out, "CN=CLI Root") || !strings.Contains(out, "false") {
		t.Errorf("ca add:\n%s", out)
	}
	code := strings.TrimSpace(run(append([]string{"ca", "code", "cli-root"}, svc...)...))
	os.WriteFile(filepath.Join(caDir, "proof.pem"), []byte(root.Leaf(t, code).PEM()), 0o600)
	if out = run(append([]string{"ca", "verify", "cli-root", "--cert", filepath.Join(caDir, "proof.pem")}, svc...)...); !strings.Contains(out, "true") {
		t.Errorf("ca verify:\n%s", out)
	}
	run(append([]string{"group", "create", "cli-x509", "--attestation", "x509", "--ca-ref", "cli-root"}, svc...)...)
	if out = run(append([]string{"ca", "list", "-o", "json"}, svc...)...); !strings.Contains(out, `"isVerified": true`) {
		t.Errorf("ca list:\n%s", out)
	}

	// Bad input is refused with the service's error.
	if _, err := dpsctl(t, append([]string{"enrollment", "create", "bad id!"}, svc...)...); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("bad id: %v", err)
	}
}
