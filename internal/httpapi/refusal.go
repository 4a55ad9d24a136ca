package httpapi

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wire"
)

// deviceError answers a device API request (register, poll, status
// lookup) with err and logs the refusal at info: the reason, registration
// ID, transport, source address and the answer's tracking ID. The
// Authorization header (SAS token, signature) and the body are never
// logged. The service's own failures are logged at error by writeError.
func (h *Handler) deviceError(w http.ResponseWriter, r *http.Request, regID string, err error) {
	h.writeError(w, r, err)
	h.logRefusal(r, regID, err, trackingID(w))
}

// logRefusal is deviceError's log line, for an answer already written;
// attrs are added to it.
func (h *Handler) logRefusal(r *http.Request, regID string, err error, tracking string, attrs ...slog.Attr) {
	if _, ok := errors.AsType[*dps.TPMChallenge](err); ok {
		return // the first step of TPM attestation, not a refusal
	}
	status, body := wire.Error(err, "", h.o.Now())
	if status >= http.StatusInternalServerError {
		return
	}
	h.o.Logger.LogAttrs(r.Context(), slog.LevelInfo, "device refused", append([]slog.Attr{
		slog.String("reason", dps.AsError(err).Message), slog.Int(logkey.ErrorCode, body.ErrorCode), slog.Int(logkey.Status, status),
		slog.String(logkey.RegistrationID, regID), slog.String("transport", transportHTTPS),
		slog.String("source", r.RemoteAddr), slog.String(logkey.TrackingID, tracking)}, attrs...)...)
}
