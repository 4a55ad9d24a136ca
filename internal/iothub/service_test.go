package iothub_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/iothub"
)

const svcHub = "svc-hub.example.test"

var svcT0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// memHubStore is an in-memory iothub.Store: compare-and-set on ETags as
// the real stores do, IDs folded as they fold them.
type memHubStore struct {
	iothub.CloudStore // C2D is not needed here (nil: a call panics)
	mu                sync.Mutex
	devices           map[string]dps.HubDevice
	seq               int
	msgs              []dps.Message
	// beforePut, when set, runs once before the next write (a concurrent
	// writer that wins the race).
	beforePut func()
}

func newMemHubStore() *memHubStore { return &memHubStore{devices: map[string]dps.HubDevice{}} }

func memKey(hub, id string) string { return strings.ToLower(hub) + "\x00" + strings.ToLower(id) }

func (m *memHubStore) HubDevice(_ context.Context, hub, id string) (dps.HubDevice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.devices[memKey(hub, id)]
	if !ok {
		return d, dps.Errorf(dps.KindNotFound, "no device %s", id)
	}
	return d, nil
}

// ListHubDevices lists a hub's devices in folded device-ID order after
// after, as the real stores do.
func (m *memHubStore) ListHubDevices(_ context.Context, hub, after string, limit int) ([]dps.HubDevice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dps.HubDevice
	for _, d := range m.devices {
		if strings.EqualFold(d.Hub, hub) && dps.FoldID(d.DeviceID) > dps.FoldID(after) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b dps.HubDevice) int { return strings.Compare(dps.FoldID(a.DeviceID), dps.FoldID(b.DeviceID)) })
	return out[:min(limit, len(out))], nil
}

func (m *memHubStore) PutHubDevice(_ context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	m.mu.Lock()
	hook := m.beforePut
	m.beforePut = nil
	m.mu.Unlock()
	if hook != nil {
		hook()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := memKey(d.Hub, d.DeviceID)
	if d.Replaces != "" {
		cur, ok := m.devices[k]
		if !ok {
			return dps.HubDevice{}, dps.Errorf(dps.KindNotFound, "no device %s", d.DeviceID)
		}
		if cur.ETag != d.Replaces {
			return dps.HubDevice{}, dps.Errorf(dps.KindConflict, "device %s changed", d.DeviceID)
		}
	}
	m.seq++
	d.Replaces, d.ETag = "", `"e`+strconv.Itoa(m.seq)+`"`
	m.devices[k] = d
	return d, nil
}

func (m *memHubStore) AppendMessages(_ context.Context, msgs []dps.Message) ([]dps.Message, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]dps.Message, len(msgs))
	for i, msg := range msgs {
		msg.Seq = int64(len(m.msgs) + 1)
		m.msgs = append(m.msgs, msg)
		out[i] = msg
	}
	return out, nil
}

// svcConn is a connected device that records what the hub sends it.
type svcConn struct {
	mu      sync.Mutex
	desired []string // "version body"
}

func (c *svcConn) Desired(v int64, body []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.desired = append(c.desired, strconv.FormatInt(v, 10)+" "+string(body))
	return true
}
func (c *svcConn) Method(string, string, []byte) bool { return false }
func (c *svcConn) Close(error)                        {}
func (c *svcConn) C2D()                               {}

func (c *svcConn) notes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.desired...)
}

