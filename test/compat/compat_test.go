//go:build compat

// Package compat runs the compatibility suite: the real Azure IoT Node SDKs
// (installed with `npm ci` in this directory) against a dpsd built from this
// tree. The Node device HTTP transport and the service client always use
// port 443, and MQTT uses 8883, so this test needs those ports free (run by
// `make test`, which runs as root in CI). It is behind the "compat" build
// tag so that a plain `go test ./...` does not claim to have run it.
package compat

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/webhook"
)

type result struct {
	Scenario  string `json:"scenario"`
	Transport string `json:"transport"`
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	MS        int    `json:"ms"`
}

func TestNodeSDK(t *testing.T) {
	dir := t.TempDir()
	if _, err := os.Stat("node_modules/azure-iot-provisioning-device"); err != nil {
		t.Fatal("node_modules missing: run `npm ci` in test/compat (make test does)")
	}

	// The custom allocation webhook, written with the public webhook package.
	// It assigns a heatpump to hub B (127.0.0.2) and everything else to hub A
	// (localhost), both built-in hubs, and gives the device an initial twin:
	// tags naming its model, and desired properties = the payload's
	// "desired" member plus {"webhook":{"hub":…,"registrationId":…}} — so
	// run.js knows exactly what the device must read from its twin.
	hook := httptest.NewUnstartedServer(webhook.Handler(func(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
		var p struct {
			Model   string                     `json:"model"`
			Desired map[string]json.RawMessage `json:"desired"`
		}
		json.Unmarshal(req.DeviceRuntimeContext.Payload, &p)
		hub := hubA
		if p.Model == "heatpump" {
			hub = hubB
		}
		desired := map[string]any{"webhook": map[string]string{"hub": hub, "registrationId": req.DeviceRuntimeContext.RegistrationID}}
		for k, v := range p.Desired {
			desired[k] = v
		}
		desiredJSON, _ := json.Marshal(desired)
		tags, _ := json.Marshal(map[string]string{"model": p.Model})
		payload, _ := json.Marshal(map[string]any{"received": req.DeviceRuntimeContext.Payload, "greeting": "hello from the webhook"})
		return &webhook.Response{IoTHubHostName: hub, Payload: payload,
			InitialTwin: &webhook.Twin{Tags: tags, Properties: &webhook.TwinProperties{Desired: desiredJSON}}}, nil
	}, webhook.HandlerOptions{}))
	hook.StartTLS()
	defer hook.Close()
	hookCA := filepath.Join(dir, "webhook-ca.pem")
	os.WriteFile(hookCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}), 0o600)

	// X.509 material, minted now: a root and an intermediate; an individual
	// device certificate; a group device whose chain goes through the intermediate.
	x509Dir := filepath.Join(dir, "x509")
	os.MkdirAll(x509Dir, 0o700)
	root := dpstest.NewRoot(t, "Compat Root")
	inter := root.Intermediate(t, "Compat Intermediate")
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(x509Dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyPEM := func(c *dpstest.CertKey) string {
		der, err := x509.MarshalPKCS8PrivateKey(c.Key)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	ind := dpstest.SelfSigned(t, "x509-node-ind")
	grpLeaf := inter.Leaf(t, "x509-node-grp-dev")
	write("root.pem", root.PEM())
	write("ind.pem", ind.PEM())
	write("ind-key.pem", keyPEM(ind))
	write("grp-chain.pem", grpLeaf.PEM()+inter.PEM())
	write("grp-key.pem", keyPEM(grpLeaf))
	// Two self-signed devices of the built-in hub scenarios: each connects
	// with its own certificate, and each is refused with the other's.
	for _, name := range []string{"x509-hub-1", "x509-hub-2"} {
		c := dpstest.SelfSigned(t, name)
		write(name+".pem", c.PEM())
		write(name+"-key.pem", keyPEM(c))
	}

	newKey := func() string {
		key := make([]byte, 32)
		rand.Read(key)
		return base64.StdEncoding.EncodeToString(key)
	}
	ownerKey, hubKeyA, hubKeyB := newKey(), newKey(), newKey()
	// Hub A has a second policy that may only read the registry.
	readKeyA := newKey()
	// Hub A's telemetry is routed to Kafka and to an MQTT broker.
	eng := startEngines(t)
	cfg := fmt.Sprintf(`idScope: "0ne00C0MPAT"
dataDir: %q
listen: { https: ":443", mqtt: ":8883", admin: "127.0.0.1:0" }
serviceHostName: localhost
retryAfterSeconds: 1
linkedHubs:
  - hostName: %s
    accessPolicies:
      - { name: iothubowner, primaryKey: %q, rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect] }
      - { name: registryRead, primaryKey: %q, rights: [RegistryRead] }
%s  - hostName: %s
    accessPolicies: [ { name: iothubowner, primaryKey: %q, rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect] } ]
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: %q, rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
webhook: { caFile: %q }
routing: { minBackoff: 200ms, maxBackoff: 2s }
issuance: { keyEncryptionKey: %q }
`, filepath.Join(dir, "data"), hubA, hubKeyA, readKeyA, eng.config(), hubB, hubKeyB, ownerKey, hookCA, newKey())
	cfgPath := filepath.Join(dir, "dpsd.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	bin := filepath.Join(dir, "dpsd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/opendps/dps/cmd/dpsd").CombinedOutput(); err != nil {
		t.Fatalf("build dpsd: %v\n%s", err, out)
	}
	var logs bytes.Buffer
	dpsd := exec.Command(bin, "--config", cfgPath)
	dpsd.Stderr = &logs
	stdout, _ := dpsd.StdoutPipe()
	if err := dpsd.Start(); err != nil {
		t.Fatal(err)
	}
	var stopOnce sync.Once
	stop := func() {
		stopOnce.Do(func() {
			dpsd.Process.Signal(os.Interrupt)
			dpsd.Wait()
		})
	}
	defer func() {
		stop()
		if t.Failed() {
			t.Logf("dpsd log:\n%s", logs.String())
		}
	}()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		var banner strings.Builder
		for sc.Scan() {
			banner.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Linked hubs:") {
				ready <- banner.String()
			}
		}
	}()
	select {
	case banner := <-ready:
		t.Logf("dpsd started:\n%s", banner)
	case <-time.After(30 * time.Second):
		t.Fatalf("dpsd did not start:\n%s", logs.String())
	}
	for _, port := range []string{"443", "8883"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 2*time.Second); err == nil {
			c.Close()
		} else if port == "443" {
			t.Fatalf("dpsd is not listening on %s: %v", port, err)
		}
	}

	// Certificate issuance: no Node SDK sends a CSR, so the Go device
	// client registers with one and renews the certificate over MQTT;
	// run.js connects with both certificates through the Node device SDK's
	// X.509 authentication, then disables the device and is refused.
	issueForNode(t, ownerKey, filepath.Join(dir, "data", "tls", "ca.pem"), x509Dir)

	node := exec.Command("node", "run.js")
	node.Env = append(os.Environ(),
		"DPS_HOST=localhost",
		"DPS_ID_SCOPE=0ne00C0MPAT",
		"DPS_CONNECTION_STRING=HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey="+ownerKey,
		"DPS_WEBHOOK_URL="+hook.URL+"/api/allocate?code=function-key",
		"DPS_TRANSPORTS="+transports(),
		"NODE_EXTRA_CA_CERTS="+filepath.Join(dir, "data", "tls", "ca.pem"),
		"DPS_X509_DIR="+x509Dir,
		"HUB_CONNECTION_STRING_A=HostName="+hubA+";SharedAccessKeyName=iothubowner;SharedAccessKey="+hubKeyA,
		"HUB_CONNECTION_STRING_B=HostName="+hubB+";SharedAccessKeyName=iothubowner;SharedAccessKey="+hubKeyB,
		"HUB_READ_CONNECTION_STRING_A=HostName="+hubA+";SharedAccessKeyName=registryRead;SharedAccessKey="+readKeyA,
	)
	var stderr bytes.Buffer
	node.Stderr = &stderr
	out, runErr := node.Output()
	var results []result
	var sent []telemetry
	done := false
	for _, line := range strings.Split(string(out), "\n") {
		var r struct {
			result
			Done      bool       `json:"done"`
			Telemetry *telemetry `json:"telemetry"`
		}
		if json.Unmarshal([]byte(line), &r) != nil {
			continue
		}
		switch {
		case r.Done:
			done = true
		case r.Telemetry != nil:
			sent = append(sent, *r.Telemetry)
		case r.Scenario != "":
			results = append(results, r.result)
		}
	}
	// ... and reach the routes' endpoints.
	results = append(results, eng.checkRoutes(t, sent)...)
	// What the devices were told was accepted must be in the hubs' event
	// logs, exactly: read them once dpsd has stopped (SQLite, one process).
	stop()
	results = append(results, checkEventLog(t, filepath.Join(dir, "data", "dps.db"), sent)...)
	for _, r := range results {
		if r.OK {
			t.Logf("PASS  %-5s %s (%d ms)", r.Transport, r.Scenario, r.MS)
		} else {
			t.Errorf("FAIL  %-5s %s: %s", r.Transport, r.Scenario, r.Error)
		}
	}
	if !done {
		t.Errorf("node run.js stopped before running every scenario (a promise never settled?)")
	}
	if len(results) == 0 || !done || runErr != nil && !t.Failed() {
		t.Fatalf("node run.js: %v\nstdout:\n%s\nstderr:\n%s", runErr, out, stderr.String())
	}
}

