package mqttapi

import (
	"context"
	"log/slog"
	"net/http"

	mqtt "github.com/mochi-mqtt/server/v2"

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
