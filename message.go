package dps

import "time"

// Message is one device-to-cloud message as a built-in hub keeps it in
// its event log: what the device sent and the properties the hub stamped
// when it accepted it. A hub's log is read in order of Seq, from a
// position, as IoT Hub's built-in endpoint is read from a checkpoint.
type Message struct {
	Hub      string // the hub's host name, as the device addressed it
	DeviceID string
	ModuleID string // empty: the device itself sent it
	// Seq is the message's position in its hub's log: 1 for the first
	// message, each next one the next integer. The store assigns it when
	// it appends the message; it is never reused, deletions included.
	Seq int64
	// Enqueued is when the hub accepted the message
	// (iothub-enqueuedtime).
	Enqueued        time.Time
	MessageID       string // message-id
	CorrelationID   string // correlation-id
	UserID          string // user-id
	ContentType     string // content-type ($.ct)
	ContentEncoding string // content-encoding ($.ce)
	// Properties are the message's application properties, as sent.
	Properties map[string]string
	// System holds the other system and annotation properties, by their
	// IoT Hub names: those the hub stamps (iothub-connection-device-id,
	// iothub-connection-auth-method, …) and those the device sent
	// (dt-dataschema, $.to, …).
	System map[string]string
	Body   []byte // nil and empty are kept apart
}
