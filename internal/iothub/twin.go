package iothub

import (
	"context"
	"encoding/json"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/twin"
)

// casAttempts bounds the compare-and-set retries of one twin write; each
// failed attempt means another write of the same device won meanwhile.
const casAttempts = 16

// device reads the identity an authenticated connection is about. An
// identity deleted since, or deleted and created again (another
// generation), is KindNotFound.
func (s *Service) device(ctx context.Context, id Identity) (dps.HubDevice, error) {
	d, err := s.o.Store.HubDevice(ctx, id.Hub, id.DeviceID)
	if err != nil {
		return d, err
	}
	if d.DeviceID != id.DeviceID || d.GenerationID != id.GenerationID {
		return dps.HubDevice{}, dps.Errorf(dps.KindNotFound, "the device %s no longer exists", id.DeviceID)
	}
	return d, nil
}

// Twin returns the device's twin as a device reads it (the body of the
// answer to a twin GET): {"desired":{…,"$version":n},"reported":{…,"$version":m}}.
func (s *Service) Twin(ctx context.Context, id Identity) ([]byte, error) {
	d, err := s.device(ctx, id)
	if err != nil {
		return nil, err
	}
	t, err := twin.Of(d)
	if err != nil {
		return nil, err
	}
	return t.DeviceDoc(), nil
}

// PatchReported merges a device's reported-properties patch into its twin
// and returns the new reported $version. A patch that is not JSON or breaks
// IoT Hub's twin rules is KindInvalid and changes nothing.
func (s *Service) PatchReported(ctx context.Context, id Identity, patch []byte) (int64, error) {
	var version, twinVersion int64
	err := s.update(ctx, id.Hub, id.DeviceID, id.GenerationID, func(t *twin.Twin) error {
		v, err := t.PatchReported(patch, s.o.Now())
		version, twinVersion = v, t.Version()
		return err
	})
	if err == nil {
		s.TwinChanged(ctx, id.Hub, id.DeviceID, OpUpdateTwin, TwinChange(twinVersion, nil, nil, 0, patch, version))
	}
	return version, err
}

// PatchDesired merges a service's desired-properties patch into a device's
// twin and sends the notification to the device if it is connected and
// subscribed. It returns the twin as the service API shows it.
func (s *Service) PatchDesired(ctx context.Context, hub, deviceID string, patch []byte) (twin.Service, error) {
	var note []byte
	var version int64
	var view twin.Service
	err := s.update(ctx, hub, deviceID, "", func(t *twin.Twin) error {
		n, err := t.PatchDesired(patch, s.o.Now())
		note, version, view = n, t.DesiredVersion(), t.Service()
		return err
	})
	if err != nil {
		return twin.Service{}, err
	}
	s.TwinChanged(ctx, hub, deviceID, OpUpdateTwin, TwinChange(view.Version, nil, note, version, nil, 0))
	s.notifyDesired(ctx, hub, deviceID, version, note)
	return view, nil
}

// update applies fn to a device's twin and writes it back, compare-and-set
// on the record's ETag, again from a fresh read when another write won.
// generation "" accepts any generation of the identity.
func (s *Service) update(ctx context.Context, hub, deviceID, generation string, fn func(*twin.Twin) error) error {
	for range casAttempts {
		d, err := s.o.Store.HubDevice(ctx, hub, deviceID)
		if err != nil {
			return err
		}
		if d.DeviceID != deviceID || generation != "" && d.GenerationID != generation {
			return dps.Errorf(dps.KindNotFound, "the device %s no longer exists", deviceID)
		}
		t, err := twin.Of(d)
		if err != nil {
			return err
		}
		if err := fn(&t); err != nil {
			return err
		}
		b, err := json.Marshal(t)
		if err != nil {
			return dps.AsError(err)
		}
		d.LiveTwin, d.Replaces, d.Updated = b, d.ETag, s.o.Now().UTC()
		if _, err := s.o.Store.PutHubDevice(ctx, d); err != nil {
			if dps.KindOf(err) == dps.KindConflict && ctx.Err() == nil {
				continue
			}
			return err
		}
		return nil
	}
	return dps.Errorf(dps.KindThrottled, "the twin of %s is being written too often; retry", deviceID)
}
