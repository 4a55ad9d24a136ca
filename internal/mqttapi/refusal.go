package mqttapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/throttle"
	"github.com/opendps/dps/internal/wire"
)

// logRefusal logs a refused DPS request at info: the reason, registration
// ID, transport, source address and the tracking ID of the answer. The
// credential (SAS token, key, signature) is never logged. A failure of the
// service itself (5xx) is no refusal of the device and is not logged here.
func (a *Adapter) logRefusal(id Identity, err error, status, code int, tracking string, attrs ...slog.Attr) {
	if a.Logger == nil || status >= http.StatusInternalServerError {
		return
	}
	a.Logger.LogAttrs(context.Background(), slog.LevelInfo, "device refused", append([]slog.Attr{
		slog.String("reason", dps.AsError(err).Message), slog.Int(logkey.ErrorCode, code), slog.Int(logkey.Status, status),
		slog.String(logkey.RegistrationID, id.RegistrationID), slog.String("transport", id.transport()),
		slog.String("source", id.Source), slog.String(logkey.TrackingID, tracking)}, attrs...)...)
}

// throttled is the answer to a request over its op limit: 429 with
// retry-after and 429001. Every refusal is recorded in the events feed
// (and so counted in dps_device_refusals_total); only its log line is
// gated: at most once per 10 s per registration ID and operation, with
// the count of refusals not logged since (throttle.LogGate), so that a
// storm stays readable.
func (a *Adapter) throttled(id Identity, rid string, op throttle.Op, wait time.Duration) (string, []byte) {
	err := &dps.Error{Kind: dps.KindThrottled, Code: dps.CodeThrottled, Message: throttle.Message}
	tracking := wire.NewTrackingID()
	status, eb := wire.Error(err, tracking, a.now())
	a.recordRefusal(refusedRequest{id: id, rid: rid}, eb, dps.RefusalCause(err))
	if n, ok := a.Throttle.LogThrottled(op, id.RegistrationID); ok {
		a.logRefusal(id, err, status, eb.ErrorCode, tracking, slog.Int64(logkey.Suppressed, n))
	}
	body, _ := wire.Marshal(eb)
	return ResponseTopic(status, rid, retrySeconds(wait)), wire.ASCII(body)
}

// logRefusal logs a refused hub CONNECT at info: why, the hub, the device
// ID, the transport and the source address (never the password or the
// certificate). err, when set, adds the authentication's cause.
func (c *hubConn) logRefusal(cl *mqtt.Client, reason string, err error, attrs ...slog.Attr) {
	a := append([]slog.Attr{slog.String("reason", reason), slog.String(logkey.Hub, c.hub), slog.String(logDeviceID, c.user.DeviceID),
		slog.String("transport", transportOf(cl)), slog.String("source", cl.Net.Remote)}, attrs...)
	if err != nil {
		a = append(a, slog.String(logkey.Error, err.Error()))
	}
	c.h.o.Logger.LogAttrs(context.Background(), slog.LevelInfo, "device refused", a...)
}

// refusedRequest is what the events feed records of a refused request:
// its connection, and what else is known by then.
type refusedRequest struct {
	id          Identity
	rid         string
	group       string // the enrollment group polled, when known
	operationID string
	payload     json.RawMessage
}

// recordRefusal records a refused request (or connection) in the events
// feed: what the device was told (eb), never the cause behind it.
func (a *Adapter) recordRefusal(q refusedRequest, eb wire.ErrorBody, cause string) {
	if a.Events == nil {
		return
	}
	a.Events.Record(dps.RegistrationEvent{Kind: dps.EventRefused, RegistrationID: q.id.RegistrationID, EnrollmentGroup: q.group, OperationID: q.operationID,
		Attestation: attestationOf(q.id.Credential), Transport: q.id.transport(), Source: q.id.Source, TrackingID: eb.TrackingID,
		Code: eb.ErrorCode, Reason: eb.Message, Cause: cause, Payload: q.payload})
}

// attestationOf is the attestation an MQTT connection's credential is for
// (TPM devices do not register over MQTT).
func attestationOf(c dps.Credential) dps.AttestationType {
	switch {
	case c.SAS != "":
		return dps.AttestationSymmetricKey
	case len(c.Certificates) > 0:
		return dps.AttestationX509
	}
	return ""
}