func newSvc(t *testing.T, initial string) (*iothub.Service, *memHubStore) {
	t.Helper()
	st := newMemHubStore()
	if _, err := st.PutHubDevice(context.Background(), dps.HubDevice{Hub: svcHub, DeviceID: "Dev-1", GenerationID: "g1",
		Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5"}, Twin: json.RawMessage(initial), Updated: svcT0}); err != nil {
		t.Fatal(err)
	}
	return iothub.New(iothub.Options{Store: st, Hubs: []string{svcHub}, Now: func() time.Time { return svcT0 }}), st
}

func TestServiceTwinView(t *testing.T) {
	ctx := context.Background()
	s, _ := newSvc(t, `{"tags":{"site":"a"},"properties":{"desired":{"x":1}}}`)
	v, err := s.ServiceTwin(ctx, strings.ToUpper(svcHub), "Dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if v.DeviceID != "Dev-1" || v.Status != dps.DeviceEnabled || v.AuthType != dps.HubAuthSAS || v.ETag == "" || v.DeviceETag == "" ||
		v.ETag == v.DeviceETag || v.Connected || v.Twin.Version != 2 || string(v.Twin.Tags) != `{"site":"a"}` ||
		!strings.HasPrefix(string(v.Twin.Properties.Desired), `{"x":1,"$metadata":{`) || !strings.HasSuffix(string(v.Twin.Properties.Desired), `,"$version":1}`) {
		t.Fatalf("view %+v", v)
	}
	detach := s.Attach(iothub.Identity{Hub: svcHub, DeviceID: "Dev-1", GenerationID: "g1", ModelID: "dtmi:x:y;1"}, &svcConn{})
	defer detach()
	if v, _ = s.ServiceTwin(ctx, svcHub, "Dev-1"); !v.Connected || !v.ConnectedSince.Equal(svcT0) || v.ModelID != "dtmi:x:y;1" {
		t.Errorf("connected view %+v", v)
	}
	for _, id := range []string{"dev-1", "nobody"} {
		if _, err := s.ServiceTwin(ctx, svcHub, id); dps.KindOf(err) != dps.KindNotFound {
			t.Errorf("ServiceTwin(%q) = %v, want not found (ids are case-sensitive)", id, err)
		}
		if _, err := s.UpdateTwin(ctx, svcHub, id, []byte(`{"tags":{"a":1}}`), "*"); dps.KindOf(err) != dps.KindNotFound {
			t.Errorf("UpdateTwin(%q) = %v, want not found", id, err)
		}
	}
}

func TestUpdateTwinIfMatch(t *testing.T) {
	ctx := context.Background()
	s, _ := newSvc(t, `{}`)
	v0, err := s.ServiceTwin(ctx, svcHub, "Dev-1")
	if err != nil {
		t.Fatal(err)
	}
	v1, err := s.UpdateTwin(ctx, svcHub, "Dev-1", []byte(`{"tags":{"a":1}}`), `"`+v0.ETag+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if v1.ETag == v0.ETag || v1.DeviceETag != v0.DeviceETag || v1.Twin.Version != 3 || string(v1.Twin.Tags) != `{"a":1}` {
		t.Fatalf("after a tags patch: %+v (before %+v)", v1, v0)
	}
	if _, err := s.UpdateTwin(ctx, svcHub, "Dev-1", []byte(`{"tags":{"a":2}}`), v0.ETag); dps.KindOf(err) != dps.KindPrecondition {
		t.Fatalf("stale If-Match: %v, want precondition", err)
	}
	if v, _ := s.ServiceTwin(ctx, svcHub, "Dev-1"); v.ETag != v1.ETag || string(v.Twin.Tags) != `{"a":1}` {
		t.Fatalf("a refused write changed the twin: %+v", v)
	}

	// The device's reported patch is a twin operation: the etag moves.
	if _, err := s.PatchReported(ctx, iothub.Identity{Hub: svcHub, DeviceID: "Dev-1", GenerationID: "g1"}, []byte(`{"fw":"1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReplaceTwin(ctx, svcHub, "Dev-1", []byte(`{}`), v1.ETag); dps.KindOf(err) != dps.KindPrecondition {
		t.Fatalf("If-Match from before a reported patch: %v, want precondition", err)
	}
	for _, im := range []string{"", "*", `"*"`, " W/\"*\" "} {
		if _, err := s.UpdateTwin(ctx, svcHub, "Dev-1", []byte(`{"tags":{"b":1}}`), im); err != nil {
			t.Errorf("If-Match %q: %v", im, err)
		}
	}
}

// TestTwinWriteRechecksETag: a write that lands between the service's
// read and its compare-and-set makes the If-Match stale; the retry must
// not apply the patch over it.
func TestTwinWriteRechecksETag(t *testing.T) {
	ctx := context.Background()
	s, st := newSvc(t, `{}`)
	v0, _ := s.ServiceTwin(ctx, svcHub, "Dev-1")
	st.beforePut = func() {
		if _, err := s.PatchReported(ctx, iothub.Identity{Hub: svcHub, DeviceID: "Dev-1", GenerationID: "g1"}, []byte(`{"r":1}`)); err != nil {
			t.Error(err)
		}
	}
	if _, err := s.UpdateTwin(ctx, svcHub, "Dev-1", []byte(`{"tags":{"a":1}}`), v0.ETag); dps.KindOf(err) != dps.KindPrecondition {
		t.Fatalf("UpdateTwin raced by a reported patch: %v, want precondition", err)
	}
	if v, _ := s.ServiceTwin(ctx, svcHub, "Dev-1"); v.Twin.Tags != nil {
		t.Errorf("tags written despite the failed precondition: %s", v.Twin.Tags)
	}
}

// TestTwinETagFollowsTheGeneration: a device deleted and created again has
// a twin at the same version, but an etag read before does not match it.
func TestTwinETagFollowsTheGeneration(t *testing.T) {
	ctx := context.Background()
	s, st := newSvc(t, `{}`)
	old, _ := s.ServiceTwin(ctx, svcHub, "Dev-1")
	if _, err := st.PutHubDevice(ctx, dps.HubDevice{Hub: svcHub, DeviceID: "Dev-1", GenerationID: "g2", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5"}}); err != nil {
		t.Fatal(err)
	}
	v, _ := s.ServiceTwin(ctx, svcHub, "Dev-1")
	if v.Twin.Version != old.Twin.Version || v.ETag == old.ETag || v.DeviceETag == old.DeviceETag {
		t.Fatalf("new generation: %+v, old %+v", v, old)
	}
	if _, err := s.UpdateTwin(ctx, svcHub, "Dev-1", []byte(`{"tags":{"a":1}}`), old.ETag); dps.KindOf(err) != dps.KindPrecondition {
		t.Fatalf("the old generation's etag: %v, want precondition", err)
	}
}

func TestTwinWritesNotifyTheDevice(t *testing.T) {
	ctx := context.Background()
	s, _ := newSvc(t, `{"properties":{"desired":{"x":1}}}`)
	c := &svcConn{}
	defer s.Attach(iothub.Identity{Hub: svcHub, DeviceID: "Dev-1", GenerationID: "g1"}, c)()
	if _, err := s.UpdateTwin(ctx, svcHub, "Dev-1", []byte(`{"tags":{"a":1}}`), "*"); err != nil {
		t.Fatal(err)
	}
	if n := c.notes(); len(n) != 0 {
		t.Fatalf("a tags-only patch notified the device: %q", n)
	}
	if _, err := s.UpdateTwin(ctx, svcHub, "Dev-1", []byte(`{"properties":{"desired":{"x":null,"y":2}}}`), "*"); err != nil {
		t.Fatal(err)
	}
	v, err := s.ReplaceTwin(ctx, svcHub, "Dev-1", []byte(`{"properties":{"desired":{"z":3}}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`2 {"x":null,"y":2,"$version":2}`, `3 {"z":3,"$version":3}`}
	if n := c.notes(); strings.Join(n, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notifications %q, want %q", n, want)
	}
	if v.Twin.Tags != nil || !strings.HasPrefix(string(v.Twin.Properties.Desired), `{"z":3,`) {
		t.Errorf("after PUT: tags %s, desired %s", v.Twin.Tags, v.Twin.Properties.Desired)
	}
}

func TestNewMessageSystemProperties(t *testing.T) {
	m := iothub.NewMessage(hubproto.SystemProperties{MessageID: "mid", CorrelationID: "cid", UserID: "uid", To: "/to", ContentType: "ct",
		ContentEncoding: "ce", Expiry: "2026-12-03T12:00:00Z", InterfaceID: "urn:i", Subject: "comp"}, map[string]string{"k": "v"}, []byte("b"))
	if m.MessageID != "mid" || m.CorrelationID != "cid" || m.UserID != "uid" || m.ContentType != "ct" || m.ContentEncoding != "ce" ||
		m.Properties["k"] != "v" || string(m.Body) != "b" {
		t.Fatalf("message %+v", m)
	}
	want := map[string]string{iothub.PropTo: "/to", iothub.PropExpiry: "2026-12-03T12:00:00Z", iothub.PropInterfaceID: "urn:i", iothub.PropSubject: "comp"}
	if len(m.System) != len(want) {
		t.Fatalf("system %v, want %v", m.System, want)
	}
	for k, v := range want {
		if m.System[k] != v {
			t.Errorf("system %s = %q, want %q", k, m.System[k], v)
		}
	}
	if m := iothub.NewMessage(hubproto.SystemProperties{}, nil, nil); m.System != nil {
		t.Errorf("no system properties: System = %v, want nil", m.System)
	}
}
