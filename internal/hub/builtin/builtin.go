// Package builtin is the hub connector of dps's built-in IoT hubs: it
// writes each provisioned device identity (hub, device ID, authentication,
// initial twin) into dps's own store, where the built-in hub
// (internal/iothub) reads it to authenticate the device and serve its twin.
//
// A provisioning writes over the device's current record rather than
// replacing it: a device registering again keeps its status (a disabled
// device stays disabled), its generation and its live twin as the
// provisioning's dps.TwinWrite says; a new device gets a new generation ID
// and a twin made from its initial twin.
package builtin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/twin"
)

// Store is the persistence the connector needs.
type Store interface {
	PutHubDevice(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error)
	HubDevice(ctx context.Context, hub, deviceID string) (dps.HubDevice, error)
	DeleteHubDevice(ctx context.Context, hub, deviceID string) error
	// RemoveHubDevice deletes d's record only if its ETag is d.Replaces
	// ("": whatever it is): KindConflict when it changed; absent is not an
	// error.
	RemoveHubDevice(ctx context.Context, d dps.HubDevice) error
}

// Connector records device identities in a Store. It also reads twins
// (registration.TwinReader) and works out the records a registration
// writes and removes with its operation (registration.DeviceRecorder,
// registration.DeviceRemover), and removes a record only if unchanged
// (registration.DeviceDeleter): when Store is
// the registration store, dpsd sets
// registration.Options.RecordDevicesWithOperations, and the engine writes
// the records Record returns in each operation's transaction instead of
// calling Provision and Deprovision.
type Connector struct {
	Store Store
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// writeAttempts bounds Provision's compare-and-set retries: each failed
// attempt means another write of the device's record won meanwhile.
const writeAttempts = 16

// Provision creates the device identity or updates it (see Record).
func (c *Connector) Provision(ctx context.Context, d dps.HubDevice) error {
	for range writeAttempts {
		rec, err := c.Record(ctx, d)
		if err != nil {
			return err
		}
		if _, err = c.Store.PutHubDevice(ctx, rec); dps.KindOf(err) != dps.KindConflict && dps.KindOf(err) != dps.KindNotFound {
			return err
		}
	}
	return dps.Errorf(dps.KindConflict, "the hub record of %s is being written too often", d.DeviceID)
}

// Record returns the record a provisioning writes for d: d over the
// device's current record, with Replaces set to that record's ETag (a
// store writes it only over that record), or a new identity when the
// device has none on d.Hub.
//
// A new identity is enabled, gets a new generation ID and a twin made from
// d.Twin, and is written only if the device still has no record
// (dps.ReplacesNothing). An existing one keeps its status, status reason, generation and
// — as d.TwinWrite says — its live twin (TwinKeep), its reported
// properties under d.Twin's tags and desired properties (TwinApply), or a
// new twin from d.Twin (TwinReplace); its authentication and capabilities
// become d's. An initial twin that breaks IoT Hub's twin rules is a
// *dps.HubFailure: the registration fails with its message.
func (c *Connector) Record(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	now := c.now()
	cur, err := c.Store.HubDevice(ctx, d.Hub, d.DeviceID)
	switch {
	case dps.KindOf(err) == dps.KindNotFound:
		d.Status, d.StatusReason, d.GenerationID, d.Replaces = dps.DeviceEnabled, "", dps.NewGenerationID(now), dps.ReplacesNothing
		t, err := twin.New(d.Twin, now)
		if err != nil {
			return d, invalidTwin(err)
		}
		return withTwin(d, t, now)
	case err != nil:
		return d, err
	}
	d.Status, d.StatusReason, d.GenerationID, d.Replaces = cur.Status, cur.StatusReason, cur.GenerationID, cur.ETag
	if d.Status == "" {
		d.Status = dps.DeviceEnabled
	}
	if d.TwinWrite == dps.TwinApply && noTwin(d.Twin) {
		d.TwinWrite = dps.TwinKeep // nothing to apply
	}
	var t twin.Twin
	switch d.TwinWrite {
	case dps.TwinReplace:
		t, err = twin.New(d.Twin, now)
	case dps.TwinKeep, dps.TwinApply:
		t, err = twin.Of(cur)
		if err == nil && d.TwinWrite == dps.TwinApply {
			_, err = t.Replace(d.Twin, now)
		}
		if d.TwinWrite == dps.TwinKeep {
			d.Twin = cur.Twin
		}
	default:
		return d, fmt.Errorf("builtin: unknown twin write %d", d.TwinWrite)
	}
	if err != nil {
		return d, invalidTwin(err)
	}
	return withTwin(d, t, now)
}

func withTwin(d dps.HubDevice, t twin.Twin, now time.Time) (dps.HubDevice, error) {
	b, err := t.MarshalJSON()
	if err != nil {
		return d, err
	}
	d.LiveTwin, d.Updated = b, now.UTC()
	return d, nil
}

func invalidTwin(err error) error {
	if dps.KindOf(err) != dps.KindInvalid {
		return err
	}
	return &dps.HubFailure{Code: dps.CodeHubRejected, Message: "The initial twin is not valid on the IoT hub: " + dps.AsError(err).Message}
}

// noTwin reports whether a provisioning asks for no twin at all (no
// initial twin, or JSON null).
func noTwin(t json.RawMessage) bool {
	s := strings.TrimSpace(string(t))
	return s == "" || s == "null"
}

// Removal returns the record of the device identity a registration
// removes with its operation (registration.DeviceRemover): hub, device ID
// and Replaces set to the record's ETag, so that a store removes it only
// if it did not change since; nil when the device has no record on hub.
func (c *Connector) Removal(ctx context.Context, hub, deviceID string) (*dps.HubDevice, error) {
	cur, err := c.Store.HubDevice(ctx, hub, deviceID)
	switch {
	case dps.KindOf(err) == dps.KindNotFound:
		return nil, nil
	case err != nil:
		return nil, err
	}
	return &dps.HubDevice{Hub: cur.Hub, DeviceID: cur.DeviceID, Replaces: cur.ETag}, nil
}

// Remove deletes the device identity d names (hub and device ID) only if
// its record did not change since Removal returned d
// (registration.DeviceDeleter: d.Replaces is the record's ETag then; ""
// removes whatever it is): KindConflict when it changed (the device
// registered there again, or its twin was written); absent is not an
// error.
func (c *Connector) Remove(ctx context.Context, d dps.HubDevice) error {
	return c.Store.RemoveHubDevice(ctx, d)
}

// Deprovision removes the device identity; absent is not an error.
func (c *Connector) Deprovision(ctx context.Context, hub, deviceID string) error {
	return c.Store.DeleteHubDevice(ctx, hub, deviceID)
}

// Twin returns the device's twin in DPS's initial-twin form (its tags and
// desired properties): what a registration that keeps or migrates the
// device's data carries.
func (c *Connector) Twin(ctx context.Context, hub, deviceID string) (json.RawMessage, error) {
	d, err := c.Store.HubDevice(ctx, hub, deviceID)
	if err != nil {
		return nil, err
	}
	t, err := twin.Of(d)
	if err != nil {
		return nil, err
	}
	return t.Initial(), nil
}

func (c *Connector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
