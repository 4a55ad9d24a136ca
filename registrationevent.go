package dps

import (
	"encoding/json"
	"time"
)

// EventKind says what happened to a registration at one point of its way
// through dps.
type EventKind string

// The kinds of registration event.
const (
	// EventAccepted: a register request passed authentication and was
	// taken as an operation (assigning).
	EventAccepted EventKind = "accepted"
	// EventRefused: a register or poll request was answered with an error
	// (authentication, throttling, a bad request, an injected fault);
	// Code and Reason say which.
	EventRefused EventKind = "refused"
	// EventAssigned: the operation ended assigned to Hub.
	EventAssigned EventKind = "assigned"
	// EventFailed: the operation ended failed (or disabled); Code and
	// Reason say why.
	EventFailed EventKind = "failed"
	// EventWebhook: a custom allocation webhook was called; Webhook holds
	// the outcome.
	EventWebhook EventKind = "webhook"
)

// RegistrationEvent is one entry of the registration-events feed: what an
// operator or a firmware engineer watches while devices provision. It
// never holds a key, a token or a signature.
type RegistrationEvent struct {
	// Seq orders the feed: the store assigns it when it appends the event,
	// each next one greater; a reader resumes after the last Seq it saw.
	Seq            int64
	Time           time.Time
	Kind           EventKind
	RegistrationID string
	// EnrollmentGroup is the group's name when a group matched; empty for
	// an individual enrollment or when none matched.
	EnrollmentGroup string
	OperationID     string
	Attestation     AttestationType // empty when the request was not understood
	Transport       string          // "https", "mqtt", "mqttws"
	Source          string          // the client's address, host:port
	TrackingID      string
	Code            int    // the DPS error code of a refusal or a failure
	Reason          string // its message
	Hub             string // the assigned hub
	DeviceID        string
	Webhook         *WebhookCall
	// Payload is the device's payload as received (register) or the
	// payload returned to it (assigned), cut at the feed's size cap;
	// PayloadTruncated says it was cut (Payload is then nil).
	Payload          json.RawMessage
	PayloadTruncated bool
	Node             string // the dpsd node that saw it
}

// WebhookCall is one call of a custom allocation webhook.
type WebhookCall struct {
	URL     string // without its query string (it may carry a key)
	Status  int    // the HTTP status; 0 when no answer came
	Latency time.Duration
	Error   string // why the call failed, when it did
}
