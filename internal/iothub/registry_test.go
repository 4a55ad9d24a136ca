package iothub_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/store/sqlite"
)

var (
	_ iothub.RegistryStore = (*sqlite.DB)(nil)
	_ iothub.RegistryStore = (*postgres.DB)(nil)
)

func TestCreateDevice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	d, err := f.hub.CreateDevice(ctx, hub, iothub.Device{DeviceID: "new-1", StatusReason: "fresh"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != dps.DeviceEnabled || d.Auth.Type != dps.HubAuthSAS || d.ETag == "" || len(d.GenerationID) != 18 || d.StatusReason != "fresh" {
		t.Errorf("created %+v", d)
	}
	for _, k := range []dps.Key{d.Auth.PrimaryKey, d.Auth.SecondaryKey} {
		if b, err := base64.StdEncoding.DecodeString(string(k)); err != nil || len(b) != 32 {
			t.Errorf("generated key is not 32 bytes of base64: %d %v", len(b), err)
		}
	}
	if d.Auth.PrimaryKey == d.Auth.SecondaryKey {
		t.Error("the generated keys are the same")
	}
	// The new identity authenticates with its generated key and has an
	// empty twin.
	key, _ := base64.StdEncoding.DecodeString(string(d.Auth.PrimaryKey))
	id, err := f.hub.Authenticate(ctx, hub, "new-1", dps.Credential{SAS: token(key, hub+"/devices/new-1", f.now.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if doc, _ := f.hub.Twin(ctx, id); string(doc) != `{"desired":{"$version":1},"reported":{"$version":1}}` {
		t.Errorf("twin = %s", doc)
	}
	got, err := f.hub.GetDevice(ctx, hub, "new-1")
	if err != nil || got.ETag != d.ETag || got.GenerationID != d.GenerationID {
		t.Errorf("GetDevice = %+v, %v", got, err)
	}

	for name, tc := range map[string]struct {
		d    iothub.Device
		kind dps.Kind
		text string
	}{
		"exists":         {iothub.Device{DeviceID: "new-1"}, dps.KindConflict, "already registered"},
		"exists in case": {iothub.Device{DeviceID: "NEW-1"}, dps.KindConflict, "differ only in case"},
		"bad id":         {iothub.Device{DeviceID: "a/b"}, dps.KindInvalid, "may contain only"},
		"long id":        {iothub.Device{DeviceID: strings.Repeat("a", 129)}, dps.KindInvalid, "1-128"},
		"short key":      {iothub.Device{DeviceID: "k", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "c2hvcnQ="}}, dps.KindInvalid, "16 to 64"},
		"bad status":     {iothub.Device{DeviceID: "s", Status: "paused"}, dps.KindInvalid, "not enabled or disabled"},
		"bad thumbprint": {iothub.Device{DeviceID: "x", Auth: dps.HubAuth{Type: dps.HubAuthSelfSigned, PrimaryThumbprint: "abcd"}}, dps.KindInvalid, "40 or 64"},
		"no thumbprint":  {iothub.Device{DeviceID: "x", Auth: dps.HubAuth{Type: dps.HubAuthSelfSigned}}, dps.KindInvalid, "primary thumbprint"},
		"unknown auth":   {iothub.Device{DeviceID: "x", Auth: dps.HubAuth{Type: "token"}}, dps.KindInvalid, "authentication type"},
		"long reason":    {iothub.Device{DeviceID: "x", StatusReason: strings.Repeat("r", 129)}, dps.KindInvalid, "status reason"},
	} {
		_, err := f.hub.CreateDevice(ctx, hub, tc.d)
		if dps.KindOf(err) != tc.kind || !strings.Contains(dps.AsError(err).Message, tc.text) {
			t.Errorf("%s: err = %v, want %v with %q", name, err, tc.kind, tc.text)
		}
	}
	if _, err := f.hub.CreateDevice(ctx, hub, iothub.Device{DeviceID: "new-1"}); dps.AsError(err).Code != dps.CodeDeviceAlreadyExists {
		t.Errorf("code = %d", dps.AsError(err).Code)
	}
	x, err := f.hub.CreateDevice(ctx, hub, iothub.Device{DeviceID: "edge-1", IoTEdge: true, Status: dps.DeviceDisabled,
		Auth: dps.HubAuth{Type: dps.HubAuthSelfSigned, PrimaryThumbprint: strings.Repeat("ab", 32), PrimaryKey: "ignored"}})
	if err != nil {
		t.Fatal(err)
	}
	if x.Auth.PrimaryKey != "" || x.Status != dps.DeviceDisabled || x.DeviceScope() != "ms-azure-iot-edge://edge-1-"+x.GenerationID {
		t.Errorf("edge device %+v scope %s", x, x.DeviceScope())
	}
}

func TestUpdateDevice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.connect(t)
	c := &conn{subscribe: true}
	f.hub.Attach(id, c)
	before, err := f.hub.GetDevice(ctx, hub, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if !before.Connected {
		t.Error("dev-1 is connected on this node")
	}
	if _, err := f.hub.UpdateTwin(ctx, hub, "dev-1", []byte(`{"properties":{"desired":{"mode":"eco"}}}`), "*"); err != nil {
		t.Fatal(err)
	}
	// The twin write does not change the identity's ETag.
	if again, _ := f.hub.GetDevice(ctx, hub, "dev-1"); again.ETag != before.ETag {
		t.Error("a twin write changed the device's etag")
	}
	upd := iothub.Device{DeviceID: "dev-1", StatusReason: "renamed", Auth: before.Auth}
	if _, err := f.hub.UpdateDevice(ctx, hub, upd, `"stale"`); dps.KindOf(err) != dps.KindPrecondition {
		t.Fatalf("stale etag: %v", err)
	}
	after, err := f.hub.UpdateDevice(ctx, hub, upd, `"`+before.ETag+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if after.ETag == before.ETag || after.GenerationID != before.GenerationID || after.StatusReason != "renamed" || after.Auth.PrimaryKey != before.Auth.PrimaryKey {
		t.Errorf("updated %+v from %+v", after, before)
	}
	if c.closed != nil {
		t.Errorf("an update that keeps the device enabled closed it: %v", c.closed)
	}
	st, _ := f.hub.ServiceTwin(ctx, hub, "dev-1")
	if !strings.Contains(string(st.Twin.Properties.Desired), `"mode":"eco"`) {
		t.Errorf("the update lost the twin: %s", st.Twin.Properties.Desired)
	}
	// Disabling closes the connection; the device cannot connect again.
	upd.Status = dps.DeviceDisabled
	if _, err := f.hub.UpdateDevice(ctx, hub, upd, "*"); err != nil {
		t.Fatal(err)
	}
	if dps.KindOf(c.closed) != dps.KindForbidden {
		t.Errorf("disabling: connection closed with %v", c.closed)
	}
	_, err = f.hub.Authenticate(ctx, hub, "dev-1", dps.Credential{SAS: token(f.key, hub+"/devices/dev-1", f.now.Add(time.Hour))})
	if dps.AsError(err).Code != dps.CodeDeviceDisabled {
		t.Errorf("disabled device authenticates: %v", err)
	}
	if _, err := f.hub.UpdateDevice(ctx, hub, iothub.Device{DeviceID: "nobody"}, "*"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("update of a missing device: %v", err)
	}
	if _, err := f.hub.UpdateDevice(ctx, hub, iothub.Device{DeviceID: "DEV-1"}, "*"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("update of another case: %v", err)
	}
}

func TestDeleteDevice(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := &conn{}
	f.hub.Attach(f.connect(t), c)
	d, _ := f.hub.GetDevice(ctx, hub, "dev-1")
	if err := f.hub.DeleteDevice(ctx, hub, "DEV-1", "*"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("delete of another case: %v", err)
	}
	if err := f.hub.DeleteDevice(ctx, hub, "dev-1", "bogus"); dps.KindOf(err) != dps.KindPrecondition {
		t.Errorf("delete with a stale etag: %v", err)
	}
	if c.closed != nil {
		t.Fatal("a refused delete closed the connection")
	}
	if err := f.hub.DeleteDevice(ctx, hub, "dev-1", `"`+d.ETag+`"`); err != nil {
		t.Fatal(err)
	}
	if dps.KindOf(c.closed) != dps.KindNotFound {
		t.Errorf("deleting: connection closed with %v", c.closed)
	}
	if _, err := f.hub.GetDevice(ctx, hub, "dev-1"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("deleted device: %v", err)
	}
	if err := f.hub.DeleteDevice(ctx, hub, "dev-1", ""); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("second delete: %v", err)
	}
}

func TestListDevicesAndStatistics(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, id := range []string{"b", "A", "c"} {
		if _, err := f.hub.CreateDevice(ctx, hub, iothub.Device{DeviceID: id, Status: map[bool]dps.DeviceStatus{true: dps.DeviceDisabled}[id == "c"]}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(ds []iothub.Device) (out []string) {
		for _, d := range ds {
			out = append(out, d.DeviceID)
		}
		return out
	}
	all, err := f.hub.ListDevices(ctx, hub, 0)
	if err != nil || strings.Join(ids(all), ",") != "A,b,c,dev-1" {
		t.Errorf("ListDevices = %v, %v", ids(all), err)
	}
	two, _ := f.hub.ListDevices(ctx, hub, 2)
	if strings.Join(ids(two), ",") != "A,b" {
		t.Errorf("top 2 = %v", ids(two))
	}
	st, err := f.hub.Statistics(ctx, hub)
	if err != nil || st != (iothub.RegistryStatistics{Total: 4, Enabled: 3, Disabled: 1}) {
		t.Errorf("Statistics = %+v, %v", st, err)
	}
	if n := f.hub.ConnectedDevices(hub); n != 0 {
		t.Errorf("connected = %d", n)
	}
	f.hub.Attach(f.connect(t), &conn{})
	if n := f.hub.ConnectedDevices(strings.ToUpper(hub)); n != 1 {
		t.Errorf("connected = %d, want 1", n)
	}
	if n := f.hub.ConnectedDevices("other.example"); n != 0 {
		t.Errorf("connected on another hub = %d", n)
	}
}

func TestBulk(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	items := []iothub.BulkItem{
		{Mode: "create", Device: iothub.Device{DeviceID: "bulk-1"}, Tags: json.RawMessage(`{"site":"x"}`),
			Desired: json.RawMessage(`{"rate":5}`), Reported: json.RawMessage(`{"fw":"1.0"}`)},
		{Mode: "Create", Device: iothub.Device{DeviceID: "dev-1"}},
		{Mode: "deleteIfMatchETag", Device: iothub.Device{DeviceID: "dev-1"}, ETag: "stale"},
		{Mode: "createOrUpdate", Device: iothub.Device{DeviceID: "bulk-2", Status: dps.DeviceDisabled}},
	}
	failed, err := f.hub.Bulk(ctx, hub, items)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 2 || failed[0].DeviceID != "dev-1" || dps.KindOf(failed[0].Err) != dps.KindConflict ||
		failed[1].Mode != iothub.ImportDeleteIfMatchETag || dps.KindOf(failed[1].Err) != dps.KindPrecondition {
		t.Fatalf("failed = %+v", failed)
	}
	st, err := f.hub.ServiceTwin(ctx, hub, "bulk-1")
	if err != nil {
		t.Fatal(err)
	}
	if string(st.Twin.Tags) != `{"site":"x"}` || !strings.Contains(string(st.Twin.Properties.Desired), `"rate":5`) ||
		!strings.Contains(string(st.Twin.Properties.Reported), `"fw":"1.0"`) {
		t.Errorf("bulk-1 twin: %+v", st.Twin)
	}
	if d, err := f.hub.GetDevice(ctx, hub, "bulk-2"); err != nil || d.Status != dps.DeviceDisabled {
		t.Errorf("bulk-2 = %+v, %v", d, err)
	}
	// createOrUpdate of an existing device replaces it; updateTwin
	// replaces tags and desired properties; delete removes.
	d2, _ := f.hub.GetDevice(ctx, hub, "bulk-2")
	failed, err = f.hub.Bulk(ctx, hub, []iothub.BulkItem{
		{Mode: "createOrUpdateIfMatchETag", Device: iothub.Device{DeviceID: "bulk-2"}, ETag: d2.ETag},
		{Mode: "updateTwin", Device: iothub.Device{DeviceID: "bulk-1"}, Tags: json.RawMessage(`{"site":"y"}`)},
		{Mode: "delete", Device: iothub.Device{DeviceID: "dev-1"}},
	})
	if err != nil || len(failed) != 0 {
		t.Fatalf("second bulk: %+v, %v", failed, err)
	}
	if d, _ := f.hub.GetDevice(ctx, hub, "bulk-2"); d.Status != dps.DeviceEnabled || d.GenerationID != d2.GenerationID {
		t.Errorf("bulk-2 after createOrUpdate = %+v", d)
	}
	if st, _ := f.hub.ServiceTwin(ctx, hub, "bulk-1"); string(st.Twin.Tags) != `{"site":"y"}` || strings.Contains(string(st.Twin.Properties.Desired), "rate") {
		t.Errorf("bulk-1 after updateTwin: %+v", st.Twin)
	}
	if _, err := f.hub.GetDevice(ctx, hub, "dev-1"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("dev-1 after delete: %v", err)
	}
	for name, items := range map[string][]iothub.BulkItem{
		"none":     nil,
		"too many": make([]iothub.BulkItem, 101),
		"mode":     {{Mode: "upsert", Device: iothub.Device{DeviceID: "z"}}},
	} {
		if _, err := f.hub.Bulk(ctx, hub, items); dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := f.hub.GetDevice(ctx, hub, "z"); dps.KindOf(err) != dps.KindNotFound {
		t.Error("a refused bulk call created a device")
	}
}

// TestRegistryLifecycleEvents: creating and deleting an identity through
// the registry appends its deviceLifecycleEvents to the hub's event log.
func TestRegistryLifecycleEvents(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.hub.CreateDevice(ctx, hub, iothub.Device{DeviceID: "life-1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.hub.DeleteDevice(ctx, hub, "life-1", "*"); err != nil {
		t.Fatal(err)
	}
	msgs, err := f.st.Messages(ctx, hub, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, m := range msgs {
		if m.DeviceID == "life-1" && m.System[iothub.PropMessageSource] == "deviceLifecycleEvents" {
			ops = append(ops, m.Properties["opType"])
		}
	}
	if strings.Join(ops, ",") != iothub.OpCreateDevice+","+iothub.OpDeleteDevice {
		t.Errorf("lifecycle events = %q, want create then delete", ops)
	}
}
