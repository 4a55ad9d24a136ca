package mqttapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/mqttapi"
)

// TestDPSRefusalLogged: a refused DPS request over MQTT is one info line
// with the reason, error code, status, registration ID, transport (mqtt
// or mqttws), source address and the tracking ID of the answer the device
// got, and never its SAS token or its payload; it is also one refused
// event with those, the operation polled and the payload sent. A request
// let through carries its origin to the service.
func TestDPSRefusalLogged(t *testing.T) {
	const token = "SharedAccessSignature sr=x&sig=bad&se=1"
	var logs lockedLog
	rec := &dpstest.Recorder{}
	f := &fakeRegistrar{}
	a := &mqttapi.Adapter{Registrar: f, Events: rec, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	for _, tt := range []struct {
		name, transport, topic, payload string
		status, code                    int
		reason, opID                    string
	}{
		{"register", "mqtt", "$dps/registrations/PUT/iotdps-register/?$rid=1", `{"payload":{"fw":"s3cr3t-fw"}}`, 401, dps.CodeUnauthorized, "no", ""},
		{"poll", "mqttws", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=nope", "", 404, dps.CodeNotFound, "operation not found", "nope"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sas := "bad"
			if tt.name == "poll" {
				sas = token
			}
			id := mqttapi.Identity{IDScope: "0ne00000001", RegistrationID: "dev-1", Credential: dps.Credential{SAS: sas}, Transport: tt.transport, Source: "192.0.2.7:5555"}
			before := len(logs.String())
			_, body, ok := a.Handle(context.Background(), id, tt.topic, []byte(tt.payload))
			if !ok {
				t.Fatal("not answered")
			}
			var answer struct {
				ErrorCode  int    `json:"errorCode"`
				TrackingID string `json:"trackingId"`
			}
			if err := json.Unmarshal(body, &answer); err != nil || answer.ErrorCode != tt.code || answer.TrackingID == "" {
				t.Fatalf("answer %s (%v), want error %d with a tracking ID", body, err, tt.code)
			}
			var line map[string]any
			for l := range strings.Lines(logs.String()[before:]) {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "device refused" {
					line = m
				}
			}
			if line == nil {
				t.Fatalf("no info line \"device refused\":\n%s", logs.String()[before:])
			}
			for k, v := range map[string]any{"level": "INFO", "reason": tt.reason, "error_code": float64(tt.code), "status": float64(tt.status),
				"registration_id": "dev-1", "transport": tt.transport, "source": "192.0.2.7:5555", "tracking_id": answer.TrackingID} {
				if line[k] != v {
					t.Errorf("%s = %v, want %v (line %v)", k, line[k], v, line)
				}
			}
			for _, secret := range []string{"sig=bad", "s3cr3t-fw"} {
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the log shows %q:\n%s", secret, logs.String())
				}
			}
			events := rec.Take()
			if len(events) != 1 {
				t.Fatalf("%d events, want 1: %+v", len(events), events)
			}
			e := events[0]
			if e.Kind != dps.EventRefused || e.RegistrationID != "dev-1" || e.Transport != tt.transport || e.Source != "192.0.2.7:5555" ||
				e.TrackingID != answer.TrackingID || e.Code != tt.code || e.Reason != tt.reason || e.OperationID != tt.opID ||
				e.Attestation != dps.AttestationSymmetricKey || e.Cause == "" {
				t.Errorf("event %+v", e)
			}
			if wantPayload := map[string]string{"register": `{"fw":"s3cr3t-fw"}`}[tt.name]; string(e.Payload) != wantPayload {
				t.Errorf("event payload %s, want %s", e.Payload, wantPayload)
			}
		})
	}
	id := mqttapi.Identity{IDScope: "0ne00000001", RegistrationID: "dev-1", Credential: dps.Credential{SAS: "good"}, Transport: "mqttws", Source: "192.0.2.7:5555"}
	if _, _, ok := a.Handle(context.Background(), id, "$dps/registrations/PUT/iotdps-register/?$rid=3", nil); !ok {
		t.Fatal("not answered")
	}
	if o := f.got.Origin; o.Transport != "mqttws" || o.Source != "192.0.2.7:5555" {
		t.Errorf("origin %+v, want the connection's transport and source", o)
	}
	if events := rec.Take(); len(events) != 0 {
		t.Errorf("an accepted request was recorded by the transport: %+v", events)
	}
}

// TestConnectRefusalRecorded: a DPS CONNECT refused (a wrong credential,
// an outage) is a refused event with the registration ID, transport,
// source, code, reason and cause, over TLS and over WebSocket.
func TestConnectRefusalRecorded(t *testing.T) {
	rec := &dpstest.Recorder{}
	b, tc := broker(t, mqttapi.BrokerOptions{Adapter: &mqttapi.Adapter{Registrar: &fakeRegistrar{}, Events: rec}})
	for name, dial := range transports(t, b, tc) {
		transport := map[string]string{"tls": "mqtt", "websocket": "mqttws"}[name]
		for _, tt := range []struct {
			password, cause string
			code            int
		}{
			{"bad", dps.CauseAuthentication, dps.CodeUnauthorized},
			{"down", dps.CauseUnavailable, dps.CodeUnavailable},
		} {
			c := dial(t, 4)
			if ack := c.connect(connectPacket("conn-"+name, tt.password, 60)); ack.ReasonCode == 0 {
				t.Fatalf("%s: CONNACK 0 for password %q", name, tt.password)
			}
			c.Close()
			events := rec.Take()
			if len(events) != 1 {
				t.Fatalf("%s %s: %d events, want 1: %+v", name, tt.password, len(events), events)
			}
			e := events[0]
			if e.Kind != dps.EventRefused || e.RegistrationID != "conn-"+name || e.Transport != transport || e.Source == "" ||
				e.Code != tt.code || e.Cause != tt.cause || !strings.HasPrefix(e.Reason, "mqtt connect: ") || e.TrackingID == "" {
				t.Errorf("%s %s: event %+v", name, tt.password, e)
			}
		}
	}
}
