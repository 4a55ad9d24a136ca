package iothub

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/opendps/dps"
)

// The system properties the hub stamps on every accepted message. A
// device cannot set them: values it sent under these names are dropped.
const (
	PropConnectionDeviceID     = "iothub-connection-device-id"
	PropConnectionModuleID     = "iothub-connection-module-id"
	PropConnectionGenerationID = "iothub-connection-auth-generation-id"
	PropConnectionAuthMethod   = "iothub-connection-auth-method"
	PropEnqueuedTime           = "iothub-enqueuedtime"
	PropDataSchema             = "dt-dataschema"
)

// Send accepts device-to-cloud messages of an authenticated device into its
// hub's event log and returns them as stored. The caller fills what the
// device sent (message id, content type and encoding, application and
// system properties, body); Send sets the hub, the device, the enqueued
// time and the connection properties. The messages are durable when Send
// returns without an error — all of them, or none.
//
// A message over Options.MaxMessageSize is KindTooLarge (CodeTooLarge) and
// nothing is stored.
func (s *Service) Send(ctx context.Context, id Identity, msgs ...dps.Message) ([]dps.Message, error) {
	method, err := json.Marshal(struct {
		Scope  string `json:"scope"`
		Type   string `json:"type"`
		Issuer string `json:"issuer"`
	}{"device", id.Method, "iothub"})
	if err != nil {
		return nil, dps.AsError(err)
	}
	now := s.o.Now().UTC()
	out := make([]dps.Message, len(msgs))
	for i, m := range msgs {
		if n := Size(m); n > s.o.MaxMessageSize {
			return nil, &dps.Error{Kind: dps.KindTooLarge, Code: dps.CodeTooLarge,
				Message: fmt.Sprintf("The message is %d bytes, over the limit of %d bytes (body, system property values, application property names and values).", n, s.o.MaxMessageSize)}
		}
		sys := make(map[string]string, len(m.System)+5)
		for k, v := range m.System {
			sys[k] = v
		}
		for _, k := range [...]string{PropConnectionDeviceID, PropConnectionModuleID, PropConnectionGenerationID, PropConnectionAuthMethod, PropEnqueuedTime, PropMessageSource} {
			delete(sys, k)
		}
		sys[PropMessageSource] = SourceTelemetry // a device cannot pass its message off as a hub event
		sys[PropConnectionDeviceID] = id.DeviceID
		sys[PropConnectionGenerationID] = id.GenerationID
		sys[PropConnectionAuthMethod] = string(method)
		if id.ModelID != "" {
			sys[PropDataSchema] = id.ModelID
		}
		m.Hub, m.DeviceID, m.ModuleID, m.Enqueued, m.Seq = id.Hub, id.DeviceID, "", now, 0
		m.System = sys
		out[i] = m
	}
	stored, err := s.o.Store.AppendMessages(ctx, out)
	if err != nil {
		return nil, err
	}
	s.appended(id.Hub)
	return stored, nil
}

// Size is a message's size as IoT Hub counts it against its limit: the
// body, the values of the system properties, and the names and values of
// the application properties.
func Size(m dps.Message) int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) + len(m.ContentType) + len(m.ContentEncoding)
	for _, v := range m.System {
		n += len(v)
	}
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}
