package iothub_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
)

// hubEvents returns the hub's own events in the log after seq after.
func hubEvents(t *testing.T, f *fixture, after int64) []dps.Message {
	t.Helper()
	msgs, err := f.st.Messages(context.Background(), hub, after, 100)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// wantEvent checks an event's properties and that its body has want's
// members (compared as JSON).
func wantEvent(t *testing.T, m dps.Message, source, op, schema, device string, want map[string]any) {
	t.Helper()
	p := m.Properties
	if m.System[iothub.PropMessageSource] != source || m.System[iothub.PropConnectionDeviceID] != device || m.DeviceID != device ||
		p["opType"] != op || p["iothub-message-schema"] != schema || p["hubName"] != hub || p["deviceId"] != device ||
		p["operationTimestamp"] != "2026-12-03T12:00:00Z" || m.ContentType != "application/json" || m.ContentEncoding != "utf-8" {
		t.Errorf("%s event: properties %v system %v content %s/%s", op, p, m.System, m.ContentType, m.ContentEncoding)
	}
	var body map[string]any
	if err := json.Unmarshal(m.Body, &body); err != nil {
		t.Fatalf("%s event body %s: %v", op, m.Body, err)
	}
	for k, v := range want {
		g, _ := json.Marshal(body[k])
		w, _ := json.Marshal(v)
		if string(g) != string(w) {
			t.Errorf("%s event body %s: %s = %s, want %s", op, m.Body, k, g, w)
		}
	}
}

// TestSourcesAppendEvents: each device and twin operation appends its
// event to the hub's event log, with IoT Hub's source, properties and
// body; a connection replaced by the device's next one has no
// deviceDisconnected; each append calls OnAppend.
func TestSourcesAppendEvents(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	woken := 0
	f.hub = iothub.New(iothub.Options{Store: f.st, Hubs: []string{hub}, Now: func() time.Time { return f.now }, OnAppend: func(h string) {
		if h == hub {
			woken++
		}
	}})
	d, err := f.st.HubDevice(ctx, hub, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	d.Replaces = dps.ReplacesNothing
	f.hub.Provisioned(ctx, d, nil)
	id := f.connect(t)
	first := f.hub.Attach(id, &conn{})
	second := f.hub.Attach(id, &conn{}) // replaces first
	first()
	if _, err := f.hub.PatchReported(ctx, id, []byte(`{"temp":21}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.hub.PatchDesired(ctx, hub, "dev-1", []byte(`{"interval":60}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.hub.UpdateTwin(ctx, hub, "dev-1", []byte(`{"tags":{"floor":2}}`), "*"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.hub.UpdateTwin(ctx, hub, "dev-1", []byte(`{}`), "*"); err != nil { // changes nothing: no event
		t.Fatal(err)
	}
	if _, err := f.hub.ReplaceTwin(ctx, hub, "dev-1", []byte(`{"tags":{"site":"b"},"properties":{"desired":{"mode":"eco"}}}`), "*"); err != nil {
		t.Fatal(err)
	}
	second()
	f.hub.Provisioned(ctx, dps.HubDevice{Hub: "elsewhere.example.test", DeviceID: "dev-1", Status: dps.DeviceEnabled}, &d)
	f.hub.DeviceDeleted(ctx, hub, "dev-2")
	if _, err := f.hub.Send(ctx, id, dps.Message{System: map[string]string{iothub.PropMessageSource: iothub.SourceDeviceLifecycle}}); err != nil {
		t.Fatal(err)
	}

	ev := hubEvents(t, f, 0)
	if len(ev) != 11 {
		for _, m := range ev {
			t.Logf("%d %v %s", m.Seq, m.Properties["opType"], m.Body)
		}
		t.Fatalf("%d messages in the log, want 11", len(ev))
	}
	desired := map[string]any{"interval": 30, "$metadata": map[string]any{"$lastUpdated": "2026-12-03T12:00:00Z", "$lastUpdatedVersion": 1,
		"interval": map[string]any{"$lastUpdated": "2026-12-03T12:00:00Z", "$lastUpdatedVersion": 1}}, "$version": 1}
	wantEvent(t, ev[0], "deviceLifecycleEvents", "createDeviceIdentity", "deviceLifecycleNotification", "dev-1", map[string]any{
		"deviceId": "dev-1", "status": "enabled", "authenticationType": "sas", "version": 2, "tags": map[string]any{"site": "a"},
		"properties": map[string]any{"desired": desired, "reported": map[string]any{"$metadata": map[string]any{"$lastUpdated": "2026-12-03T12:00:00Z"}, "$version": 1}}})
	wantEvent(t, ev[1], "deviceConnectionStateEvents", "deviceConnected", "deviceConnectionStateNotification", "dev-1", nil)
	wantEvent(t, ev[2], "deviceConnectionStateEvents", "deviceConnected", "deviceConnectionStateNotification", "dev-1", nil)
	var s1, s2 struct{ SequenceNumber string }
	json.Unmarshal(ev[1].Body, &s1)
	json.Unmarshal(ev[2].Body, &s2)
	if s1.SequenceNumber == "" || s2.SequenceNumber <= s1.SequenceNumber {
		t.Errorf("connection sequence numbers %q then %q: want them growing", s1.SequenceNumber, s2.SequenceNumber)
	}
	wantEvent(t, ev[3], "twinChangeEvents", "updateTwin", "twinChangeNotification", "dev-1", map[string]any{
		"version": 3, "properties": map[string]any{"reported": map[string]any{"temp": 21, "$version": 2}}})
	wantEvent(t, ev[4], "twinChangeEvents", "updateTwin", "twinChangeNotification", "dev-1", map[string]any{
		"version": 4, "properties": map[string]any{"desired": map[string]any{"interval": 60, "$version": 2}}})
	wantEvent(t, ev[5], "twinChangeEvents", "updateTwin", "twinChangeNotification", "dev-1", map[string]any{
		"version": 5, "tags": map[string]any{"floor": 2}, "properties": nil})
	wantEvent(t, ev[6], "twinChangeEvents", "replaceTwin", "twinChangeNotification", "dev-1", map[string]any{
		"version": 6, "tags": map[string]any{"site": "b"}, "properties": map[string]any{"desired": map[string]any{"mode": "eco", "$version": 3}}})
	wantEvent(t, ev[7], "deviceConnectionStateEvents", "deviceDisconnected", "deviceConnectionStateNotification", "dev-1", nil)
	wantEvent(t, ev[8], "deviceLifecycleEvents", "deleteDeviceIdentity", "deviceLifecycleNotification", "dev-1", map[string]any{"deviceId": "dev-1", "version": 2})
	wantEvent(t, ev[9], "deviceLifecycleEvents", "deleteDeviceIdentity", "deviceLifecycleNotification", "dev-2", map[string]any{"deviceId": "dev-2"})
	if m := ev[10]; m.System[iothub.PropMessageSource] != "Telemetry" || m.Properties["opType"] != "" {
		t.Errorf("telemetry passed off as a hub event: %+v", m)
	}
	if woken != 11 {
		t.Errorf("OnAppend called %d times, want 11", woken)
	}
}

// failingAppends is a store whose event log is down.
type failingAppends struct{ iothub.Store }

func (failingAppends) AppendMessages(context.Context, []dps.Message) ([]dps.Message, error) {
	return nil, errors.New("disk full")
}

// TestSourceFailureDoesNotFailTheOperation: an event that cannot be
// appended is counted, and the operation it is about succeeds.
func TestSourceFailureDoesNotFailTheOperation(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.hub = iothub.New(iothub.Options{Store: failingAppends{f.st}, Hubs: []string{hub}, Now: func() time.Time { return f.now }})
	id := f.connect(t)
	detach := f.hub.Attach(id, &conn{})
	if _, err := f.hub.PatchReported(ctx, id, []byte(`{"temp":21}`)); err != nil {
		t.Fatalf("a reported patch failed with its event: %v", err)
	}
	if _, err := f.hub.PatchDesired(ctx, hub, "dev-1", []byte(`{"interval":60}`)); err != nil {
		t.Fatalf("a desired patch failed with its event: %v", err)
	}
	detach()
	if n := f.hub.LostEvents(); n != 4 {
		t.Errorf("LostEvents = %d, want 4 (connected, two twin changes, disconnected)", n)
	}
}
