package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wire"
)

// deviceRequest is what a refusal of a device API request records: the
// registration ID, and what else is known by then (the operation polled,
// the attestation the credential is for, the payload sent).
type deviceRequest struct {
	RegID       string
	Group       string // the enrollment group polled, when known
	OperationID string
	Attestation dps.AttestationType
	Payload     json.RawMessage
}

// deviceError answers a device API request (register, poll, status
// lookup) with err and logs the refusal at info: the reason, registration
// ID, transport, source address and the answer's tracking ID. The
// Authorization header (SAS token, signature) and the body are never
// logged. The service's own failures are logged at error by writeError.
func (h *Handler) deviceError(w http.ResponseWriter, r *http.Request, regID string, err error) {
	h.refuse(w, r, deviceRequest{RegID: regID}, err)
}

// refuse is deviceError with what is known of the request.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, d deviceRequest, err error) {
	h.writeError(w, r, err)
	h.refused(r, d, err, trackingID(w))
}

// refused logs a refusal whose answer was written (not a failure of the
// service itself: writeError logged that) and records it in the events
// feed (every refusal, the service's failures too: what the device was
// told, never the cause behind it); attrs are added to the log line.
func (h *Handler) refused(r *http.Request, d deviceRequest, err error, tracking string, attrs ...slog.Attr) {
	if _, ok := errors.AsType[*dps.TPMChallenge](err); ok {
		return // the first step of TPM attestation, not a refusal
	}
	_, body := wire.Error(err, "", h.o.Now())
	h.recordRefusal(r, d, body.ErrorCode, body.Message, dps.RefusalCause(err), tracking)
	h.logRefused(r, d, err, tracking, attrs...)
}

// logRefused is refused's log line alone (the refusal is recorded
// already); a failure of the service itself (5xx) is not logged here.
func (h *Handler) logRefused(r *http.Request, d deviceRequest, err error, tracking string, attrs ...slog.Attr) {
	status, body := wire.Error(err, "", h.o.Now())
	if status >= http.StatusInternalServerError {
		return
	}
	h.o.Logger.LogAttrs(r.Context(), slog.LevelInfo, "device refused", append([]slog.Attr{
		slog.String("reason", dps.AsError(err).Message), slog.Int(logkey.ErrorCode, body.ErrorCode), slog.Int(logkey.Status, status),
		slog.String(logkey.RegistrationID, d.RegID), slog.String("transport", transportHTTPS),
		slog.String("source", r.RemoteAddr), slog.String(logkey.TrackingID, tracking)}, attrs...)...)
}

// recordRefusal records a refused device request in the events feed.
func (h *Handler) recordRefusal(r *http.Request, d deviceRequest, code int, reason, cause, tracking string) {
	if h.o.Events == nil {
		return
	}
	h.o.Events.Record(dps.RegistrationEvent{Kind: dps.EventRefused, RegistrationID: d.RegID, EnrollmentGroup: d.Group, OperationID: d.OperationID, Attestation: d.Attestation,
		Transport: transportHTTPS, Source: r.RemoteAddr, TrackingID: tracking, Code: code, Reason: reason, Cause: cause, Payload: d.Payload})
}

// recordFault records a device request answered by a fault injection rule.
func (h *Handler) recordFault(r *http.Request, p faults.Point, body wire.ErrorBody) {
	d := deviceRequest{RegID: p.RegistrationID, Group: p.Group}
	h.recordRefusal(r, d, body.ErrorCode, body.Message, dps.CauseFault, body.TrackingID)
}

// attestationOf is the attestation a register request's credential is for,
// as far as its shape tells (empty when it does not: a SAS token may be a
// symmetric key's or, polling, a TPM's).
func attestationOf(c dps.Credential, register bool) dps.AttestationType {
	switch {
	case c.TPM != nil:
		return dps.AttestationTPM
	case c.SAS != "" && register:
		return dps.AttestationSymmetricKey
	case c.SAS == "" && len(c.Certificates) > 0:
		return dps.AttestationX509
	}
	return ""
}

// hubDeviceRefused answers a built-in hub's device request (telemetry,
// cloud-to-device receive or settle over HTTPS) whose device was not
// authenticated, and logs the refusal at info: the reason, hub, device
// ID, transport, source address and tracking ID (never the token).
func (h *Handler) hubDeviceRefused(w http.ResponseWriter, r *http.Request, hub, deviceID string, err error) {
	h.writeHubError(w, r, err, nil)
	status, _ := wire.Error(err, "", h.o.Now())
	if status >= http.StatusInternalServerError {
		return // the service's failure, logged at error
	}
	h.o.Logger.LogAttrs(r.Context(), slog.LevelInfo, "device refused",
		slog.String("reason", dps.AsError(err).Message), slog.Int(logkey.Status, status), slog.String(logkey.Hub, hub),
		slog.String("device_id", deviceID), slog.String("transport", transportHTTPS), slog.String("source", r.RemoteAddr),
		slog.String(logkey.TrackingID, trackingID(w)))
}
