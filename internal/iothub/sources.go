package iothub

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/twin"
)

// The hub's own events go into the same event log as the devices'
// telemetry, as IoT Hub's non-telemetry events go to its routes: device
// lifecycle (an identity created or deleted), twin changes, and device
// connection state. Each is a dps.Message of the device it is about with
// IoT Hub's system property iothub-message-source naming its source
// (internal/routing's route sources read it), IoT Hub's application
// properties and a JSON body:
//
//	source                       opType                                      iothub-message-schema               body
//	deviceLifecycleEvents        createDeviceIdentity, deleteDeviceIdentity  deviceLifecycleNotification         the device's twin
//	twinChangeEvents             updateTwin, replaceTwin                     twinChangeNotification              {"version":n,"tags":…,"properties":{"desired"|"reported":{…,"$version":m}}}
//	deviceConnectionStateEvents  deviceConnected, deviceDisconnected         deviceConnectionStateNotification   {"sequenceNumber":"…"}
//
// Every event also has the application properties hubName (the hub's host
// name), deviceId and operationTimestamp. Telemetry is stamped with
// iothub-message-source Telemetry (Send).
//
// Appending an event never fails the device operation it is about: a
// failure is logged and counted (LostEvents), and the event is lost.
const (
	PropMessageSource = "iothub-message-source"
	PropMessageSchema = "iothub-message-schema"

	SourceTelemetry       = "Telemetry"
	SourceDeviceLifecycle = "deviceLifecycleEvents"
	SourceTwinChange      = "twinChangeEvents"
	SourceConnectionState = "deviceConnectionStateEvents"

	OpCreateDevice   = "createDeviceIdentity"
	OpDeleteDevice   = "deleteDeviceIdentity"
	OpUpdateTwin     = "updateTwin"
	OpReplaceTwin    = "replaceTwin"
	OpConnected      = "deviceConnected"
	OpDisconnected   = "deviceDisconnected"
	SchemaLifecycle  = "deviceLifecycleNotification"
	SchemaTwinChange = "twinChangeNotification"
	SchemaConnection = "deviceConnectionStateNotification"
)

// eventTimeout bounds the append of one event.
const eventTimeout = 10 * time.Second

// LostEvents is how many of the hub's own events (lifecycle, twin change,
// connection state) could not be appended to the event log since the
// Service started.
func (s *Service) LostEvents() int64 { return s.lost.Load() }

// DeviceCreated appends the createDeviceIdentity event of a new identity
// (its body: the identity's twin).
func (s *Service) DeviceCreated(ctx context.Context, d dps.HubDevice) {
	s.lifecycle(ctx, d.Hub, d.DeviceID, OpCreateDevice, &d)
}

// DeviceDeleted appends the deleteDeviceIdentity event of an identity
// deleted from a hub (its body: {"deviceId":…}; the twin when the caller
// still has the record, DeviceRemoved).
func (s *Service) DeviceDeleted(ctx context.Context, hub, deviceID string) {
	s.lifecycle(ctx, hub, deviceID, OpDeleteDevice, nil)
}

// DeviceRemoved is DeviceDeleted with the record as it was before it was
// deleted: the event's body is its twin.
func (s *Service) DeviceRemoved(ctx context.Context, d dps.HubDevice) {
	s.lifecycle(ctx, d.Hub, d.DeviceID, OpDeleteDevice, &d)
}

func (s *Service) lifecycle(ctx context.Context, hub, deviceID, op string, d *dps.HubDevice) {
	body := []byte(`{"deviceId":` + quoteJSON(deviceID) + `}`)
	if d != nil {
		b, err := s.lifecycleBody(*d)
		if err != nil {
			s.o.Logger.WarnContext(ctx, "hub event: the device's twin is unreadable; the event has no twin", "hub", hub, "device_id", deviceID, "op", op, "error", err)
		} else {
			body = b
		}
	}
	s.appendEvent(ctx, hub, deviceID, SourceDeviceLifecycle, op, SchemaLifecycle, body)
}

// lifecycleTwin is the body of a lifecycle event: the device's twin as the
// service API shows it, without what only a connection knows.
type lifecycleTwin struct {
	DeviceID           string                 `json:"deviceId"`
	ETag               string                 `json:"etag"`
	DeviceETag         string                 `json:"deviceEtag"`
	Status             dps.DeviceStatus       `json:"status"`
	AuthenticationType dps.HubAuthType        `json:"authenticationType"`
	Version            int64                  `json:"version"`
	Tags               json.RawMessage        `json:"tags,omitempty"`
	Properties         twin.ServiceProperties `json:"properties"`
}

