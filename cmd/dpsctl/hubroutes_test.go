package main

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/wire"
)

// TestHubRoutes: dpsd routes the built-in hub's device lifecycle events
// to a webhook that is down; a device provisioned with dpsctl makes a
// createDeviceIdentity event; dpsctl hub routes shows the route with its
// last error, then (past the retry budget) the dead letter, as a table and
// as JSON; --dead-letters prints the event and why.
func TestHubRoutes(t *testing.T) {
	hook := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "hook down", http.StatusServiceUnavailable)
	}))
	defer hook.Close()
	dir := t.TempDir()
	hookCA := filepath.Join(dir, "hook-ca.pem")
	if err := os.WriteFile(hookCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf(`dataDir: %q
listen: { https: "127.0.0.1:0", mqtt: "", admin: "" }
routing: { minBackoff: 200ms, maxBackoff: 500ms, retryBudget: 2s, poll: 1m }
linkedHubs:
  - hostName: localhost
    endpoints:
      - { name: hook, type: webhook, url: %q, secret: s3cret, caFile: %q }
    routes:
      - { name: lifecycle, source: deviceLifecycle, endpoint: hook }
      - { name: spare, source: telemetry, condition: "level = 'x'", endpoint: hook, enabled: false }
`, filepath.Join(dir, "data"), hook.URL+"/events", hookCA))
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	endpoint := "https://" + p.HTTPS
	run := func(args ...string) string {
		t.Helper()
		out, err := dpsctl(t, args...)
		if err != nil {
			t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	hub := []string{"hub", "routes", "--hub-connection-string", p.HubConnectionString, "--endpoint", endpoint, "--ca-file", p.CAFile}
	routes := func() wire.HubRoutes {
		t.Helper()
		var rs wire.HubRoutes
		if out := run(append(hub, "-o", "json")...); json.Unmarshal([]byte(out), &rs) != nil || len(rs.Routes) != 2 {
			t.Fatalf("hub routes -o json:\n%s", out)
		}
		return rs
	}
	// The route claims its lease and starts at the end of the log.
	deadline := time.Now().Add(15 * time.Second)
	for routes().Routes[0].State != "delivering" {
		if time.Now().After(deadline) {
			t.Fatalf("the route never started: %+v", routes().Routes[0])
		}
		time.Sleep(100 * time.Millisecond)
	}

	out := run("enrollment", "create", "rt-dev", "--show-keys", "-o", "json", "--connection-string", p.ConnectionString, "--endpoint", endpoint, "--ca-file", p.CAFile)
	var e struct {
		Attestation struct {
			SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
		} `json:"attestation"`
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	run("register", "--endpoint", endpoint, "--ca-file", p.CAFile, "--id-scope", p.Scope, "--registration-id", "rt-dev", "--key", e.Attestation.SymmetricKey.PrimaryKey)

	// Woken by the append, the route fails at once (the poll is a minute)
	// and retries until its budget is spent.
	deadline = time.Now().Add(20 * time.Second)
	var r wire.HubRoute
	for {
		r = routes().Routes[0]
		if r.DeadLettered == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the event was never dead-lettered: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.Name != "lifecycle" || r.Source != "deviceLifecycle" || r.Endpoint != "hook" || r.Condition != "true" || !r.Enabled ||
		r.LastError == nil || !strings.Contains(*r.LastError, "503") || r.State != "delivering" || r.Failed < 2 || r.Delivered != 0 || r.Owner == nil || r.Lag.Messages != 0 {
		t.Errorf("route after the dead letter: %+v", r)
	}
	if s := routes().Routes[1]; s.Name != "spare" || s.Enabled || s.State != "disabled" {
		t.Errorf("disabled route: %+v", s)
	}
	table := run(hub...)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "LAST ERROR") ||
		!strings.HasPrefix(lines[1], "lifecycle") || !strings.Contains(lines[1], "deviceLifecycle") || !strings.Contains(lines[1], "delivering") ||
		!strings.HasPrefix(lines[2], "spare") || !strings.Contains(lines[2], "disabled") {
		t.Errorf("hub routes:\n%s", table)
	}

	out = run(append(hub, "--dead-letters", "lifecycle")...)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "#1 ") ||
		!strings.Contains(lines[0], " rt-dev ") || !strings.Contains(lines[0], "opType=createDeviceIdentity") ||
		!strings.Contains(lines[0], "dead-lettered 20") || !strings.Contains(lines[0], "not delivered to endpoint hook") || !strings.Contains(lines[0], "503") {
		t.Errorf("--dead-letters:\n%s", out)
	}
	out = run(append(hub, "--dead-letters", "lifecycle", "-o", "json")...)
	var dl wire.HubDeadLetter
	if err := json.Unmarshal([]byte(out), &dl); err != nil || dl.Route != "lifecycle" || dl.Message.DeviceID != "rt-dev" ||
		dl.Message.SystemProperties["iothub-message-source"] != "deviceLifecycleEvents" || !strings.Contains(string(dl.Message.Body), `"deviceId":"rt-dev"`) {
		t.Errorf("--dead-letters -o json: %v\n%s", err, out)
	}
	if out, err := dpsctl(t, append(hub, "--dead-letters", "nope")...); err == nil || !strings.Contains(out+err.Error(), "no route") {
		t.Errorf("an unknown route: %v\n%s", err, out)
	}
}
