package iothub

import (
	"context"
	"encoding/json"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/twin"
)

// Provisioned tells the hub about the device records a provisioning wrote
// (registration.HubEvents), after they were committed: the connection of
// an identity that was removed (the device moved to another hub) is
// closed, as is that of an identity that is disabled; a connected device
// whose desired properties a provisioning replaced (a custom allocation
// webhook's initial twin, dps.TwinApply) is notified of them. A new
// identity gets its createDeviceIdentity event, a removed one its
// deleteDeviceIdentity event (sources.go).
func (s *Service) Provisioned(ctx context.Context, put dps.HubDevice, removed *dps.HubDevice) {
	if removed != nil {
		if _, ok := s.Hub(removed.Hub); ok {
			s.closeEverywhere(ctx, removed.Hub, removed.DeviceID, "", dps.Errorf(dps.KindNotFound, "the device %s was provisioned to another hub", removed.DeviceID))
			s.DeviceRemoved(ctx, *removed)
		}
	}
	if _, ok := s.Hub(put.Hub); !ok {
		return
	}
	if put.Replaces == dps.ReplacesNothing && put.GenerationID != "" {
		s.DeviceCreated(ctx, put)
	}
	switch {
	case !put.Enabled():
		s.closeEverywhere(ctx, put.Hub, put.DeviceID, "", dps.Errorf(dps.KindForbidden, "the device %s is disabled", put.DeviceID))
		return
	case put.Replaces == dps.ReplacesNothing && put.GenerationID != "":
		// A new identity: a connection to an identity of the same ID
		// deleted since is closed.
		s.closeEverywhere(ctx, put.Hub, put.DeviceID, put.GenerationID, dps.Errorf(dps.KindNotFound, "the device %s was created again", put.DeviceID))
	}
	if put.TwinWrite == dps.TwinApply && len(put.LiveTwin) > 0 {
		var t twin.Twin
		if err := json.Unmarshal(put.LiveTwin, &t); err != nil {
			s.o.Logger.WarnContext(ctx, "provisioned device has an unreadable twin", "hub", put.Hub, "device_id", put.DeviceID, "error", err)
			return
		}
		s.notifyDesired(ctx, put.Hub, put.DeviceID, t.DesiredVersion(), t.DesiredDoc())
	}
}
