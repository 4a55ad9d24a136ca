package httpapi

import "net/http"

// WriteError answers err as the device API answers every error (status,
// x-ms-request-id, x-ms-error-code, Retry-After when retryable, the DPS
// error JSON with trackingId and timestampUtc), for handlers that share the
// HTTPS port without being routed through this one (MQTT over WebSocket).
func (h *Handler) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	h.writeError(w, r, err) // sets x-ms-request-id unless ServeHTTP did
}
