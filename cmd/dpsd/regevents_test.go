package main

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/wire"
)

// waitEvent reads the registration-events feed through the service API
// until an event of kind for regID satisfies ok.
func waitEvent(t *testing.T, svc *client.Client, regID, kind string, ok func(wire.RegistrationEvent) bool) wire.RegistrationEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := svc.RegistrationEvents(context.Background(), client.EventQuery{RegistrationID: regID, Kind: kind})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if ok == nil || ok(e) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event of %s in %+v", kind, regID, evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRegistrationEventsEndToEnd: devices registering over HTTPS and MQTT
// (accepted and assigned, or refused with a wrong key) and a custom
// allocation webhook's calls appear in the feed of GET
// /registrationEvents with their fields, and /metrics names every
// operator metric.
func TestRegistrationEventsEndToEnd(t *testing.T) {
	s, hc, svc, _, hookURL := startWithWebhook(t, "")
	ctx := context.Background()
	put := func(e wire.IndividualEnrollment) string {
		t.Helper()
		e.Attestation = symmetric()
		out, err := svc.PutEnrollment(ctx, e, "")
		if err != nil {
			t.Fatal(err)
		}
		return out.Attestation.SymmetricKey.PrimaryKey
	}
	httpsKey, mqttKey := put(wire.IndividualEnrollment{RegistrationID: "ev-https"}), put(wire.IndividualEnrollment{RegistrationID: "ev-mqtt"})
	cad := &wire.CustomAllocationDefinition{WebhookURL: hookURL, APIVersion: "2021-10-01"}
	hookKey := put(wire.IndividualEnrollment{RegistrationID: "ev-hook", AllocationPolicy: "custom", CustomAllocationDefinition: cad})
	failKey := put(wire.IndividualEnrollment{RegistrationID: "fail-401--ev", AllocationPolicy: "custom", CustomAllocationDefinition: cad})

	https, mqtt := s.client(hc), s.mqttClient(t)
	if _, err := https.Register(ctx, "ev-https", device.SymmetricKey(httpsKey), map[string]any{"fw": "1.0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := https.Register(ctx, "ev-https", device.SymmetricKey(dpstest.Key(32)), nil); err == nil {
		t.Fatal("a wrong key registered over HTTPS")
	}
	if _, err := mqtt.Register(ctx, "ev-mqtt", device.SymmetricKey(mqttKey), map[string]any{"fw": "2.0"}); err != nil {
		t.Fatal(err)
	}
	var refused *device.ConnectRefusedError
	if _, err := mqtt.Register(ctx, "ev-mqtt", device.SymmetricKey(dpstest.Key(32)), nil); !errors.As(err, &refused) {
		t.Fatalf("a wrong key over MQTT: %v, want a CONNACK refusal", err)
	}
	if _, err := https.Register(ctx, "ev-hook", device.SymmetricKey(hookKey), map[string]any{"model": "heatpump"}); err != nil {
		t.Fatal(err)
	}
	if res, err := https.Register(ctx, "fail-401--ev", device.SymmetricKey(failKey), nil); err == nil && res.Status == "assigned" {
		t.Fatal("the webhook's 401 assigned the device")
	}

	node := s.cfg.NodeID
	sourced := func(e wire.RegistrationEvent) bool {
		return strings.HasPrefix(e.Source, "127.0.0.1:") && e.Node == node
	}
	for _, tc := range []struct{ regID, transport string }{{"ev-https", "https"}, {"ev-mqtt", "mqtt"}} {
		acc := waitEvent(t, svc, tc.regID, "accepted", nil)
		if acc.Transport != tc.transport || !sourced(acc) || acc.Attestation != "symmetricKey" || acc.OperationID == "" || !strings.Contains(string(acc.Payload), `"fw"`) {
			t.Errorf("%s accepted: %+v", tc.regID, acc)
		}
		asg := waitEvent(t, svc, tc.regID, "assigned", nil)
		if asg.Transport != tc.transport || !sourced(asg) || asg.OperationID != acc.OperationID || asg.DeviceID != tc.regID ||
			(asg.AssignedHub != "hub-a.example.net" && asg.AssignedHub != "hub-b.example.net") {
			t.Errorf("%s assigned: %+v", tc.regID, asg)
		}
		ref := waitEvent(t, svc, tc.regID, "refused", nil)
		if ref.Transport != tc.transport || !sourced(ref) || ref.ErrorCode != 401002 || ref.Cause != "authentication" || ref.TrackingID == "" || ref.Reason == "" {
			t.Errorf("%s refused: %+v", tc.regID, ref)
		}
		if tc.transport == "https" && ref.Attestation != "symmetricKey" {
			t.Errorf("https refused: attestation %q", ref.Attestation)
		}
	}
	hook := waitEvent(t, svc, "ev-hook", "webhook", nil)
	if w := hook.Webhook; w == nil || w.URL != strings.TrimSuffix(hookURL, "?code=fn-key") || w.Status != 200 || w.LatencyMs <= 0 || w.Error != "" || hook.Node != node {
		t.Errorf("webhook event %+v (call %+v), want %s 200 with a latency", hook, hook.Webhook, strings.TrimSuffix(hookURL, "?code=fn-key"))
	}
	if asg := waitEvent(t, svc, "ev-hook", "assigned", nil); asg.AssignedHub != "hub-b.example.net" || asg.Transport != "https" || len(asg.Payload) == 0 {
		t.Errorf("ev-hook assigned (in the background): %+v", asg)
	}
	failed := waitEvent(t, svc, "fail-401--ev", "failed", nil)
	if failed.ErrorCode != 400209 || failed.Cause != "allocation" || failed.Reason == "" {
		t.Errorf("failed: %+v", failed)
	}
	if w := waitEvent(t, svc, "fail-401--ev", "webhook", nil).Webhook; w == nil || w.Status != 401 {
		t.Errorf("the 401 call: %+v", w)
	}
	if strings.Contains(hookURL, "fn-key") {
		all, _ := svc.RegistrationEvents(ctx, client.EventQuery{Limit: 1000})
		for _, e := range all {
			if e.Webhook != nil && strings.Contains(e.Webhook.URL, "fn-key") {
				t.Errorf("an event shows the function key: %+v", e.Webhook)
			}
		}
	}

	resp, err := http.Get("http://" + s.adminLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	hu, _ := url.Parse(hookURL)
	webhook := hu.Scheme + "://" + hu.Host // the webhook metrics are labelled by scheme and host only
	for l := range strings.Lines(metrics) {
		if strings.HasPrefix(l, "dps_webhook") && (strings.Contains(l, "/api/allocate") || strings.Contains(l, "fn-key")) {
			t.Errorf("a webhook metric is labelled with the URL's path or query: %s", l)
		}
	}
	for _, want := range []string{
		`dps_hub_assignments_total{hub="hub-b.example.net"} `,
		`dps_hub_failures_total{hub="hub-a.example.net",operation="provision"} 0`,
		`dps_webhook_duration_seconds_bucket{url="` + webhook + `",le=`,
		`dps_webhook_duration_seconds_count{url="` + webhook + `"} `,
		`dps_webhook_failures_total{url="` + webhook + `"} `,
		`dps_connections_total{listener="https"} `,
		`dps_connections_total{listener="mqtt"} `,
		`dps_connections_open{listener="mqtt"} `,
		`dps_device_refusals_total{reason="authentication",transport="https"} 1`,
		`dps_device_refusals_total{reason="authentication",transport="mqtt"} 1`,
		`dps_store_operation_duration_seconds_bucket{operation="createOperation",le=`,
		`dps_store_operation_duration_seconds_count{operation="appendRegistrationEvents"} `,
		`dps_store_operation_duration_seconds_count{operation="enrollment"} `,
		`dps_registration_events_dropped_total 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	// Counted, not only declared: this test's connections.
	for _, series := range []string{`dps_connections_total{listener="https"}`, `dps_connections_total{listener="mqtt"}`} {
		var n float64
		for l := range strings.Lines(metrics) {
			if v, ok := strings.CutPrefix(l, series+" "); ok {
				fmt.Sscan(v, &n)
			}
		}
		if n < 1 {
			t.Errorf("%s = %v, want the connections this test made", series, n)
		}
	}
	if t.Failed() {
		for l := range strings.Lines(metrics) {
			if strings.HasPrefix(l, "dps_hub") || strings.HasPrefix(l, "dps_webhook") || strings.HasPrefix(l, "dps_conn") || strings.HasPrefix(l, "dps_device") || strings.HasPrefix(l, "dps_registration_events") {
				t.Log(strings.TrimSpace(l))
			}
		}
	}
}

// TestEventsConfig: events.registrationEvents has its defaults, takes its
// keys, and a bad value stops dpsd naming the key.
func TestEventsConfig(t *testing.T) {
	cfg, err := loadConfig("", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Events.RegistrationEvents; r.Retention != 24*time.Hour || r.MaxEvents != 100_000 || r.PayloadLimit != 4096 {
		t.Errorf("defaults %+v", r)
	}
	cfg, err = loadConfig(writeConfig(t, "events: { registrationEvents: { retention: 2h, maxEvents: 500, payloadLimit: 100 } }\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Events.RegistrationEvents; r.Retention != 2*time.Hour || r.MaxEvents != 500 || r.PayloadLimit != 100 {
		t.Errorf("read %+v", r)
	}
	for _, tt := range []struct{ yaml, key string }{
		{"events: { registrationEvents: { retention: 10s } }\n", "events.registrationEvents.retention"},
		{"events: { registrationEvents: { maxEvents: 0 } }\n", "events.registrationEvents.maxEvents"},
		{"events: { registrationEvents: { payloadLimit: 200000 } }\n", "events.registrationEvents.payloadLimit"},
		{"events: { registrationEvent: {} }\n", "registrationEvent"},
	} {
		if _, err := loadConfig(writeConfig(t, tt.yaml), noEnv); err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s: err = %v, want it to name %s", strings.TrimSpace(tt.yaml), err, tt.key)
		}
	}
}

// TestHubMetrics: a remote hub's assignments and its failed calls are
// counted per hub.
func TestHubMetrics(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id := path.Base(r.URL.Path); strings.HasPrefix(id, "ok-") {
			io.WriteString(w, `{"deviceId":"`+id+`","status":"enabled"}`)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"Message":"ErrorCode:IotHubUnauthorizedAccess;no","ExceptionMessage":""}`)
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "hub-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	// httptest's certificate is for example.com.
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(`linkedHubs:
  - hostName: example.com
    connectionString: "HostName=example.com;SharedAccessKeyName=provisioner;SharedAccessKey=%s"
    caFile: %s
    endpoint: %s
`, dpstest.Key(32), ca, srv.Listener.Addr()))
	for id, want := range map[string]string{"ok-1": "assigned", "bad-1": "failed"} {
		e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment(id))
		res, err := s.client(hc).Register(context.Background(), id, device.SymmetricKey(string(e.Attestation.SymmetricKey.PrimaryKey)), nil)
		if err != nil || res.Status != want {
			t.Fatalf("%s: %+v, %v; want %s", id, res, err, want)
		}
	}
	resp, err := http.Get("http://" + s.adminLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`dps_hub_assignments_total{hub="example.com"} 1`,
		`dps_hub_failures_total{hub="example.com",operation="provision"} 1`,
		`dps_hub_failures_total{hub="example.com",operation="deprovision"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}
