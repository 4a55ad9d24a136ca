package httpapi

import (
	"net/http"

	"github.com/opendps/dps/internal/wire"
)

// WriteError answers err as the device API answers every error (status,
// x-ms-request-id, x-ms-error-code, Retry-After when retryable, the DPS
// error JSON with trackingId and timestampUtc), for handlers that share the
// HTTPS port without being routed through this one (MQTT over WebSocket).
func (h *Handler) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("x-ms-request-id", wire.NewTrackingID())
	h.writeError(w, r, err)
}
