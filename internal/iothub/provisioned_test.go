package iothub_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/twin"
)

// TestProvisionedActsOnConnections: what a provisioning wrote reaches the
// device's live connection: a new initial twin from the webhook notifies
// it, a disabled or re-created identity closes it, a device that moved to
// another hub loses its connection to this one; another device's
// connection is left alone.
func TestProvisionedActsOnConnections(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	d, err := f.st.HubDevice(ctx, hub, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	id := f.connect(t)
	c := &conn{subscribe: true}
	f.hub.Attach(id, c)
	other := &conn{subscribe: true}
	f.hub.Attach(dpsIdentity(id, "dev-2"), other)

	// Registering again without a new twin: nothing to say.
	d.TwinWrite = dps.TwinKeep
	f.hub.Provisioned(ctx, d, nil)
	if len(c.desired) != 0 || c.closed != nil {
		t.Fatalf("TwinKeep: desired %q closed %v", c.desired, c.closed)
	}
	// The webhook's initial twin replaced the desired properties.
	tw, err := twin.New(json.RawMessage(`{"properties":{"desired":{"interval":30}}}`), f.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Replace([]byte(`{"properties":{"desired":{"mode":"eco"}}}`), f.now); err != nil {
		t.Fatal(err)
	}
	d.LiveTwin, _ = tw.MarshalJSON()
	d.TwinWrite = dps.TwinApply
	f.hub.Provisioned(ctx, d, nil)
	if len(c.desired) != 1 || c.desired[0] != `2 {"mode":"eco","$version":2}` || c.closed != nil {
		t.Fatalf("TwinApply: desired %q closed %v", c.desired, c.closed)
	}
	// Re-created (another generation): closed.
	d.TwinWrite, d.GenerationID, d.Replaces = dps.TwinKeep, "639000000000000000", dps.ReplacesNothing
	f.hub.Provisioned(ctx, d, nil)
	if dps.KindOf(c.closed) != dps.KindNotFound {
		t.Fatalf("another generation: closed %v", c.closed)
	}
	// Disabled: closed.
	c.closed = nil
	d.GenerationID, d.Status, d.Replaces = id.GenerationID, dps.DeviceDisabled, ""
	f.hub.Provisioned(ctx, d, nil)
	if dps.KindOf(c.closed) != dps.KindForbidden {
		t.Fatalf("disabled: closed %v", c.closed)
	}
	// Moved to another hub: its connection here closes, not another's.
	c.closed = nil
	moved := dps.HubDevice{Hub: "elsewhere.example.test", DeviceID: "dev-1", Status: dps.DeviceEnabled}
	f.hub.Provisioned(ctx, moved, &dps.HubDevice{Hub: hub, DeviceID: "dev-1"})
	if dps.KindOf(c.closed) != dps.KindNotFound || other.closed != nil || len(other.desired) != 0 {
		t.Fatalf("moved: closed %v, other device closed %v desired %q", c.closed, other.closed, other.desired)
	}
}

func dpsIdentity(id iothub.Identity, deviceID string) iothub.Identity {
	id.DeviceID = deviceID
	return id
}
