package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
)

// lockedBuffer is an output a running command writes while the test reads.
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

// TestHubEvents: a device provisioned with dpsctl to the built-in hub
// localhost (dpsd without linked hubs) sends telemetry; dpsctl hub events
// prints it with the hub connection string dpsd printed — as text, as
// JSON lines, from a position, and with --follow as it arrives.
func TestHubEvents(t *testing.T) {
	dir := t.TempDir()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"\", admin: \"\" }\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	if p.HubConnectionString == "" || !strings.HasPrefix(p.HubConnectionString, "HostName=localhost;SharedAccessKeyName=iothubowner;") {
		t.Fatalf("hub connection string %q", p.HubConnectionString)
	}
	endpoint := "https://" + p.HTTPS
	run := func(args ...string) string {
		t.Helper()
		out, err := dpsctl(t, args...)
		if err != nil {
			t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	out := run("enrollment", "create", "ev-dev", "--show-keys", "-o", "json", "--connection-string", p.ConnectionString, "--endpoint", endpoint, "--ca-file", p.CAFile)
	var e struct {
		Attestation struct {
			SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
		} `json:"attestation"`
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out = run("register", "--endpoint", endpoint, "--ca-file", p.CAFile, "--id-scope", p.Scope, "--registration-id", "ev-dev", "--key", e.Attestation.SymmetricKey.PrimaryKey); !strings.Contains(out, `"assignedHub": "localhost"`) {
		t.Fatalf("register:\n%s", out)
	}
	key, _ := base64.StdEncoding.DecodeString(e.Attestation.SymmetricKey.PrimaryKey)
	pem, _ := os.ReadFile(p.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	send := func(id string, body []byte, props map[string]string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, endpoint+"/devices/ev-dev/messages/events?api-version=2021-04-12", bytes.NewReader(body))
		req.Host = "localhost"
		req.Header.Set("Authorization", sas.New("localhost/devices/ev-dev", key, "", time.Now().Add(time.Hour)))
		req.Header.Set("iothub-messageid", id)
		for k, v := range props {
			req.Header.Set("iothub-app-"+k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("telemetry %s: HTTP %d", id, resp.StatusCode)
		}
	}
	send("m-1", []byte(`{"temp":21}`), map[string]string{"alert": "high", "b": "2"})
	send("m-2", []byte{0xff, 0x00, 0x01}, nil)
	send("m-3", []byte("two\nlines"), nil)

	hub := []string{"hub", "events", "--hub-connection-string", p.HubConnectionString, "--endpoint", endpoint, "--ca-file", p.CAFile}
	out = run(hub...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// The provisioning's createDeviceIdentity event is in the log too.
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "#1 20") || !strings.Contains(lines[0], " ev-dev - {deviceId=ev-dev,hubName=localhost,iothub-message-schema=deviceLifecycleNotification,opType=createDeviceIdentity,") {
		t.Fatalf("hub events printed %d lines:\n%s", len(lines), out)
	}
	lines = lines[1:]
	for i, want := range []string{` ev-dev m-1 {alert=high,b=2} {"temp":21}`, ` ev-dev m-2 {} base64:/wAB`, ` ev-dev m-3 {} "two\nlines"`} {
		if !strings.HasPrefix(lines[i], fmt.Sprintf("#%d 20", i+2)) || !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d = %q, want #%d <time>%s", i+2, lines[i], i+2, want)
		}
	}
	// A named consumer: the first run prints everything and checkpoints;
	// the next prints only what came since.
	if out := run(append(hub, "--consumer", "archiver")...); len(strings.Split(strings.TrimSpace(out), "\n")) != 4 {
		t.Errorf("first run of a consumer:\n%s", out)
	}
	if out := run(append(hub, "--consumer", "archiver")...); out != "" {
		t.Errorf("second run of a consumer printed again:\n%s", out)
	}
	// JSON lines from a position; the connection string from the environment.
	t.Setenv("DPS_HUB_CONNECTION_STRING", p.HubConnectionString)
	out = run("hub", "events", "--endpoint", endpoint, "--ca-file", p.CAFile, "--from", "3", "-o", "json")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	var m struct {
		SequenceNumber int64             `json:"sequenceNumber"`
		DeviceID       string            `json:"deviceId"`
		MessageID      string            `json:"messageId"`
		Body           []byte            `json:"body"`
		System         map[string]string `json:"systemProperties"`
	}
	if len(lines) != 2 || json.Unmarshal([]byte(lines[0]), &m) != nil || m.SequenceNumber != 3 || m.MessageID != "m-2" || !bytes.Equal(m.Body, []byte{0xff, 0, 1}) ||
		m.System["iothub-connection-device-id"] != "ev-dev" {
		t.Errorf("-o json --from 3:\n%s", out)
	}
	// --follow prints a message sent while it waits, and ends on interrupt.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var follow lockedBuffer
	done := make(chan error, 1)
	go func() {
		cmd := newRoot(&follow, &follow)
		cmd.SetArgs([]string{"hub", "events", "--endpoint", endpoint, "--ca-file", p.CAFile, "--from", "end", "--follow"})
		done <- cmd.ExecuteContext(ctx)
	}()
	time.Sleep(500 * time.Millisecond)
	send("m-4", []byte("hello"), map[string]string{"k": "v"})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(follow.String(), " ev-dev m-4 {k=v} hello") {
		if time.Now().After(deadline) {
			t.Fatalf("--follow did not print m-4 within 10s:\n%s", follow.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(follow.String(), "m-1") {
		t.Errorf("--from end printed older messages:\n%s", follow.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("--follow ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("--follow did not end on interrupt")
	}
	// The consumer goes on after its checkpoint: only m-4 (#5) is new.
	if out := run(append(hub, "--consumer", "archiver")...); !strings.HasPrefix(out, "#5 ") || strings.Count(out, "\n") != 1 {
		t.Errorf("a consumer after a new message:\n%s", out)
	}
	if out := run(append(hub, "--consumer", "other", "--from", "4")...); !strings.HasPrefix(out, "#4 ") || strings.Count(out, "\n") != 2 {
		t.Errorf("another consumer from 4:\n%s", out)
	}
	// Refusals: no connection string; a wrong key.
	t.Setenv("DPS_HUB_CONNECTION_STRING", "")
	if _, err := dpsctl(t, "hub", "events", "--endpoint", endpoint, "--ca-file", p.CAFile); err == nil || !strings.Contains(err.Error(), "hub connection string") {
		t.Errorf("without a connection string: %v", err)
	}
	wrong := "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + dpstest.Key(32)
	if _, err := dpsctl(t, "hub", "events", "--hub-connection-string", wrong, "--endpoint", endpoint, "--ca-file", p.CAFile); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with a wrong key: %v", err)
	}
}
