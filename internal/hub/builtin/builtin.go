// Package builtin is the built-in hub connector: it records each device
// identity (hub, device ID, authentication, initial twin) in dps's own
// store instead of calling a real IoT hub. It is what dps uses when no hub
// connection string is configured, and what tests inspect.
package builtin

import (
	"context"
	"encoding/json"

	"github.com/opendps/dps"
)

// Store is the persistence the connector needs.
type Store interface {
	PutHubDevice(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error)
	HubDevice(ctx context.Context, hub, deviceID string) (dps.HubDevice, error)
	DeleteHubDevice(ctx context.Context, hub, deviceID string) error
}

// Connector records device identities in a Store. It also reads twins
// (registration.TwinReader). When Store is the registration store, dpsd
// sets registration.Options.RecordDevicesWithOperations, and the engine
// writes the same records in each operation's transaction instead of
// calling Provision and Deprovision.
type Connector struct {
	Store Store
}

// Provision records (or replaces) the device identity.
func (c *Connector) Provision(ctx context.Context, d dps.HubDevice) error {
	_, err := c.Store.PutHubDevice(ctx, d)
	return err
}

// Deprovision removes the device identity; absent is not an error.
func (c *Connector) Deprovision(ctx context.Context, hub, deviceID string) error {
	return c.Store.DeleteHubDevice(ctx, hub, deviceID)
}

// Twin returns the recorded twin of a device.
func (c *Connector) Twin(ctx context.Context, hub, deviceID string) (json.RawMessage, error) {
	d, err := c.Store.HubDevice(ctx, hub, deviceID)
	if err != nil {
		return nil, err
	}
	return d.Twin, nil
}
