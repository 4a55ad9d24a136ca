package mqttapi

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
)

// logRefusal logs a refused DPS request at info: the reason, registration
// ID, transport, source address and the tracking ID of the answer. The
// credential (SAS token, key, signature) is never logged. A failure of the
// service itself (5xx) is no refusal of the device and is not logged here.
func (a *Adapter) logRefusal(id Identity, err error, status, code int, tracking string) {
	if a.Logger == nil || status >= http.StatusInternalServerError {
		return
	}
	a.Logger.LogAttrs(context.Background(), slog.LevelInfo, "device refused",
		slog.String("reason", dps.AsError(err).Message), slog.Int(logkey.ErrorCode, code), slog.Int(logkey.Status, status),
		slog.String(logkey.RegistrationID, id.RegistrationID), slog.String("transport", id.transport()),
		slog.String("source", id.Source), slog.String(logkey.TrackingID, tracking))
}
