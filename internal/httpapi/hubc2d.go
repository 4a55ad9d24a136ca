package httpapi

// Cloud-to-device messages on a built-in hub's HTTPS surface.
//
// Device side (§3.2 of the protocol reference), authenticated as device
// telemetry is: GET /devices/{id}/messages/deviceBound receives the
// oldest waiting message under a lock (200, or 204 when there is none);
// DELETE …/deviceBound/{lockToken} completes it (rejects it when the
// query has a reject key, whatever its value); POST
// …/deviceBound/{lockToken}/abandon gives it back. deviceBound matches in
// any case (Node and C spell it devicebound). The response header names
// keep their exact case (the C SDK compares them with strcmp).
//
// Service side, authorised with a hub policy that has ServiceConnect:
// POST /devices/{id}/messages/deviceBound sends a message — a dps
// extension: IoT Hub sends C2D over AMQP only — and DELETE
// /devices/{id}/commands purges the device's queue, as IoT Hub does.
// The feedback of the messages (the outcomes their iothub-ack asked for)
// is read as IoT Hub's HTTPS feedback operations read it: GET
// /messages/serviceBound/feedback locks a batch (200, a JSON array, the
// lock token as a quoted ETag; 204 when there is none), DELETE
// …/feedback/{lockToken} completes it and POST …/{lockToken}/abandon
// gives it back (204 each).

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/wire"
)

// serveHubC2D routes the C2D requests of serveHub; false when the path is
// not one of them.
func (h *Handler) serveHubC2D(w http.ResponseWriter, r *http.Request, hub string, segs []string) bool {
	is := func(i int, s string) bool { return strings.EqualFold(segs[i], s) }
	bound := len(segs) >= 4 && is(0, "devices") && is(2, "messages") && is(3, "deviceBound")
	switch {
	case bound && len(segs) == 4:
		switch r.Method {
		case http.MethodGet:
			h.c2dReceive(w, r, hub, segs[1])
		case http.MethodPost:
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.c2dSend(w, r, hub, segs[1]) })
		default:
			h.hubMethod(w, r, http.MethodGet, http.MethodPost)
		}
	case bound && len(segs) == 5:
		if h.hubMethod(w, r, http.MethodDelete) {
			how := dps.SettleComplete
			if _, ok := r.URL.Query()["reject"]; ok {
				how = dps.SettleReject
			}
			h.c2dSettle(w, r, hub, segs[1], segs[4], how)
		}
	case bound && len(segs) == 6 && is(5, "abandon"):
		if h.hubMethod(w, r, http.MethodPost) {
			h.c2dSettle(w, r, hub, segs[1], segs[4], dps.SettleAbandon)
		}
	case len(segs) >= 3 && is(0, "messages") && is(1, "serviceBound") && is(2, "feedback"):
		h.serveFeedback(w, r, hub, segs[3:])
	case len(segs) == 3 && is(0, "devices") && is(2, "commands"):
		if h.hubMethod(w, r, http.MethodDelete) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.c2dPurge(w, r, hub, segs[1]) })
		}
	default:
		return false
	}
	return true
}

// c2dReceive answers a device's receive: the message and its properties
// as headers, or 204.
func (h *Handler) c2dReceive(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	id, err := h.o.Hub.Authenticate(r.Context(), hub, deviceID, credential(r))
	if err != nil {
		h.hubDeviceRefused(w, r, hub, deviceID, err)
		return
	}
	lock, err := lockTimeout(r)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	m, ok, err := h.o.Hub.Receive(r.Context(), id, lock)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	hdr := w.Header()
	set := func(name, v string) { hdr[name] = []string{v} } // exact case: never canonicalised
	set("ETag", `"`+m.LockToken+`"`)
	set("iothub-messageid", m.MessageID)
	set("iothub-to", "/devices/"+id.DeviceID+"/messages/deviceBound")
	set("iothub-correlationid", m.CorrelationID)
	set("iothub-userid", m.UserID)
	ack := m.Ack
	if ack == "" {
		ack = "none"
	}
	set("iothub-ack", ack)
	set("iothub-expiry", iothub.FormatExpiry(m.Expiry))
	set("iothub-sequencenumber", strconv.FormatInt(m.Seq, 10))
	set("iothub-enqueuedtime", m.Enqueued.UTC().Format("01/02/2006 03:04:05 PM"))
	set("iothub-deliverycount", strconv.Itoa(m.DeliveryCount))
	if m.ContentType != "" {
		set("ContentType", m.ContentType)
	}
	if m.ContentEncoding != "" {
		set("ContentEncoding", m.ContentEncoding)
	}
	for k, v := range m.Properties {
		set("iothub-app-"+k, v)
	}
	set("Content-Length", strconv.Itoa(len(m.Body)))
	w.WriteHeader(http.StatusOK)
	w.Write(m.Body)
}

