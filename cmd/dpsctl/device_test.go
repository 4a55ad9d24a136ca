package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
)

// deviceOutput is a bytes.Buffer a running command writes while the test
// reads it.
type deviceOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *deviceOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *deviceOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDeviceCommands: a device registered with dpsctl reads its twin on
// the built-in hub, reports properties, sends telemetry that dpsctl hub
// events shows, and listen prints what the service sends it.
func TestDeviceCommands(t *testing.T) {
	dir := t.TempDir()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\nretryAfterSeconds: 1\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	run := func(args ...string) string {
		t.Helper()
		out, err := dpsctl(t, args...)
		if err != nil {
			t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	twinFile := filepath.Join(dir, "twin.json")
	os.WriteFile(twinFile, []byte(`{"tags":{"line":"1"},"properties":{"desired":{"interval":30}}}`), 0o600)
	out := run("group", "create", "dev-grp", "--show-keys", "-o", "json", "--initial-twin", twinFile,
		"--connection-string", p.ConnectionString, "--endpoint", "https://"+p.HTTPS, "--ca-file", p.CAFile)
	var g struct {
		Attestation struct {
			SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
		} `json:"attestation"`
	}
	if err := json.Unmarshal([]byte(out), &g); err != nil || g.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Fatalf("group create: %v\n%s", err, out)
	}
	gk := g.Attestation.SymmetricKey.PrimaryKey
	if out := run("register", "--endpoint", "https://"+p.HTTPS, "--ca-file", p.CAFile, "--id-scope", p.Scope, "--registration-id", "cli-dev", "--group-key", gk); !strings.Contains(out, `"assignedHub": "localhost"`) {
		t.Fatalf("register:\n%s", out)
	}
	dev := []string{"--device-id", "cli-dev", "--group-key", gk, "--endpoint", p.MQTT, "--ca-file", p.CAFile}
	ws := []string{"--device-id", "cli-dev", "--group-key", gk, "--endpoint", p.HTTPS, "--transport", "mqttws", "--ca-file", p.CAFile}

	if out := run(append([]string{"device", "twin"}, dev...)...); !strings.Contains(out, `"interval": 30`) || !strings.Contains(out, `"reported"`) {
		t.Errorf("device twin:\n%s", out)
	}
	if out := run(append([]string{"device", "report", `{"fw":"1.0"}`}, ws...)...); !strings.Contains(out, "reported properties at version") {
		t.Errorf("device report:\n%s", out)
	}
	if out := run(append([]string{"device", "twin"}, ws...)...); !strings.Contains(out, `"fw": "1.0"`) {
		t.Errorf("device twin after report:\n%s", out)
	}
	run(append([]string{"device", "send", `{"t":21}`, "--prop", "alert=high", "--message-id", "cli-m-1"}, dev...)...)
	out = run("hub", "events", "--hub-connection-string", p.HubConnectionString, "--endpoint", "https://"+p.HTTPS, "--ca-file", p.CAFile)
	if !strings.Contains(out, `cli-dev cli-m-1 {alert=high} {"t":21}`) {
		t.Errorf("hub events:\n%s", out)
	}
	if out, err := dpsctl(t, "device", "twin", "--device-id", "cli-dev", "--key", dpstest.Key(32), "--endpoint", p.MQTT, "--ca-file", p.CAFile); err == nil || !strings.Contains(err.Error(), "return code 5") {
		t.Errorf("twin with a wrong key: %v\n%s", err, out)
	}

	// listen prints desired patches, method calls (answered 200 {}) and C2D messages.
	ctx, cancel := context.WithCancel(context.Background())
	var lout deviceOutput
	done := make(chan error, 1)
	go func() {
		cmd := newRoot(&lout, &lout)
		cmd.SetArgs(append([]string{"device", "listen"}, dev...))
		done <- cmd.ExecuteContext(ctx)
	}()
	defer func() { cancel(); <-done }()
	waitOut := func(want string) {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); !strings.Contains(lout.String(), want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("listen did not print %q:\n%s", want, lout.String())
			}
		}
	}
	hub := hubService(t, p.HubConnectionString, p.HTTPS, p.CAFile)
	// The method call is tried until listen has subscribed.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, body := hub(http.MethodPost, "/twins/cli-dev/methods", `{"methodName":"reboot","payload":{"delay":1},"responseTimeoutInSeconds":5}`, nil)
		if st == http.StatusOK {
			if !strings.Contains(body, `"status":200`) || !strings.Contains(body, `"payload":{}`) {
				t.Errorf("method answer: %s", body)
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("method call: %d %s\n%s", st, body, lout.String())
		}
	}
	waitOut(`method reboot {"delay":1}`)
	if st, body := hub(http.MethodPatch, "/twins/cli-dev", `{"properties":{"desired":{"interval":5}}}`, nil); st != http.StatusOK {
		t.Fatalf("twin PATCH: %d %s", st, body)
	}
	waitOut(`"interval":5`)
	if st, body := hub(http.MethodPost, "/devices/cli-dev/messages/deviceBound", `{"cmd":"blink"}`, map[string]string{"iothub-messageid": "c2d-1", "iothub-app-color": "red"}); st != http.StatusNoContent {
		t.Fatalf("C2D: %d %s", st, body)
	}
	waitOut(`message c2d-1 {color=red} {"cmd":"blink"}`)
	cancel()
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("listen after interrupt: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("listen did not end when interrupted")
	}
}

// hubService returns a caller of the built-in hub's service API with the
// hub's connection string.
func hubService(t *testing.T, cs, https, caFile string) func(method, path, body string, hdr map[string]string) (int, string) {
	c, err := client.FromConnectionString(cs)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	_, port, _ := net.SplitHostPort(https)
	return func(method, path, body string, hdr map[string]string) (int, string) {
		req, _ := http.NewRequest(method, "https://"+c.HostName+":"+port+path+"?api-version=2021-04-12", strings.NewReader(body))
		req.Header.Set("Authorization", sas.New(c.HostName, c.Key, c.KeyName, time.Now().Add(time.Hour)))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
}
