package iothub

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/twin"
)

// ServiceTwin is a device's twin as the hub's service API shows it: the
// twin with the identity's read-only members around it.
type ServiceTwin struct {
	DeviceID string
	// ETag is the twin's ETag (unquoted, opaque): it changes with every
	// accepted twin operation, the device's reported patches included, and
	// with the identity's generation.
	ETag string
	// DeviceETag is the identity's ETag (unquoted, opaque): it changes
	// when the identity's generation, status or authentication does, not
	// with twin writes.
	DeviceETag   string
	Status       dps.DeviceStatus // enabled or disabled, never ""
	StatusReason string
	AuthType     dps.HubAuthType
	// PrimaryThumbprint and SecondaryThumbprint are a selfSigned
	// identity's certificate thumbprints; "" otherwise.
	PrimaryThumbprint   string
	SecondaryThumbprint string
	IoTEdge             bool
	// Connected reports whether the device has a connection on this node,
	// since ConnectedSince; ModelID is what that connection announced.
	Connected      bool
	ConnectedSince time.Time
	ModelID        string
	Twin           twin.Service
}

// MaxMessageSize is the largest device-to-cloud message the hub accepts
// (Options.MaxMessageSize), for transports that bound what they read.
func (s *Service) MaxMessageSize() int { return s.o.MaxMessageSize }

// ServiceTwin returns a device's twin as the service API shows it.
//
// Errors: KindNotFound for a device that is not on the hub.
func (s *Service) ServiceTwin(ctx context.Context, hub, deviceID string) (ServiceTwin, error) {
	d, err := s.serviceDevice(ctx, hub, deviceID)
	if err != nil {
		return ServiceTwin{}, err
	}
	t, err := twin.Of(d)
	if err != nil {
		return ServiceTwin{}, err
	}
	return s.serviceTwin(hub, d, t.Service(), twinETag(d.GenerationID, t.Version())), nil
}

// UpdateTwin applies a service PATCH of a device's twin,
// {"tags":{…},"properties":{"desired":{…}}}: each section present is
// merged (null deletes), and a desired change is sent to the device if it
// is connected and subscribed, as PatchDesired does. ifMatch is the
// request's If-Match: "" or * (quoted or not) for any twin, else the
// twin's ETag (quoted or not).
//
// Errors: KindNotFound for a device that is not on the hub;
// KindPrecondition when ifMatch names another ETag (nothing changes);
// KindInvalid for a body that is not JSON or breaks the twin rules.
func (s *Service) UpdateTwin(ctx context.Context, hub, deviceID string, body []byte, ifMatch string) (ServiceTwin, error) {
	return s.writeTwin(ctx, hub, deviceID, ifMatch, OpUpdateTwin, body, func(t *twin.Twin, now time.Time) ([]byte, error) {
		return t.Update(body, now)
	})
}

// ReplaceTwin applies a service PUT of a device's twin: its tags and
// desired properties are replaced by the body's (an absent member empties
// its section) and the new desired properties are sent to the device if
// it is connected and subscribed. ifMatch and the errors are UpdateTwin's.
func (s *Service) ReplaceTwin(ctx context.Context, hub, deviceID string, body []byte, ifMatch string) (ServiceTwin, error) {
	return s.writeTwin(ctx, hub, deviceID, ifMatch, OpReplaceTwin, body, func(t *twin.Twin, now time.Time) ([]byte, error) {
		return t.Replace(body, now)
	})
}

// writeTwin applies op to the twin of the identity's current generation,
// if its ETag matches ifMatch, appends the twin change event (opType
// with the request's body) and notifies the device of a desired change.
// The ETag is checked again on every compare-and-set attempt, so a write
// that lands between the read and the write fails the precondition.
func (s *Service) writeTwin(ctx context.Context, hub, deviceID, ifMatch, opType string, body []byte, op func(*twin.Twin, time.Time) ([]byte, error)) (ServiceTwin, error) {
	d, err := s.serviceDevice(ctx, hub, deviceID)
	if err != nil {
		return ServiceTwin{}, err
	}
	want, wildcard := parseIfMatch(ifMatch)
	var note []byte
	var version int64
	var view twin.Service
	var etag string
	err = s.update(ctx, hub, deviceID, d.GenerationID, func(t *twin.Twin) error {
		if !wildcard && twinETag(d.GenerationID, t.Version()) != want {
			return &dps.Error{Kind: dps.KindPrecondition, Code: dps.CodePrecondition,
				Message: "The twin's etag does not match If-Match: the twin changed since it was read."}
		}
		n, err := op(t, s.o.Now())
		note, version, view, etag = n, t.DesiredVersion(), t.Service(), twinETag(d.GenerationID, t.Version())
		return err
	})
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return ServiceTwin{}, deviceNotFound(deviceID)
		}
		return ServiceTwin{}, err
	}
	if change := twinChangeOf(opType, body, view, note, version); change != nil {
		s.TwinChanged(ctx, hub, deviceID, opType, change)
	}
	if note != nil {
		s.notifyDesired(ctx, hub, deviceID, version, note)
	}
	return s.serviceTwin(hub, d, view, etag), nil
}