// The built-in hubs of the suite: both reach this machine without DNS
// (all of 127.0.0.0/8 is loopback on Linux), and dpsd's generated
// certificate covers both names.
const (
	hubA = "localhost"
	hubB = "127.0.0.2"
)

// telemetry is a message a device SDK reported as sent (sendEvent
// resolved), as run.js prints it.
type telemetry struct {
	Transport  string            `json:"transport"`
	Hub        string            `json:"hub"`
	DeviceID   string            `json:"deviceId"`
	MessageID  string            `json:"messageId"`
	Properties map[string]string `json:"properties"`
	Body       string            `json:"body"`
}

// checkEventLog finds each sent message in its hub's event log by message
// ID and compares device, application properties and body exactly: one
// result per message.
func checkEventLog(t *testing.T, path string, sent []telemetry) []result {
	if len(sent) == 0 {
		return nil
	}
	ctx := context.Background()
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		return []result{{Scenario: "event log: open the store", Transport: "-", Error: err.Error()}}
	}
	defer db.Close()
	logs := map[string][]dps.Message{}
	var out []result
	for _, m := range sent {
		r := result{Scenario: "event log holds the telemetry of " + m.DeviceID + " on " + m.Hub + " exactly as sent", Transport: m.Transport}
		if _, ok := logs[m.Hub]; !ok {
			var all []dps.Message
			for after := int64(0); ; {
				page, err := db.Messages(ctx, m.Hub, after, 500)
				if err != nil {
					t.Fatalf("read the event log of %s: %v", m.Hub, err)
				}
				all = append(all, page...)
				if len(page) < 500 {
					break
				}
				after = page[len(page)-1].Seq
			}
			logs[m.Hub] = all
		}
		var found []dps.Message
		for _, got := range logs[m.Hub] {
			if got.MessageID == m.MessageID {
				found = append(found, got)
			}
		}
		switch {
		case len(found) != 1:
			r.Error = fmt.Sprintf("%d messages with message ID %q in the event log of %s, want 1", len(found), m.MessageID, m.Hub)
		case found[0].DeviceID != m.DeviceID || !maps.Equal(found[0].Properties, m.Properties) || string(found[0].Body) != m.Body:
			g := found[0]
			r.Error = fmt.Sprintf("logged device %q properties %v body %q; sent device %q properties %v body %q", g.DeviceID, g.Properties, g.Body, m.DeviceID, m.Properties, m.Body)
		default:
			r.OK = true
		}
		out = append(out, r)
	}
	return out
}

// transports lists the device transports the suite exercises.
func transports() string {
	if v := os.Getenv("DPS_COMPAT_TRANSPORTS"); v != "" {
		return v
	}
	return "http,mqtt,mqttws"
}
