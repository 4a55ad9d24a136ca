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
// webhook's initial twin, dps.TwinApply) is notified of them.
func (s *Service) Provisioned(ctx context.Context, put dps.HubDevice, removed *dps.HubDevice) {
	if removed != nil {
		s.Disconnect(removed.Hub, removed.DeviceID, dps.Errorf(dps.KindNotFound, "the device %s was provisioned to another hub", removed.DeviceID))
	}
	if _, ok := s.Hub(put.Hub); !ok {
		return
	}
	a := s.conns.lookup(put.Hub, put.DeviceID)
	switch {
	case a == nil:
	case !put.Enabled():
		a.c.Close(dps.Errorf(dps.KindForbidden, "the device %s is disabled", put.DeviceID))
	case put.GenerationID != a.id.GenerationID:
		a.c.Close(dps.Errorf(dps.KindNotFound, "the device %s was created again", put.DeviceID))
	case put.TwinWrite == dps.TwinApply && len(put.LiveTwin) > 0:
		var t twin.Twin
		if err := json.Unmarshal(put.LiveTwin, &t); err != nil {
			s.o.Logger.WarnContext(ctx, "provisioned device has an unreadable twin", "hub", put.Hub, "device_id", put.DeviceID, "error", err)
			return
		}
		a.c.Desired(t.DesiredVersion(), t.DesiredDoc())
	}
}
