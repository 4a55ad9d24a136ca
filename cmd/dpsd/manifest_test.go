package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
)

// logBuffer keeps what a server logs (and shows it in the test's log).
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Log(strings.TrimSpace(string(p)))
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const startManifest = `
enrollmentGroups:
  - enrollmentGroupId: line-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_GROUP_KEY}"}}
    iotHubs: [hub-a.example.net]
enrollments:
  - registrationId: dev-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_DEV1_KEY}"}}
    iotHubs: [hub-b.example.net]
  - registrationId: dev-2
    attestation: {type: symmetricKey}
hubDevices:
  hub-a.example.net:
    - deviceId: sensor-1
      authentication: {type: sas, symmetricKey: {primaryKey: "${DPSD_SENSOR_KEY}"}}
      twin: {tags: {site: berlin}}
`

// startWithManifest starts dpsd on dir with the manifest file and the
// environment vars (the only one loadConfig and the manifest read).
func startWithManifest(t *testing.T, dir, manifestFile string, prune bool, vars map[string]string) (*server, *logBuffer, error) {
	t.Helper()
	yaml := fmt.Sprintf(`idScope: %s
dataDir: %s
listen: { https: "127.0.0.1:0", mqtt: "", admin: "" }
retryAfterSeconds: 1
throttling: { device: { pollsPer10s: 0 } }
linkedHubs:
  - { hostName: hub-a.example.net }
  - { hostName: hub-b.example.net }
manifest:
  files: [%q]
  prune: %v
`, testScope, dir, manifestFile, prune)
	path := filepath.Join(dir, "dpsd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path, func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{t: t}
	s, err := start(context.Background(), cfg, logs)
	if err == nil {
		t.Cleanup(func() { s.Close(context.Background()) })
	}
	return s, logs, err
}

// TestManifestAtStart: dpsd applies its configured manifest once the
// store is open (a device registers with the key the file gave), applies
// it again at every start without changing anything, and deletes only
// with prune: true — never a device a registration assigned.
func TestManifestAtStart(t *testing.T) {
	dir := t.TempDir()
	vars := map[string]string{"DPSD_GROUP_KEY": dpstest.Key(64), "DPSD_DEV1_KEY": dpstest.Key(64), "DPSD_SENSOR_KEY": dpstest.Key(32)}
	file := dpstest.WriteFile(t, "enrollments.yaml", startManifest)
	s, logs, err := startWithManifest(t, dir, file, false, vars)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "created=4 updated=0 deleted=0 unchanged=0 failed=0") {
		t.Errorf("first start's log:\n%s", logs)
	}
	for _, v := range vars {
		if strings.Contains(logs.String(), v) {
			t.Fatal("a key from the environment is in the log")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pem, _ := os.ReadFile(s.caFile)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509PoolFromPEM(pem)}}, Timeout: 10 * time.Second}
	res, err := s.client(hc).Register(ctx, "dev-1", device.SymmetricKey(vars["DPSD_DEV1_KEY"]), nil)
	if err != nil || res.Status != "assigned" || res.RegistrationState.AssignedHub != "hub-b.example.net" {
		t.Fatalf("dev-1 registers with the file's key: %v %+v", err, res)
	}
	groupDevKey, _ := device.DeriveKey(vars["DPSD_GROUP_KEY"], "line-dev-1")
	if res, err := s.client(hc).Register(ctx, "line-dev-1", device.SymmetricKey(groupDevKey), nil); err != nil || res.Status != "assigned" {
		t.Fatalf("a group device registers with the file's group key: %v %+v", err, res)
	}
	d, err := s.store.HubDevice(ctx, "hub-a.example.net", "sensor-1")
	if err != nil || string(d.Auth.PrimaryKey) != vars["DPSD_SENSOR_KEY"] {
		t.Errorf("sensor-1: %v %+v", err, d)
	}
	s.Close(ctx)

	// Every start applies it again: nothing changes.
	s, logs, err = startWithManifest(t, dir, file, false, vars)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "created=0 updated=0 deleted=0 unchanged=4 failed=0") {
		t.Errorf("second start's log:\n%s", logs)
	}
	s.Close(ctx)

	// A file that no longer names dev-2 nor sensor-1: kept without prune,
	// deleted with it; line-dev-1, which a registration assigned, stays.
	smaller := dpstest.WriteFile(t, "smaller.yaml", `
enrollmentGroups:
  - enrollmentGroupId: line-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_GROUP_KEY}"}}
    iotHubs: [hub-a.example.net]
enrollments:
  - registrationId: dev-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_DEV1_KEY}"}}
    iotHubs: [hub-b.example.net]
hubDevices:
  hub-a.example.net: []
`)
	s, _, err = startWithManifest(t, dir, smaller, false, vars)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.store.Enrollment(ctx, "dev-2"); err != nil {
		t.Errorf("dev-2 deleted without prune: %v", err)
	}
	s.Close(ctx)
	s, logs, err = startWithManifest(t, dir, smaller, true, vars)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "created=0 updated=0 deleted=2 unchanged=2 failed=0") {
		t.Errorf("prune start's log:\n%s", logs)
	}
	if _, err := s.store.Enrollment(ctx, "dev-2"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("dev-2 after prune: %v", err)
	}
	if _, err := s.store.HubDevice(ctx, "hub-a.example.net", "sensor-1"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("sensor-1 after prune: %v", err)
	}
	if _, err := s.store.HubDevice(ctx, "hub-a.example.net", "line-dev-1"); err != nil {
		t.Errorf("the provisioned device line-dev-1 was pruned: %v", err)
	}
}

