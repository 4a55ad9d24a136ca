package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
)

// TestBuiltInHubOverHTTPS: a device provisioned to the built-in hub
// localhost sends telemetry to it with the key it was provisioned with,
// and the hub's service API shows the initial twin of its enrollment.
func TestBuiltInHubOverHTTPS(t *testing.T) {
	dir := t.TempDir()
	s, hc := startServer(t, dir, "linkedHubs:\n  - { hostName: localhost }\n")
	ctx := context.Background()
	e := dpstest.SymmetricKeyEnrollment("hub-dev-1")
	e.Settings.InitialTwin = []byte(`{"tags":{"site":"lab"},"properties":{"desired":{"interval":30}}}`)
	e = dpstest.MustPutEnrollment(t, s.store, e)
	res, err := s.client(hc).Register(ctx, "hub-dev-1", device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rs := res.RegistrationState; rs == nil || rs.AssignedHub != "localhost" || rs.DeviceID != "hub-dev-1" {
		t.Fatalf("registration = %+v", res.RegistrationState)
	}
	_, port, _ := net.SplitHostPort(s.httpsLn.Addr().String())
	base := "https://localhost:" + port // the hub by its name: the certificate covers it
	key := mustB64(t, string(e.Attestation.SymmetricKey.PrimaryKey))
	tok := sas.New("localhost/devices/hub-dev-1", key, "", time.Now().Add(time.Hour))

	send := func(auth string) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/devices/hub-dev-1/messages/events?api-version=2021-04-12", strings.NewReader(`{"temp":21}`))
		req.Header.Set("Authorization", auth)
		req.Header.Set("iothub-app-alert", "high")
		req.Header.Set("IoTHub-MessageId", "m-1")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(tok); code != http.StatusNoContent {
		t.Fatalf("telemetry: HTTP %d, want 204", code)
	}
	wrong := sas.New("localhost/devices/hub-dev-1", mustB64(t, dpstest.Key(32)), "", time.Now().Add(time.Hour))
	if code := send(wrong); code != http.StatusUnauthorized {
		t.Errorf("telemetry with a wrong key: HTTP %d, want 401", code)
	}
	log, ok := s.store.(interface {
		Messages(ctx context.Context, hub string, after int64, limit int) ([]dps.Message, error)
	})
	if !ok {
		t.Fatal("the store does not read the event log")
	}
	all, err := log.Messages(ctx, "localhost", 0, 10)
	var msgs []dps.Message // the telemetry: the device's createDeviceIdentity event is in the log too
	for _, m := range all {
		if m.System["iothub-message-source"] == "Telemetry" {
			msgs = append(msgs, m)
		}
	}
	if err != nil || len(msgs) != 1 || len(all) != 2 || all[0].Properties["opType"] != "createDeviceIdentity" {
		t.Fatalf("event log = %+v, %v", all, err)
	}
	if m := msgs[0]; m.DeviceID != "hub-dev-1" || m.MessageID != "m-1" || m.Properties["alert"] != "high" || string(m.Body) != `{"temp":21}` {
		t.Errorf("message = %+v", m)
	}

	owner, ok := s.hubOwners["localhost"]
	if !ok {
		t.Fatal("no generated iothubowner policy for the built-in hub")
	}
	svc := sas.New("localhost", mustB64(t, owner.PrimaryKey), owner.Name, time.Now().Add(time.Hour))
	twin := do(t, hc, http.MethodGet, base+"/twins/hub-dev-1?api-version=2021-04-12", svc, nil)
	if twin.status != http.StatusOK || !strings.Contains(twin.raw, `"interval":30`) || !strings.Contains(twin.raw, `"site":"lab"`) {
		t.Errorf("twin: HTTP %d %s", twin.status, twin.raw)
	}
	// A device token does not open the service API.
	if r := do(t, hc, http.MethodGet, base+"/twins/hub-dev-1?api-version=2021-04-12", tok, nil); r.status != http.StatusUnauthorized {
		t.Errorf("twin read with a device token: HTTP %d, want 401", r.status)
	}
}
