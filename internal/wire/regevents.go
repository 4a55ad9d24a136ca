package wire

import (
	"encoding/json"
	"time"

	"github.com/opendps/dps"
)

// The registration-events feed on the service API (a dps extension):
// GET /registrationEvents answers RegistrationEvents, and its event
// stream carries one RegistrationEvent per event.

// RegistrationEvents is a page of the feed, oldest first; a reader asks
// for the next with after = the last event's seq.
type RegistrationEvents struct {
	Events []RegistrationEvent `json:"events"`
}

// RegistrationEvent is one event of the feed. Members that do not apply
// to its kind are absent.
type RegistrationEvent struct {
	Seq             int64  `json:"seq"`
	Time            string `json:"time"` // RFC 3339, UTC, with nanoseconds
	Kind            string `json:"kind"` // accepted, refused, assigned, failed, webhook
	RegistrationID  string `json:"registrationId,omitempty"`
	EnrollmentGroup string `json:"enrollmentGroupId,omitempty"`
	OperationID     string `json:"operationId,omitempty"`
	Attestation     string `json:"attestation,omitempty"`
	Transport       string `json:"transport,omitempty"` // https, mqtt, mqttws
	Source          string `json:"source,omitempty"`    // the client's host:port
	TrackingID      string `json:"trackingId,omitempty"`
	// ErrorCode and Reason are a refusal's or a failure's DPS code and
	// message, Cause its class (dps.Cause…: authentication, throttled,
	// badRequest, notFound, fault, unavailable, disabled, allocation, hub).
	ErrorCode   int    `json:"errorCode,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Cause       string `json:"cause,omitempty"`
	AssignedHub string `json:"assignedHub,omitempty"`
	DeviceID    string `json:"deviceId,omitempty"`
	// Webhook is a custom allocation webhook call.
	Webhook *WebhookCall `json:"webhook,omitempty"`
	// Payload is the device's payload as received (accepted, refused) or
	// the payload returned to it (assigned); PayloadTruncated says it was
	// over the feed's size cap and left out.
	Payload          json.RawMessage `json:"payload,omitempty"`
	PayloadTruncated bool            `json:"payloadTruncated,omitempty"`
	Node             string          `json:"node,omitempty"`
}

// WebhookCall is one call of a custom allocation webhook: its URL without
// the query, the HTTP status (absent when no answer came), the latency in
// milliseconds and why the call failed, when it did.
type WebhookCall struct {
	URL       string  `json:"url"`
	Status    int     `json:"status,omitempty"`
	LatencyMs float64 `json:"latencyMs"`
	Error     string  `json:"error,omitempty"`
}

// RegistrationEventTimeFormat is the format of RegistrationEvent.Time.
const RegistrationEventTimeFormat = time.RFC3339Nano

// FromRegistrationEvent is an event of the feed on the wire.
func FromRegistrationEvent(e dps.RegistrationEvent) RegistrationEvent {
	out := RegistrationEvent{
		Seq: e.Seq, Time: e.Time.UTC().Format(RegistrationEventTimeFormat), Kind: string(e.Kind), RegistrationID: e.RegistrationID,
		EnrollmentGroup: e.EnrollmentGroup, OperationID: e.OperationID, Attestation: string(e.Attestation), Transport: e.Transport,
		Source: e.Source, TrackingID: e.TrackingID, ErrorCode: e.Code, Reason: e.Reason, Cause: e.Cause, AssignedHub: e.Hub,
		DeviceID: e.DeviceID, Payload: e.Payload, PayloadTruncated: e.PayloadTruncated, Node: e.Node,
	}
	if w := e.Webhook; w != nil {
		out.Webhook = &WebhookCall{URL: w.URL, Status: w.Status, LatencyMs: float64(w.Latency) / float64(time.Millisecond), Error: w.Error}
	}
	return out
}

// Domain is the event an event on the wire stands for (a client's
// reading; a time that does not parse is the zero time).
func (e RegistrationEvent) Domain() dps.RegistrationEvent {
	t, _ := time.Parse(RegistrationEventTimeFormat, e.Time)
	out := dps.RegistrationEvent{
		Seq: e.Seq, Time: t, Kind: dps.EventKind(e.Kind), RegistrationID: e.RegistrationID, EnrollmentGroup: e.EnrollmentGroup,
		OperationID: e.OperationID, Attestation: dps.AttestationType(e.Attestation), Transport: e.Transport, Source: e.Source,
		TrackingID: e.TrackingID, Code: e.ErrorCode, Reason: e.Reason, Cause: e.Cause, Hub: e.AssignedHub, DeviceID: e.DeviceID,
		Payload: e.Payload, PayloadTruncated: e.PayloadTruncated, Node: e.Node,
	}
	if w := e.Webhook; w != nil {
		out.Webhook = &dps.WebhookCall{URL: w.URL, Status: w.Status, Latency: time.Duration(w.LatencyMs * float64(time.Millisecond)), Error: w.Error}
	}
	return out
}