func (s *Service) lifecycleBody(d dps.HubDevice) ([]byte, error) {
	t, err := twin.Of(d)
	if err != nil {
		return nil, err
	}
	v := t.Service()
	auth := d.Auth.Type
	if auth == "" {
		auth = dps.HubAuthNone
	}
	return json.Marshal(lifecycleTwin{DeviceID: d.DeviceID, ETag: twinETag(d.GenerationID, t.Version()), DeviceETag: deviceETag(d),
		Status: status(d), AuthenticationType: auth, Version: v.Version, Tags: v.Tags, Properties: v.Properties})
}

// TwinChanged appends a twin change event: op is OpUpdateTwin or
// OpReplaceTwin, body the change
// ({"version":n,"properties":{"desired":{…,"$version":m}}}, TwinChange).
func (s *Service) TwinChanged(ctx context.Context, hub, deviceID, op string, body []byte) {
	s.appendEvent(ctx, hub, deviceID, SourceTwinChange, op, SchemaTwinChange, body)
}

// TwinChange is the body of a twin change event: the twin's version after
// the change, and the sections that changed, as applied (nil: unchanged).
// A desired or reported section gets its "$version".
func TwinChange(version int64, tags, desired []byte, desiredVersion int64, reported []byte, reportedVersion int64) []byte {
	b := append(make([]byte, 0, 64+len(tags)+len(desired)+len(reported)), `{"version":`...)
	b = strconv.AppendInt(b, version, 10)
	if tags != nil {
		b = append(append(b, `,"tags":`...), tags...)
	}
	if desired != nil || reported != nil {
		b = append(b, `,"properties":{`...)
		if desired != nil {
			b = append(append(b, `"desired":`...), withVersion(desired, desiredVersion)...)
		}
		if reported != nil {
			if desired != nil {
				b = append(b, ',')
			}
			b = append(append(b, `"reported":`...), withVersion(reported, reportedVersion)...)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// withVersion returns the JSON object obj with "$version" set to v (obj as
// it is when it already has one, or is not an object).
func withVersion(obj []byte, v int64) []byte {
	o := bytes.TrimSpace(obj)
	if len(o) < 2 || o[0] != '{' || o[len(o)-1] != '}' {
		return o
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(o, &probe); err != nil {
		return o
	}
	if _, ok := probe["$version"]; ok {
		return o
	}
	out := append([]byte{}, o[:len(o)-1]...)
	if len(probe) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"$version":`...)
	out = strconv.AppendInt(out, v, 10)
	return append(out, '}')
}

// DeviceConnected appends the deviceConnected event of a connection that
// the hub accepted (Attach calls it).
func (s *Service) DeviceConnected(ctx context.Context, id Identity) {
	s.connectionState(ctx, id, OpConnected)
}

// DeviceDisconnected appends the deviceDisconnected event of a connection
// that ended (its detach calls it). A connection that another connection
// of the same device replaced, on this node or another, has none: the
// device did not go offline, and its newer connection's deviceConnected
// is the last word.
func (s *Service) DeviceDisconnected(ctx context.Context, id Identity) {
	s.connectionState(ctx, id, OpDisconnected)
}

func (s *Service) connectionState(ctx context.Context, id Identity, op string) {
	// IoT Hub's sequenceNumber orders a device's connection events as
	// strings: here the time in nanoseconds and a counter of this node.
	seq := fmt.Sprintf("%020d%016X", s.o.Now().UnixNano(), s.connSeq.Add(1))
	s.appendEvent(ctx, id.Hub, id.DeviceID, SourceConnectionState, op, SchemaConnection, []byte(`{"sequenceNumber":"`+seq+`"}`))
}

// appendEvent appends one of the hub's own events to the hub's event log.
func (s *Service) appendEvent(ctx context.Context, hub, deviceID, source, op, schema string, body []byte) {
	h, ok := s.Hub(hub)
	if !ok || s.o.Store == nil {
		return
	}
	now := s.o.Now().UTC()
	m := dps.Message{
		Hub: h, DeviceID: deviceID, Enqueued: now,
		ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{
			"hubName": h, "deviceId": deviceID, "operationTimestamp": now.Format(twin.TimeFormat),
			"opType": op, PropMessageSchema: schema,
		},
		System: map[string]string{PropMessageSource: source, PropConnectionDeviceID: deviceID},
		Body:   body,
	}
	// The operation the event is about is done: its event is appended even
	// when the request that made it went away.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eventTimeout)
	defer cancel()
	if _, err := s.o.Store.AppendMessages(ctx, []dps.Message{m}); err != nil {
		s.lost.Add(1)
		s.o.Logger.WarnContext(ctx, "hub event lost: appending it to the event log failed", "hub", h, "device_id", deviceID, "op", op, "error", err)
		return
	}
	s.appended(h)
}

// appended wakes what waits for the hub's next message: the readers of
// its event log and Options.OnAppend (the message routes).
func (s *Service) appended(hub string) {
	s.events.notify(hub)
	if s.o.OnAppend != nil {
		s.o.OnAppend(hub)
	}
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
