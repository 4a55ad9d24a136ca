package wire

import (
	"github.com/opendps/dps"
)

// HubEvents is the answer of a read of a built-in hub's event log,
// GET /messages/events on the hub's host (a dps extension; IoT Hub's
// built-in endpoint is read over AMQP).
type HubEvents struct {
	// Messages are consecutive in sequenceNumber; [] when none.
	Messages []HubEvent `json:"messages"`
	// Next is the from of the next read.
	Next int64 `json:"next"`
	// First is the oldest sequence number the log keeps (the next one to
	// be given when it keeps none).
	First int64 `json:"first"`
	// Skipped counts the positions from the requested from on that
	// retention removed before they were read.
	Skipped int64 `json:"skipped"`
}

// HubEvent is one device-to-cloud message of a hub's event log.
type HubEvent struct {
	SequenceNumber  int64   `json:"sequenceNumber"`
	EnqueuedTimeUtc string  `json:"enqueuedTimeUtc"`
	DeviceID        string  `json:"deviceId"`
	ModuleID        *string `json:"moduleId"`
	MessageID       *string `json:"messageId"`
	CorrelationID   *string `json:"correlationId"`
	UserID          *string `json:"userId"`
	ContentType     *string `json:"contentType"`
	ContentEncoding *string `json:"contentEncoding"`
	// Properties are the application properties; {} when none.
	Properties map[string]string `json:"properties"`
	// SystemProperties are those the hub stamped
	// (iothub-connection-device-id, …) and the other system properties
	// the device sent, by their IoT Hub names; {} when none.
	SystemProperties map[string]string `json:"systemProperties"`
	// Body is the body, base64; null when the message had none.
	Body []byte `json:"body"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// HubEventOf is the wire form of a message of a hub's event log.
func HubEventOf(m dps.Message) HubEvent {
	e := HubEvent{
		SequenceNumber: m.Seq, EnqueuedTimeUtc: Time(m.Enqueued), DeviceID: m.DeviceID,
		ModuleID: nullable(m.ModuleID), MessageID: nullable(m.MessageID), CorrelationID: nullable(m.CorrelationID), UserID: nullable(m.UserID),
		ContentType: nullable(m.ContentType), ContentEncoding: nullable(m.ContentEncoding),
		Properties: map[string]string{}, SystemProperties: map[string]string{}, Body: m.Body,
	}
	for k, v := range m.Properties {
		e.Properties[k] = v
	}
	for k, v := range m.System {
		e.SystemProperties[k] = v
	}
	return e
}
