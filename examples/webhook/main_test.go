package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/webhook"
)

func TestAllocate(t *testing.T) {
	srv := httptest.NewServer(webhook.Handler(Allocate, webhook.HandlerOptions{Secret: []byte("s")}))
	defer srv.Close()
	body := []byte(`{"individualEnrollment":{"registrationId":"d1","attestation":{"type":"symmetricKey"}},
		"deviceRuntimeContext":{"registrationId":"d1","symmetricKey":{},"payload":{"model":"heatpump"}},
		"linkedHubs":["toaster-hub.example.net","heatpump-hub.example.net"]}`)
	post := func(sig string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL, bytes.NewReader(body))
		req.Header.Set(webhook.SignatureHeader, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := post("t=1,v1=00"); resp.StatusCode != 401 {
		t.Errorf("bad signature: %d", resp.StatusCode)
	}
	resp := post(webhook.Sign([]byte("s"), body, time.Now()))
	b, _ := io.ReadAll(resp.Body)
	var got webhook.Response
	if err := json.Unmarshal(b, &got); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got.IoTHubHostName != "heatpump-hub.example.net" || got.InitialTwin == nil || !strings.Contains(string(got.Payload), `"received":{"model":"heatpump"}`) {
		t.Errorf("response = %s", b)
	}
	if d := string(got.InitialTwin.Properties.Desired); d != `{"firmwareTarget":"2.0.0","firmwareUpdate":true,"telemetryIntervalSeconds":300}` {
		t.Errorf("desired of a heatpump without firmware = %s", d)
	}
}

// TestDesiredFromPayload: the initial twin's desired properties follow the
// payload's model and firmware.
func TestDesiredFromPayload(t *testing.T) {
	for _, c := range []struct{ payload, desired string }{
		{`{"model":"t1","firmware":"1.2.0"}`, `{"firmwareTarget":"1.4.0","firmwareUpdate":true,"telemetryIntervalSeconds":60}`},
		{`{"model":"t1","firmware":"1.4.0"}`, `{"firmwareTarget":"1.4.0","firmwareUpdate":false,"telemetryIntervalSeconds":60}`},
		{`{"model":"t2"}`, `{"firmwareTarget":"2.1.0","firmwareUpdate":true,"telemetryIntervalSeconds":30}`},
	} {
		res, err := Allocate(t.Context(), &webhook.Request{DeviceRuntimeContext: webhook.DeviceRuntimeContext{RegistrationID: "d", Payload: json.RawMessage(c.payload)},
			LinkedHubs: []string{"localhost"}})
		if err != nil {
			t.Fatal(err)
		}
		if d := string(res.InitialTwin.Properties.Desired); d != c.desired || res.IoTHubHostName != "localhost" {
			t.Errorf("payload %s: hub %s, desired %s, want %s", c.payload, res.IoTHubHostName, d, c.desired)
		}
	}
}