// twinChangeOf is the body of the twin change event of a service twin
// write: the tags as the request sent them (an update) or as they are now
// (a replacement), and the desired properties as applied (note); nil when
// the write changed nothing.
func twinChangeOf(opType string, body []byte, view twin.Service, note []byte, desiredVersion int64) []byte {
	var tags []byte
	if opType == OpReplaceTwin {
		tags = view.Tags
		if tags == nil {
			tags = []byte("{}")
		}
	} else {
		var env struct {
			Tags json.RawMessage `json:"tags"`
		}
		if json.Unmarshal(body, &env) == nil && len(env.Tags) > 0 && string(env.Tags) != "null" {
			tags = env.Tags
		}
	}
	if tags == nil && note == nil {
		return nil // an update that named neither section changed nothing
	}
	return TwinChange(view.Version, tags, note, desiredVersion, nil, 0)
}

// serviceDevice reads a device's identity for the service API.
func (s *Service) serviceDevice(ctx context.Context, hub, deviceID string) (dps.HubDevice, error) {
	d, err := s.o.Store.HubDevice(ctx, hub, deviceID)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return d, deviceNotFound(deviceID)
		}
		return d, err
	}
	if d.DeviceID != deviceID { // the stores fold IDs; IoT Hub's are case-sensitive
		return dps.HubDevice{}, deviceNotFound(deviceID)
	}
	return d, nil
}

// deviceNotFound is IoT Hub's DeviceNotFound (its code, 404001, is the
// transport's to write: dps's catalog has no name for it).
func deviceNotFound(deviceID string) error {
	return &dps.Error{Kind: dps.KindNotFound, Message: "The device " + strconv.Quote(deviceID) + " does not exist on this hub."}
}

func (s *Service) serviceTwin(hub string, d dps.HubDevice, view twin.Service, etag string) ServiceTwin {
	st := ServiceTwin{
		DeviceID:     d.DeviceID,
		ETag:         etag,
		DeviceETag:   deviceETag(d),
		Status:       status(d),
		StatusReason: d.StatusReason,
		AuthType:     d.Auth.Type,
		IoTEdge:      d.IoTEdge,
		Twin:         view,
	}
	if st.AuthType == "" {
		st.AuthType = dps.HubAuthNone
	}
	if d.Auth.Type == dps.HubAuthSelfSigned {
		st.PrimaryThumbprint, st.SecondaryThumbprint = d.Auth.PrimaryThumbprint, d.Auth.SecondaryThumbprint
	}
	if a := s.conns.lookup(hub, d.DeviceID); a != nil {
		st.Connected, st.ConnectedSince, st.ModelID = true, a.since, a.id.ModelID
	}
	return st
}

// status is an identity's status, "" read as enabled.
func status(d dps.HubDevice) dps.DeviceStatus {
	if d.Enabled() {
		return dps.DeviceEnabled
	}
	return dps.DeviceDisabled
}

// parseIfMatch reads an If-Match value: wildcard is true for none and
// for * (quoted or not, as the service SDKs send it); otherwise etag is
// the value without a W/ prefix and surrounding quotes.
func parseIfMatch(v string) (etag string, wildcard bool) {
	v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	return v, v == "" || v == "*"
}

// twinETag is a twin's ETag: derived from the identity's generation and
// the twin version, which grows with every accepted twin operation, so
// that the compare-and-set of a twin write can check it against the twin
// it is about to change.
func twinETag(generation string, version int64) string {
	h := sha256.New()
	h.Write([]byte("twin\x00" + generation + "\x00"))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(version)))
	return base64.StdEncoding.EncodeToString(h.Sum(nil)[:8])
}

// deviceETag is an identity's ETag, derived from what the registry holds
// about it (generation, status, authentication, capabilities): the twin
// shares the record, so the record's own ETag changes with twin writes.
func deviceETag(d dps.HubDevice) string {
	h := sha256.New()
	for _, f := range []string{"device", d.GenerationID, string(status(d)), d.StatusReason, string(d.Auth.Type),
		string(d.Auth.PrimaryKey), string(d.Auth.SecondaryKey), d.Auth.PrimaryThumbprint, d.Auth.SecondaryThumbprint,
		strconv.FormatBool(d.IoTEdge)} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil)[:8])
}