// TestManifestRefusesStart: an object the service refuses stops the start
// with the service's message; so do an unset variable and a hub that is
// not built-in (which --check-config finds too).
func TestManifestRefusesStart(t *testing.T) {
	bad := dpstest.WriteFile(t, "bad.yaml", "enrollments: [{registrationId: dev-1, attestation: {type: symmetricKey}, iotHubs: [elsewhere.example.net]}]\n")
	_, _, err := startWithManifest(t, t.TempDir(), bad, false, nil)
	if err == nil || !strings.Contains(err.Error(), "manifest: 1 object(s) failed") || !strings.Contains(err.Error(), `"elsewhere.example.net" is not a linked IoT hub`) {
		t.Errorf("start: %v", err)
	}
	unset := dpstest.WriteFile(t, "unset.yaml", startManifest)
	if _, _, err := startWithManifest(t, t.TempDir(), unset, false, nil); err == nil || !strings.Contains(err.Error(), "DPSD_GROUP_KEY is not set") {
		t.Errorf("start with an unset variable: %v", err)
	}
	remote := dpstest.WriteFile(t, "remote.yaml", "hubDevices: {other.example.net: [{deviceId: d}]}\n")
	if _, _, err := startWithManifest(t, t.TempDir(), remote, false, nil); err == nil || !strings.Contains(err.Error(), "other.example.net is not a built-in hub") {
		t.Errorf("start with another hub: %v", err)
	}
	var stdout, stderr bytes.Buffer
	cfgPath := dpstest.WriteFile(t, "dpsd.yaml", "manifest: { files: ["+fmt.Sprintf("%q", remote)+", "+fmt.Sprintf("%q", unset)+", /nonexistent.yaml] }\n")
	if err := checkConfig(cfgPath, func(string) string { return "" }, &stdout, &stderr, time.Now()); err == nil {
		t.Error("check-config passed")
	}
	for _, want := range []string{"DPSD_GROUP_KEY is not set", "manifest.files[2]", "nonexistent.yaml"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("check-config lacks %q:\n%s", want, stderr.String())
		}
	}
	good := dpstest.WriteFile(t, "good.yaml", "enrollments: [{registrationId: dev-1, attestation: {type: symmetricKey}}]\n")
	stdout.Reset()
	if err := checkConfig(dpstest.WriteFile(t, "dpsd.yaml", "manifest: { files: ["+fmt.Sprintf("%q", good)+"] }\n"), func(string) string { return "" }, &stdout, &stderr, time.Now()); err != nil || !strings.Contains(stdout.String(), "configuration OK") {
		t.Errorf("check-config of a good manifest: %v %s", err, stdout.String())
	}
}
