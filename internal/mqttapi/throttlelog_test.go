package mqttapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/throttle"
)

// TestThrottledLoggedOncePerInterval: an MQTT device polling too often is
// answered 429 with retry-after every time, and logged once per 10 s per
// registration ID and operation, the next line with the count of
// refusals not logged in between; every refusal is recorded in the
// events feed.
func TestThrottledLoggedOncePerInterval(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var logs bytes.Buffer
	rec := &dpstest.Recorder{}
	a := &mqttapi.Adapter{Registrar: &fakeRegistrar{}, RetryAfter: 3e9, Events: rec,
		Throttle: throttle.New(throttle.Options{PollsPer10s: 1, Now: clock}),
		Logger:   slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	id := mqttapi.Identity{IDScope: "0ne00000001", RegistrationID: "dev-1", Credential: dps.Credential{SAS: "good"}, Source: "127.0.0.1:1"}
	poll := "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=1.a.b"
	refused := func() []map[string]any {
		var out []map[string]any
		for l := range strings.Lines(logs.String()) {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "device refused" {
				out = append(out, m)
			}
		}
		return out
	}
	for i := range 50 {
		topic, _, _ := a.Handle(context.Background(), id, poll, nil)
		want := "$dps/registrations/res/200/?$rid=1"
		if i > 0 {
			want = "$dps/registrations/res/429/?$rid=1&retry-after=10"
		}
		if topic != want {
			t.Fatalf("poll %d: %s, want %s", i+1, topic, want)
		}
	}
	if lines := refused(); len(lines) != 1 || lines[0]["suppressed"] != float64(0) || lines[0]["registration_id"] != "dev-1" || lines[0]["error_code"] != float64(dps.CodeThrottled) {
		t.Fatalf("49 throttled polls logged: %v", lines)
	}
	// Only the log line is gated: every 429 is a refused event (and so
	// counted in dps_device_refusals_total).
	throttled := 0
	for _, e := range rec.Take() {
		if e.Kind == dps.EventRefused && e.Code == dps.CodeThrottled && e.RegistrationID == "dev-1" && e.Transport == "mqtt" {
			throttled++
		}
	}
	if throttled != 49 {
		t.Fatalf("49 throttled polls recorded %d refused events", throttled)
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	a.Handle(context.Background(), id, poll, nil) // admitted: one poll per 10 s
	a.Handle(context.Background(), id, poll, nil)
	if lines := refused(); len(lines) != 2 || lines[1]["suppressed"] != float64(48) {
		t.Fatalf("the line after the interval: %v, want suppressed 48", lines)
	}
}
