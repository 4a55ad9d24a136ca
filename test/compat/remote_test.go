//go:build compat

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
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/webhook"
)

// The remote-hub suite's two instances. dps A is the provisioning
// service devices register with (localhost, listening on 127.0.0.1 only);
// dps B's built-in hub, named 127.0.0.3, is linked to A as a remote hub
// through B's hub connection string, and B listens on 127.0.0.3 only.
// Both use the ports the Node SDK requires (443 for HTTPS and MQTT over
// WebSocket, 8883 for MQTT): two processes may hold one port on two
// loopback addresses, which all of 127.0.0.0/8 is on Linux, and B's
// generated certificate covers its hub's name. No network namespace is
// needed, so the suite runs wherever the main one does.
const (
	remoteDPS = "localhost"
	remoteHub = "127.0.0.3"
)

// TestNodeSDKRemoteHub: devices provisioned on dps A with the real Node
// provisioning SDK (symmetric key and X.509, custom allocation with an
// initial twin) land on dps B's hub, which A reaches through B's service
// API; the real Node device SDK then connects to B, reads the twin the
// webhook set, reports a property B's service API sees, and sends
// telemetry that B's event log holds.
func TestNodeSDKRemoteHub(t *testing.T) {
	dir := t.TempDir()
	if _, err := os.Stat("node_modules/azure-iot-provisioning-device"); err != nil {
		t.Fatal("node_modules missing: run `npm ci` in test/compat (make test does)")
	}
	// The webhook assigns every device to B's hub, with an initial twin:
	// tags naming its model, desired properties = the payload's "desired"
	// member plus {"webhook":{"hub":…,"registrationId":…}}.
	hook := httptest.NewUnstartedServer(webhook.Handler(func(ctx context.Context, req *webhook.Request) (*webhook.Response, error) {
		var p struct {
			Model   string                     `json:"model"`
			Desired map[string]json.RawMessage `json:"desired"`
		}
		json.Unmarshal(req.DeviceRuntimeContext.Payload, &p)
		desired := map[string]any{"webhook": map[string]string{"hub": remoteHub, "registrationId": req.DeviceRuntimeContext.RegistrationID}}
		for k, v := range p.Desired {
			desired[k] = v
		}
		desiredJSON, _ := json.Marshal(desired)
		tags, _ := json.Marshal(map[string]string{"model": p.Model})
		return &webhook.Response{IoTHubHostName: remoteHub, InitialTwin: &webhook.Twin{Tags: tags, Properties: &webhook.TwinProperties{Desired: desiredJSON}}}, nil
	}, webhook.HandlerOptions{}))
	hook.StartTLS()
	defer hook.Close()
	hookCA := filepath.Join(dir, "webhook-ca.pem")
	os.WriteFile(hookCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}), 0o600)

	x509Dir := filepath.Join(dir, "x509")
	os.MkdirAll(x509Dir, 0o700)
	leaf := dpstest.SelfSigned(t, "x509-remote")
	der, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(x509Dir, "x509-remote.pem"), []byte(leaf.PEM()), 0o600)
	os.WriteFile(filepath.Join(x509Dir, "x509-remote-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)

	newKey := func() string {
		key := make([]byte, 32)
		rand.Read(key)
		return base64.StdEncoding.EncodeToString(key)
	}
	ownerKey, hubKey := newKey(), newKey()
	bin := filepath.Join(dir, "dpsd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/opendps/dps/cmd/dpsd").CombinedOutput(); err != nil {
		t.Fatalf("build dpsd: %v\n%s", err, out)
	}

	// B first: A reads B's CA at start.
	bData := filepath.Join(dir, "b")
	b := startDPSD(t, bin, filepath.Join(dir, "b.yaml"), fmt.Sprintf(`idScope: "0ne00C0MPB0"
dataDir: %q
listen: { https: "%s:443", mqtt: "%s:8883", admin: "127.0.0.1:0" }
linkedHubs:
  - hostName: %s
    accessPolicies: [ { name: iothubowner, primaryKey: %q, rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect] } ]
`, bData, remoteHub, remoteHub, remoteHub, hubKey))
	defer b.stop()
	bCA := filepath.Join(bData, "tls", "ca.pem")
	hubCS := "HostName=" + remoteHub + ";SharedAccessKeyName=iothubowner;SharedAccessKey=" + hubKey
	a := startDPSD(t, bin, filepath.Join(dir, "a.yaml"), fmt.Sprintf(`idScope: "0ne00C0MPA0"
dataDir: %q
listen: { https: "127.0.0.1:443", mqtt: "127.0.0.1:8883", admin: "127.0.0.1:0" }
serviceHostName: %s
retryAfterSeconds: 1
linkedHubs:
  - hostName: %s
    connectionString: %q
    caFile: %q
    timeout: 10s
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: %q, rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
webhook: { caFile: %q }
`, filepath.Join(dir, "a"), remoteDPS, remoteHub, hubCS, bCA, ownerKey, hookCA))
	defer a.stop()
	for _, addr := range []string{"127.0.0.1:443", remoteHub + ":443", remoteHub + ":8883"} {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		c.Close()
	}

	// The devices trust both instances' CAs (A's for provisioning, B's
	// for the hub).
	cas := filepath.Join(dir, "cas.pem")
	var bundle []byte
	for _, f := range []string{filepath.Join(dir, "a", "tls", "ca.pem"), bCA} {
		pemBytes, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bundle = append(bundle, pemBytes...)
	}
	os.WriteFile(cas, bundle, 0o600)

	node := exec.Command("node", "remote.js")
	node.Env = append(os.Environ(),
		"DPS_HOST="+remoteDPS,
		"DPS_ID_SCOPE=0ne00C0MPA0",
		"DPS_CONNECTION_STRING=HostName="+remoteDPS+";SharedAccessKeyName=provisioningserviceowner;SharedAccessKey="+ownerKey,
		"DPS_WEBHOOK_URL="+hook.URL+"/api/allocate?code=function-key",
		"DPS_TRANSPORTS="+transports(),
		"NODE_EXTRA_CA_CERTS="+cas,
		"DPS_X509_DIR="+x509Dir,
		"HUB_CONNECTION_STRING_B="+hubCS,
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
	// The telemetry is in B's event log, exactly as sent: read once B has
	// stopped (SQLite, one process).
	a.stop()
	b.stop()
	if len(sent) == 0 {
		results = append(results, result{Scenario: "remote: no device sent telemetry to " + remoteHub, Transport: "-"})
	}
	results = append(results, checkEventLog(t, filepath.Join(bData, "dps.db"), sent)...)
	for _, r := range results {
		if r.OK {
			t.Logf("PASS  %-5s %s (%d ms)", r.Transport, r.Scenario, r.MS)
		} else {
			t.Errorf("FAIL  %-5s %s: %s", r.Transport, r.Scenario, r.Error)
		}
	}
	if !done {
		t.Errorf("node remote.js stopped before running every scenario (a promise never settled?)")
	}
	if len(results) == 0 || !done || runErr != nil && !t.Failed() {
		t.Fatalf("node remote.js: %v\nstdout:\n%s\nstderr:\n%s", runErr, out, stderr.String())
	}
	if t.Failed() {
		t.Logf("dps A log:\n%s\ndps B log:\n%s", a.logs.String(), b.logs.String())
	}
}

// dpsd is one dpsd process of a test.
type dpsd struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
	once sync.Once
}

// stop interrupts dpsd and waits for it to exit.
func (d *dpsd) stop() {
	d.once.Do(func() {
		d.cmd.Process.Signal(os.Interrupt)
		d.cmd.Wait()
	})
}

// startDPSD writes config to cfgPath and starts bin with it, returning
// once its banner listed the linked hubs (it serves then).
func startDPSD(t *testing.T, bin, cfgPath, config string) *dpsd {
	t.Helper()
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &dpsd{cmd: exec.Command(bin, "--config", cfgPath), logs: &bytes.Buffer{}}
	d.cmd.Stderr = d.logs
	stdout, _ := d.cmd.StdoutPipe()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
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
		t.Logf("dpsd (%s) started:\n%s", filepath.Base(cfgPath), banner)
	case <-time.After(30 * time.Second):
		d.stop()
		t.Fatalf("dpsd (%s) did not start:\n%s", filepath.Base(cfgPath), d.logs.String())
	}
	return d
}
