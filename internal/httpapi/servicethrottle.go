package httpapi

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/throttle"
)

// The service APIs' throttling (ServiceOptions.Throttle,
// Options.ServiceThrottle): checked once the caller is authorized, before
// the request is served, so a refused request reads and writes nothing.
// Unauthenticated requests are refused before and consume nothing of the
// allowance (a caller without a key cannot starve those with one). The
// answers are Azure's: the DPS service API's
// {"errorCode":429001,"trackingId":…,"message":…,"timestampUtc":…}, a
// built-in hub's {"Message":"ErrorCode:ThrottlingException;…",…} with
// iothub-errorcode ThrottlingException (the Node service SDK's
// ThrottlingError); both with Retry-After, the whole seconds until the
// quota has a request again.

// throttled answers 429 when the DPS service API's quota is used up; false
// lets the request go on.
func (h *ServiceHandler) throttled(w http.ResponseWriter, r *http.Request) bool {
	wait, ok := h.o.Throttle.Allow(throttle.ServiceOperations, "")
	if ok {
		return false
	}
	h.err.writeErrorRetry(w, r, &dps.Error{Kind: dps.KindThrottled, Code: dps.CodeThrottled, Message: throttle.Message}, retrySeconds(wait))
	logServiceThrottled(h.o.Logger, h.o.Throttle, r, throttle.ServiceOperations, "", trackingID(w))
	return true
}

// hubThrottled answers 429 when the hub's quota for the request (hubQuota)
// is used up; false lets the request go on.
func (h *Handler) hubThrottled(w http.ResponseWriter, r *http.Request, hub string) bool {
	q, limited := hubQuota(r)
	if !limited {
		return false
	}
	wait, ok := h.o.ServiceThrottle.Allow(q, hub)
	if ok {
		return false
	}
	// No ';' in the message: the Node service SDK splits the body's
	// Message on it and keeps the second part only.
	err := &dps.Error{Kind: dps.KindThrottled, Code: dps.CodeThrottled,
		Message: "The hub's " + q.String() + " operations are being throttled. Retry after the seconds of the Retry-After header."}
	h.writeHubErrorRetry(w, r, err, nil, retrySeconds(wait))
	logServiceThrottled(h.o.Logger, h.o.ServiceThrottle, r, q, hub, trackingID(w))
	return true
}

// hubQuota is the IoT Hub quota a built-in hub's service request counts
// against; false: none (C2D purge and feedback, service statistics, and
// dps's extensions: events, checkpoints, routes).
func hubQuota(r *http.Request) (throttle.Quota, bool) {
	segs, _ := Segments(r.URL.EscapedPath())
	is := func(i int, s string) bool { return i < len(segs) && strings.EqualFold(segs[i], s) }
	switch {
	case len(segs) == 2 && is(0, "devices") && is(1, "query"):
		return throttle.HubQuery, true
	case (len(segs) == 1 || len(segs) == 2) && is(0, "devices"),
		len(segs) == 2 && is(0, "statistics") && is(1, "devices"):
		return throttle.HubRegistry, true
	case len(segs) == 2 && is(0, "twins") && r.Method == http.MethodGet:
		return throttle.HubTwinRead, true
	case len(segs) == 2 && is(0, "twins"):
		return throttle.HubTwinUpdate, true
	case len(segs) == 3 && is(0, "twins") && is(2, "methods"):
		return throttle.HubMethod, true
	case len(segs) == 4 && is(0, "devices") && is(2, "messages") && is(3, "deviceBound") && r.Method == http.MethodPost:
		return throttle.HubC2DSend, true
	}
	return 0, false
}

// logServiceThrottled logs a throttled service request at info, at most
// once per 10 s per quota and hub, with the count of refusals not logged
// since (throttle.LogGate). The Authorization header is never logged.
func logServiceThrottled(log *slog.Logger, l *throttle.ServiceLimiter, r *http.Request, q throttle.Quota, hub, tracking string) {
	n, ok := l.LogThrottled(q, hub)
	if !ok {
		return
	}
	attrs := []slog.Attr{slog.String("api", q.API()), slog.String("quota", q.String())}
	if hub != "" {
		attrs = append(attrs, slog.String(logkey.Hub, hub))
	}
	attrs = append(attrs, slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("source", r.RemoteAddr),
		slog.String(logkey.TrackingID, tracking), slog.Int64(logkey.Suppressed, n))
	log.LogAttrs(r.Context(), slog.LevelInfo, "service request throttled", attrs...)
}
