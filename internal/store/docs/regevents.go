package docs

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/opendps/dps"
)

// RegistrationEvent is the document of an entry of the registration-events
// feed. Its table was created in format 1: it has no previous format. The
// payload is stored compacted as received, absent when there is none (an
// event without a payload is the common case, and reads back nil).
type RegistrationEvent struct {
	V                int             `json:"v"`
	Seq              int64           `json:"seq"`
	Time             time.Time       `json:"time,omitzero"`
	Kind             string          `json:"kind"`
	RegistrationID   string          `json:"registrationId,omitempty"`
	EnrollmentGroup  string          `json:"enrollmentGroupId,omitempty"`
	OperationID      string          `json:"operationId,omitempty"`
	Attestation      string          `json:"attestation,omitempty"`
	Transport        string          `json:"transport,omitempty"`
	Source           string          `json:"source,omitempty"`
	TrackingID       string          `json:"trackingId,omitempty"`
	Code             int             `json:"errorCode,omitempty"`
	Reason           string          `json:"reason,omitempty"`
	Cause            string          `json:"cause,omitempty"`
	Hub              string          `json:"assignedHub,omitempty"`
	DeviceID         string          `json:"deviceId,omitempty"`
	Webhook          *WebhookCall    `json:"webhook,omitempty"`
	Payload          json.RawMessage `json:"payload,omitempty"`
	PayloadTruncated bool            `json:"payloadTruncated,omitempty"`
	Node             string          `json:"node,omitempty"`
}

// WebhookCall is a webhook call of a registration event; the latency in
// nanoseconds.
type WebhookCall struct {
	URL       string `json:"url"`
	Status    int    `json:"status,omitempty"`
	LatencyNs int64  `json:"latencyNs"`
	Error     string `json:"error,omitempty"`
}

// FromRegistrationEvent is the document of a registration event.
func FromRegistrationEvent(e dps.RegistrationEvent) RegistrationEvent {
	d := RegistrationEvent{
		V: Version, Seq: e.Seq, Time: e.Time, Kind: string(e.Kind), RegistrationID: e.RegistrationID, EnrollmentGroup: e.EnrollmentGroup,
		OperationID: e.OperationID, Attestation: string(e.Attestation), Transport: e.Transport, Source: e.Source, TrackingID: e.TrackingID,
		Code: e.Code, Reason: e.Reason, Cause: e.Cause, Hub: e.Hub, DeviceID: e.DeviceID, Payload: e.Payload, PayloadTruncated: e.PayloadTruncated, Node: e.Node,
	}
	if w := e.Webhook; w != nil {
		d.Webhook = &WebhookCall{URL: w.URL, Status: w.Status, LatencyNs: int64(w.Latency), Error: w.Error}
	}
	return d
}

// Domain is the registration event a document holds.
func (d RegistrationEvent) Domain() dps.RegistrationEvent {
	e := dps.RegistrationEvent{
		Seq: d.Seq, Time: d.Time, Kind: dps.EventKind(d.Kind), RegistrationID: d.RegistrationID, EnrollmentGroup: d.EnrollmentGroup,
		OperationID: d.OperationID, Attestation: dps.AttestationType(d.Attestation), Transport: d.Transport, Source: d.Source, TrackingID: d.TrackingID,
		Code: d.Code, Reason: d.Reason, Cause: d.Cause, Hub: d.Hub, DeviceID: d.DeviceID, Payload: d.Payload, PayloadTruncated: d.PayloadTruncated, Node: d.Node,
	}
	if w := d.Webhook; w != nil {
		e.Webhook = &dps.WebhookCall{URL: w.URL, Status: w.Status, Latency: time.Duration(w.LatencyNs), Error: w.Error}
	}
	return e
}

// EncodeRegistrationEvent encodes a registration event's document.
func EncodeRegistrationEvent(e dps.RegistrationEvent) ([]byte, error) {
	return marshal(FromRegistrationEvent(e))
}

// DecodeRegistrationEvent decodes a registration event's document. Events
// have no previous format: a document without a version is refused.
func DecodeRegistrationEvent(b []byte) (dps.RegistrationEvent, error) {
	var d RegistrationEvent
	if err := decodeCurrent(b, &d, &d.V); err != nil {
		return dps.RegistrationEvent{}, fmt.Errorf("registration event document: %w", err)
	}
	return d.Domain(), nil
}

// RegistrationEventsQuery is the one query both stores run to read the
// feed: the documents of the registration_events rows after after that
// match f, in seq order, at most limit (≤ 0: DefaultPageSize) of them.
// param writes the placeholder of the n-th argument (from 1): ? for
// SQLite, $n for PostgreSQL.
func RegistrationEventsQuery(after int64, limit int, f dps.RegistrationEventFilter, param func(n int) string) (string, []any) {
	return registrationEventsQuery(`seq > `, after, `seq`, limit, f, param)
}

// LatestRegistrationEventsQuery is the query both stores run to read the
// feed newest first: the documents of the registration_events rows before
// before (≤ 0: the newest) that match f, in descending seq order, at most
// limit (≤ 0: DefaultPageSize) of them.
func LatestRegistrationEventsQuery(before int64, limit int, f dps.RegistrationEventFilter, param func(n int) string) (string, []any) {
	if before <= 0 {
		before = math.MaxInt64
	}
	return registrationEventsQuery(`seq < `, before, `seq DESC`, limit, f, param)
}

func registrationEventsQuery(bound string, seq int64, order string, limit int, f dps.RegistrationEventFilter, param func(n int) string) (string, []any) {
	var b strings.Builder
	args := []any{seq}
	b.WriteString(`SELECT doc FROM registration_events WHERE ` + bound + param(1))
	and := func(column string, v any) {
		args = append(args, v)
		b.WriteString(` AND ` + column + param(len(args)))
	}
	if f.RegistrationID != "" {
		and(`registration_id = `, dps.FoldID(f.RegistrationID))
	}
	if f.Kind != "" {
		and(`kind = `, string(f.Kind))
	}
	if f.Group != "" {
		and(`group_id = `, dps.FoldID(f.Group))
	}
	if !f.Since.IsZero() {
		and(`time >= `, f.Since.UnixNano())
	}
	args = append(args, PageSize(limit))
	b.WriteString(` ORDER BY ` + order + ` LIMIT ` + param(len(args)))
	return b.String(), args
}

// SequenceEvents returns events as a store appends them after the last
// seq given, last: each with the next Seq in the order given and its Time
// in UTC (the time of the append, now, when it was not set).
func SequenceEvents(events []dps.RegistrationEvent, last int64, now time.Time) []dps.RegistrationEvent {
	out := make([]dps.RegistrationEvent, len(events))
	for i, e := range events {
		e.Seq = last + int64(i) + 1
		if e.Time.IsZero() {
			e.Time = now
		}
		e.Time = e.Time.UTC()
		out[i] = e
	}
	return out
}