// lockTimeout is the lock a receive asks for: iothub-messagelocktimeout
// in seconds, as a header (any case) or a query parameter; 0 (the hub's
// default) when absent.
func lockTimeout(r *http.Request) (time.Duration, error) {
	v := headerGet(r.Header, "iothub-messagelocktimeout")
	if v == "" {
		for k, vs := range r.URL.Query() {
			if strings.EqualFold(k, "iothub-messagelocktimeout") && len(vs) > 0 {
				v = vs[0]
			}
		}
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "iothub-messagelocktimeout must be a number of seconds"}
	}
	return time.Duration(n) * time.Second, nil
}

// c2dSettle completes, rejects or abandons the device's message locked
// with the token of the path (If-Match, when sent, must name the same
// lock, quoted or not).
func (h *Handler) c2dSettle(w http.ResponseWriter, r *http.Request, hub, deviceID, lock string, how dps.Settlement) {
	id, err := h.o.Hub.Authenticate(r.Context(), hub, deviceID, credential(r))
	if err != nil {
		h.hubDeviceRefused(w, r, hub, deviceID, err)
		return
	}
	lock = strings.Trim(lock, `"`)
	if m := strings.Trim(strings.TrimSpace(r.Header.Get("If-Match")), `"`); m != "" && m != "*" && m != lock {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindPrecondition, Code: dps.CodeMessageLockLost,
			Message: "If-Match names another lock token than the path."}, nil)
		return
	}
	switch how {
	case dps.SettleReject:
		err = h.o.Hub.Reject(r.Context(), id, lock)
	case dps.SettleAbandon:
		err = h.o.Hub.Abandon(r.Context(), id, lock)
	default:
		err = h.o.Hub.Complete(r.Context(), id, lock)
	}
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// c2dSend queues a message from the service: the body is the message,
// the headers its properties (§3.2's names, any case; iothub-expiry in
// RFC 3339). 204 once it is queued.
func (h *Handler) c2dSend(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, iothub.MaxC2DSize))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			err = &dps.Error{Kind: dps.KindTooLarge, Code: dps.CodeTooLarge, Message: fmt.Sprintf("The message is over the limit of %d bytes.", iothub.MaxC2DSize)}
		} else {
			err = &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "could not read the request body", Err: err}
		}
		h.writeHubError(w, r, err, nil)
		return
	}
	get := func(name string) string { return headerGet(r.Header, name) }
	m := dps.CloudMessage{
		MessageID: get("iothub-messageid"), CorrelationID: get("iothub-correlationid"), UserID: get("iothub-userid"),
		Ack: get("iothub-ack"), ContentType: get("Content-Type"), ContentEncoding: get("Content-Encoding"), Body: body,
	}
	if v := strings.TrimSpace(get("iothub-expiry")); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "iothub-expiry must be an RFC 3339 time, such as 2026-12-03T13:00:00Z"}, nil)
			return
		}
		m.Expiry = t
	}
	for k, vs := range r.Header {
		name, ok := cutPrefixFold(k, "iothub-app-")
		if !ok || name == "" || len(vs) == 0 {
			continue
		}
		if m.Properties == nil {
			m.Properties = map[string]string{}
		}
		m.Properties[strings.ToLower(name)] = vs[0]
	}
	if _, err := h.o.Hub.SendC2D(r.Context(), hub, deviceID, m); err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// purgeResult is IoT Hub's PurgeMessageQueueResult.
type purgeResult struct {
	TotalMessagesPurged int     `json:"totalMessagesPurged"`
	DeviceID            string  `json:"deviceId"`
	ModuleID            *string `json:"moduleId"`
}

func (h *Handler) c2dPurge(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	n, err := h.o.Hub.Purge(r.Context(), hub, deviceID)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	writeJSON(w, http.StatusOK, purgeResult{TotalMessagesPurged: n, DeviceID: deviceID})
}

// serveFeedback serves the hub's feedback queue (rest: the path after
// /messages/serviceBound/feedback).
func (h *Handler) serveFeedback(w http.ResponseWriter, r *http.Request, hub string, rest []string) {
	switch {
	case len(rest) == 0:
		if h.hubMethod(w, r, http.MethodGet) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.feedbackReceive(w, r, hub) })
		}
	case len(rest) == 1:
		if h.hubMethod(w, r, http.MethodDelete) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.feedbackSettle(w, r, hub, rest[0], true) })
		}
	case len(rest) == 2 && strings.EqualFold(rest[1], "abandon"):
		if h.hubMethod(w, r, http.MethodPost) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.feedbackSettle(w, r, hub, rest[0], false) })
		}
	default:
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint, Message: "No such feedback operation."}, nil)
	}
}

func (h *Handler) feedbackReceive(w http.ResponseWriter, r *http.Request, hub string) {
	lock, batch, err := h.o.Hub.ReceiveFeedback(r.Context(), hub)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	if len(batch) == 0 {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	out := make([]wire.HubFeedback, len(batch))
	for i, f := range batch {
		out[i] = wire.FromCloudFeedback(f)
	}
	w.Header()["ETag"] = []string{`"` + lock + `"`}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) feedbackSettle(w http.ResponseWriter, r *http.Request, hub, lock string, complete bool) {
	var err error
	if complete {
		err = h.o.Hub.CompleteFeedback(r.Context(), hub, lock)
	} else {
		err = h.o.Hub.AbandonFeedback(r.Context(), hub, lock)
	}
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
