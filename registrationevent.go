package dps

import (
	"encoding/json"
	"strings"
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
	Reason          string // its message, as the device was told
	// Cause classifies a refusal or a failure in one word (a Cause
	// constant), for metrics and for reading at a glance; empty for the
	// other kinds.
	Cause    string
	Hub      string // the assigned hub
	DeviceID string
	Webhook  *WebhookCall
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

// ParseEventKind accepts an event kind's name in any case.
func ParseEventKind(s string) (EventKind, error) {
	for _, k := range []EventKind{EventAccepted, EventRefused, EventAssigned, EventFailed, EventWebhook} {
		if strings.EqualFold(s, string(k)) {
			return k, nil
		}
	}
	return "", Errorf(KindInvalid, "%q is not an event kind (accepted, refused, assigned, failed, webhook)", s)
}

// The causes of refusals and failures (RegistrationEvent.Cause).
const (
	CauseAuthentication = "authentication" // the credential was rejected (401, 403)
	CauseThrottled      = "throttled"      // over a throttling limit (429)
	CauseBadRequest     = "badRequest"     // a malformed or unacceptable request (400, 405, 409, 412, 413)
	CauseNotFound       = "notFound"       // no such operation, registration or enrollment (404)
	CauseFault          = "fault"          // a fault injection rule answered
	CauseUnavailable    = "unavailable"    // dps itself could not answer (5xx)
	CauseDisabled       = "disabled"       // the enrollment is disabled
	CauseAllocation     = "allocation"     // no hub could be chosen (a custom allocation webhook, a policy)
	CauseHub            = "hub"            // the assigned hub refused the device or could not be reached
)

// RefusalCause is the cause of a refusal with err.
func RefusalCause(err error) string {
	switch KindOf(err) {
	case KindUnauthorized, KindForbidden:
		return CauseAuthentication
	case KindThrottled:
		return CauseThrottled
	case KindInvalid, KindTooLarge, KindMethodNotAllowed, KindConflict, KindPrecondition:
		return CauseBadRequest
	case KindNotFound:
		return CauseNotFound
	}
	return CauseUnavailable
}

// FailureCause is the cause of a registration that ended failed with the
// DPS error code code.
func FailureCause(code int) string {
	switch code {
	case CodeHubUnavailable, CodeHubRejected:
		return CauseHub
	case CodeNotFound:
		return CauseNotFound
	}
	return CauseAllocation
}

// RegistrationEventFilter selects events of the feed: an event matches
// when it matches every field that is set.
type RegistrationEventFilter struct {
	RegistrationID string    // in any case (FoldID)
	Kind           EventKind // one kind
	Group          string    // the enrollment group, in any case
	Since          time.Time // events at this time or later
}

// Match reports whether e matches f, as the stores select.
func (f RegistrationEventFilter) Match(e RegistrationEvent) bool {
	return (f.RegistrationID == "" || FoldID(f.RegistrationID) == FoldID(e.RegistrationID)) &&
		(f.Kind == "" || f.Kind == e.Kind) &&
		(f.Group == "" || FoldID(f.Group) == FoldID(e.EnrollmentGroup)) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since))
}
