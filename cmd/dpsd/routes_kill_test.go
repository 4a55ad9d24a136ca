package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/route/routetest"
	"github.com/opendps/dps/internal/wire"
)

// TestRoutingSurvivesAKill: devices publish QoS 1 telemetry over MQTT to a
// dpsd process whose route delivers to a webhook; dpsd is killed with
// SIGKILL while messages flow and is started again on the same data (the
// devices reconnect and go on publishing). Every message a device got a
// PUBACK for reaches the webhook, in order per device; duplicates (a batch
// the webhook took whose checkpoint the kill cut off) are counted.
func TestRoutingSurvivesAKill(t *testing.T) {
	rc := &hookReceiver{}
	hook := httptest.NewTLSServer(rc)
	defer hook.Close()
	hookCA := filepath.Join(t.TempDir(), "hook-ca.pem")
	if err := os.WriteFile(hookCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	files, hc, tc := sharedTLS(t)
	bin := dpstest.BuildDPSD(t)
	data := t.TempDir()
	admin := fmt.Sprintf("127.0.0.1:%d", routetest.FreePort(t))
	cfg := dpstest.WriteFile(t, "routes-kill.yaml", fmt.Sprintf(`idScope: %s
dataDir: %q
listen: { https: "127.0.0.1:0", mqtt: "127.0.0.1:0", admin: %q }
tls: { certFile: %q, keyFile: %q }
routing: { minBackoff: 100ms, maxBackoff: 500ms, lease: 3s }
linkedHubs:
  - hostName: localhost
    endpoints:
      - { name: hook, type: webhook, url: %q, secret: hook-secret, caFile: %q }
    routes:
      - { name: to-hook, source: telemetry, endpoint: hook }
accessPolicies:
  - { name: provisioningserviceowner, primaryKey: %q, rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
log: { level: info }
`, killScope, data, admin, files.ServerCert, files.ServerKey, hook.URL+"/events", hookCA, ownerKey))
	p := dpstest.StartDPSD(t, bin, cfg)

	svc, err := client.FromConnectionString("HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	svc.Endpoint, svc.HTTP = "https://"+p.HTTPS, hc
	dc := &device.Client{Endpoint: "https://" + p.HTTPS, IDScope: killScope, HTTPClient: hc}
	var devices []loadDevice
	for _, id := range []string{"rk-1", "rk-2", "rk-3"} {
		e, err := svc.PutEnrollment(context.Background(), wire.IndividualEnrollment{RegistrationID: id, Attestation: symmetric()}, "")
		if err != nil {
			t.Fatal(err)
		}
		key := e.Attestation.SymmetricKey.PrimaryKey
		if res, err := dc.Register(context.Background(), id, device.SymmetricKey(key), nil); err != nil || res.RegistrationState.AssignedHub != "localhost" {
			t.Fatalf("register %s: %+v, %v", id, res, err)
		}
		devices = append(devices, loadDevice{id, key})
	}

	var mqttAddr atomic.Value
	mqttAddr.Store(p.MQTT)
	load := startRouteLoad(t, func() string { return mqttAddr.Load().(string) }, tc, devices, 8, time.Millisecond)
	defer load.stopLoad()
	deadline := time.Now().Add(60 * time.Second)
	for load.ok.Load() < 1500 || len(rc.received()) < 500 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d messages acknowledged and %d routed in a minute", load.ok.Load(), len(rc.received()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	ackedAtKill, routedAtKill := load.ok.Load(), len(rc.received())
	p.Kill() // while devices publish and the route delivers
	p2 := dpstest.StartDPSD(t, bin, cfg)
	mqttAddr.Store(p2.MQTT)
	// The devices reconnect to the new process and publish for a while.
	for after := load.ok.Load(); load.ok.Load() < after+500; {
		if time.Now().After(deadline) {
			t.Fatalf("the devices did not publish again after the restart (%d acknowledged)", load.ok.Load()-after)
		}
		time.Sleep(10 * time.Millisecond)
	}
	load.stopLoad()

	read := func() []arrival {
		var out []arrival
		for _, m := range rc.received() {
			out = append(out, arrival{m.DeviceID, counter(m.Properties["n"])})
		}
		return out
	}
	got := load.waitArrived(t, 60*time.Second, read)
	dups := load.checkArrivals(t, got)
	delivered, _ := routeMetric(t, admin, "dps_route_delivered_messages_total", "to-hook")
	t.Logf("%d acknowledged and %d routed at the kill; %d sent, %d acknowledged in all, %d arrived at the webhook, %d duplicates; after the restart dps_route_delivered_messages_total %v",
		ackedAtKill, routedAtKill, load.sent.Load(), load.ok.Load(), len(got), dups, delivered)
	if rc.bad.Load() != 0 {
		t.Errorf("%d webhook requests were not signed right", rc.bad.Load())
	}
	if delivered == 0 {
		t.Error("the restarted dpsd delivered nothing (dps_route_delivered_messages_total is 0)")
	}
}
