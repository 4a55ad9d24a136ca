package console

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
)

// The built-in hubs' pages, with IoT Hub's rights: the device list and a
// device's identity (and its keys, on request) need RegistryRead of the
// hub; its twin, direct methods, cloud-to-device messages and telemetry
// need ServiceConnect.

type hubDevicesData struct {
	Hub          string
	Q, Where     string
	Rows         []iothub.ServiceTwin
	Next, Cursor string
	Stats        iothub.RegistryStatistics
	Connected    int
}

func (h *Handler) hubDevices(w http.ResponseWriter, r *http.Request, s *session) {
	hub, _ := h.isBuiltIn(r.PathValue("hub"))
	q := r.URL.Query()
	d := hubDevicesData{Hub: hub, Q: q.Get("q"), Where: strings.TrimSpace(q.Get("where")), Cursor: q.Get("cursor")}
	text := "SELECT * FROM devices"
	msg := ""
	if d.Where != "" {
		if s.has(hub, "ServiceConnect") { // a condition may look into twins
			text += " WHERE " + d.Where
		} else {
			msg = "A query condition needs the ServiceConnect right on this hub; showing every device."
		}
	}
	rows, next, err := scan(pageSize, d.Cursor, func(c string, n int) ([]iothub.ServiceTwin, string, error) {
		res, err := h.o.Hub.Query(r.Context(), hub, text, c, n)
		return res.Twins, res.Continuation, err
	}, func(t iothub.ServiceTwin) bool { return contains(t.DeviceID, d.Q) })
	if err != nil {
		if dps.KindOf(err) != dps.KindInvalid {
			h.fail(w, r, s, err)
			return
		}
		_, msg = h.errorStatus(r, err)
	}
	d.Rows, d.Next = rows, next
	if d.Stats, err = h.o.Hub.Statistics(r.Context(), hub); err != nil {
		h.fail(w, r, s, err)
		return
	}
	d.Connected = h.o.Hub.ConnectedDevices(hub)
	h.render(w, r, s, http.StatusOK, "hubdevices", page{Title: "Devices on " + hub, Section: "hub:" + hub, Error: msg, Data: d})
}

// deviceData is a hub device's page.
type deviceData struct {
	Hub      string
	Dev      iothub.Device
	ShowKeys bool
	// Twin is the device's twin (nil without ServiceConnect); Tags,
	// Desired and Reported its sections for display, TwinEdit the
	// editable document {"tags":…,"properties":{"desired":…}}.
	Twin                    *iothub.ServiceTwin
	Tags, Desired, Reported string
	TwinEdit                string
	TwinError               string
	// Method is the method form as sent and its outcome.
	Method       methodForm
	MethodResult *iothub.MethodResult
	MethodError  string
	C2D          c2dForm
	C2DError     string
}

type methodForm struct {
	Name, Payload string
	Timeout       int
}

type c2dForm struct {
	Body, MessageID, Ack, Properties string
}

// withoutMeta removes the $metadata member of a twin section for display.
func withoutMeta(raw json.RawMessage) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return map[string]json.RawMessage{}
	}
	delete(m, "$metadata")
	return m
}

func indent(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if enc.Encode(v) != nil {
		return ""
	}
	return strings.TrimSpace(buf.String())
}

// twinEdit is the editable part of a twin: its tags and desired
// properties, without versions and metadata.
func twinEdit(t iothub.ServiceTwin) string {
	tags := map[string]json.RawMessage{}
	if len(t.Twin.Tags) > 0 {
		json.Unmarshal(t.Twin.Tags, &tags)
	}
	desired := withoutMeta(t.Twin.Properties.Desired)
	delete(desired, "$version")
	return indent(map[string]any{"tags": tags, "properties": map[string]any{"desired": desired}})
}

// loadDevice fills a device page's identity and twin.
func (h *Handler) loadDevice(ctx context.Context, s *session, hub, id string) (deviceData, error) {
	d := deviceData{Hub: hub, Method: methodForm{Timeout: 30}}
	dev, err := h.o.Hub.GetDevice(ctx, hub, id)
	if err != nil {
		return d, err
	}
	d.Dev = dev
	if s.has(hub, "ServiceConnect") {
		t, err := h.o.Hub.ServiceTwin(ctx, hub, id)
		if err != nil {
			return d, err
		}
		d.Twin = &t
		if len(t.Twin.Tags) > 0 {
			d.Tags = prettyJSON(t.Twin.Tags)
		}
		d.Desired = indent(withoutMeta(t.Twin.Properties.Desired))
		d.Reported = indent(withoutMeta(t.Twin.Properties.Reported))
		d.TwinEdit = twinEdit(t)
	}
	return d, nil
}

func (h *Handler) showDevice(w http.ResponseWriter, r *http.Request, s *session, status int, d deviceData) {
	h.render(w, r, s, status, "device", page{Title: d.Dev.DeviceID + " on " + d.Hub, Section: "hub:" + d.Hub, Data: d})
}

func (h *Handler) device(w http.ResponseWriter, r *http.Request, s *session) (deviceData, bool) {
	hub, _ := h.isBuiltIn(r.PathValue("hub"))
	d, err := h.loadDevice(r.Context(), s, hub, r.PathValue("id"))
	if err != nil {
		h.fail(w, r, s, err)
		return d, false
	}
	return d, true
}

func (h *Handler) hubDevice(w http.ResponseWriter, r *http.Request, s *session) {
	if d, ok := h.device(w, r, s); ok {
		h.showDevice(w, r, s, http.StatusOK, d)
	}
}

func (h *Handler) revealDeviceKeys(w http.ResponseWriter, r *http.Request, s *session) {
	if d, ok := h.device(w, r, s); ok {
		h.o.Logger.Info("console: device keys revealed", "hub", d.Hub, "device_id", d.Dev.DeviceID, "policy", s.policy(d.Hub), "source", source(r))
		d.ShowKeys = true
		h.showDevice(w, r, s, http.StatusOK, d)
	}
}

// writeTwin replaces the twin's tags and desired properties with the
// form's (mode patch: merges them), if the twin did not change since the
// page was read (its ETag).
func (h *Handler) writeTwin(w http.ResponseWriter, r *http.Request, s *session) {
	d, ok := h.device(w, r, s)
	if !ok {
		return
	}
	body := strings.TrimSpace(r.PostFormValue("twin"))
	write := h.o.Hub.ReplaceTwin
	if r.PostFormValue("mode") == "patch" {
		write = h.o.Hub.UpdateTwin
	}
	t, err := write(r.Context(), d.Hub, d.Dev.DeviceID, []byte(body), r.PostFormValue("etag"))
	if err != nil {
		status, msg := h.errorStatus(r, err)
		if dps.KindOf(err) == dps.KindPrecondition {
			msg = "The twin changed since this page was loaded: reload it and apply your change again."
		}
		d.TwinError, d.TwinEdit = msg, body
		h.showDevice(w, r, s, status, d)
		return
	}
	h.done(w, r, s, r.URL.Path[:len(r.URL.Path)-len("/twin")], "Twin saved (version "+strconv.FormatInt(t.Twin.Version, 10)+").")
}

// maxConsoleMethodTimeout bounds how long the console waits for a
// device's answer to a direct method.
const maxConsoleMethodTimeout = 120

func (h *Handler) invokeMethod(w http.ResponseWriter, r *http.Request, s *session) {
	d, ok := h.device(w, r, s)
	if !ok {
		return
	}
	m := methodForm{Name: strings.TrimSpace(r.PostFormValue("name")), Payload: strings.TrimSpace(r.PostFormValue("payload"))}
	m.Timeout, _ = strconv.Atoi(r.PostFormValue("timeout"))
	m.Timeout = min(max(m.Timeout, 5), maxConsoleMethodTimeout)
	d.Method = m
	var payload json.RawMessage
	if m.Payload != "" {
		if !json.Valid([]byte(m.Payload)) {
			d.MethodError = "The payload is not valid JSON."
			h.showDevice(w, r, s, http.StatusBadRequest, d)
			return
		}
		payload = json.RawMessage(m.Payload)
	}
	timeout := time.Duration(m.Timeout) * time.Second
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + 30*time.Second))
	res, err := h.o.Hub.InvokeMethod(r.Context(), d.Hub, d.Dev.DeviceID, m.Name, payload, timeout)
	status := http.StatusOK
	if err != nil {
		status, d.MethodError = h.errorStatus(r, err)
	} else {
		d.MethodResult = &res
	}
	h.showDevice(w, r, s, status, d)
}

// parseProperties reads "name=value" lines.
func parseProperties(text string) (map[string]string, bool) {
	props := map[string]string{}
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, false
		}
		props[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return props, true
}

func (h *Handler) sendC2D(w http.ResponseWriter, r *http.Request, s *session) {
	d, ok := h.device(w, r, s)
	if !ok {
		return
	}
	f := c2dForm{Body: r.PostFormValue("body"), MessageID: strings.TrimSpace(r.PostFormValue("messageId")),
		Ack: r.PostFormValue("ack"), Properties: r.PostFormValue("properties")}
	d.C2D = f
	props, ok := parseProperties(f.Properties)
	if !ok {
		d.C2DError = "Properties are one name=value a line."
		h.showDevice(w, r, s, http.StatusBadRequest, d)
		return
	}
	m, err := h.o.Hub.SendC2D(r.Context(), d.Hub, d.Dev.DeviceID, dps.CloudMessage{MessageID: f.MessageID, Ack: f.Ack, Properties: props, Body: []byte(f.Body)})
	if err != nil {
		var status int
		status, d.C2DError = h.errorStatus(r, err)
		h.showDevice(w, r, s, status, d)
		return
	}
	h.done(w, r, s, r.URL.Path[:len(r.URL.Path)-len("/c2d")], "Cloud-to-device message queued (sequence number "+strconv.FormatInt(m.Seq, 10)+").")
}

// isTelemetry reports whether m is a device-to-cloud message of the
// device (not one of the hub's own events about it).
func isTelemetry(m dps.Message, deviceID string) bool {
	return m.DeviceID == deviceID && m.System[iothub.PropMessageSource] == iothub.SourceTelemetry
}

// telemetryWindow is how many positions of the hub's event log back the
// telemetry page looks for the device's messages.
const telemetryWindow = 1000

type telemetryData struct {
	Hub, DeviceID string
	Messages      []dps.Message
	Stream        string
}

func (h *Handler) telemetry(w http.ResponseWriter, r *http.Request, s *session) {
	hub, _ := h.isBuiltIn(r.PathValue("hub"))
	id := r.PathValue("id")
	if _, err := h.o.Hub.GetDevice(r.Context(), hub, id); err != nil {
		h.fail(w, r, s, err)
		return
	}
	end, err := h.o.Hub.Events(r.Context(), hub, iothub.FromEnd, 1, 0)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	var msgs []dps.Message
	for from := max(1, end.Next-telemetryWindow); from < end.Next; {
		p, err := h.o.Hub.Events(r.Context(), hub, from, iothub.MaxEventPage, 0)
		if err != nil {
			h.fail(w, r, s, err)
			return
		}
		for _, m := range p.Messages {
			if isTelemetry(m, id) {
				msgs = append(msgs, m)
			}
		}
		if len(p.Messages) == 0 {
			break
		}
		from = p.Next
	}
	if len(msgs) > 50 {
		msgs = msgs[len(msgs)-50:]
	}
	for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
		msgs[i], msgs[j] = msgs[j], msgs[i]
	}
	d := telemetryData{Hub: hub, DeviceID: id, Messages: msgs,
		Stream: r.URL.Path + "/stream?after=" + strconv.FormatInt(end.Next-1, 10)}
	h.render(w, r, s, http.StatusOK, "telemetry", page{Title: "Telemetry of " + id, Section: "hub:" + hub, Data: d})
}

// telemetryStream follows the hub's event log as server-sent events, one
// row per message of the device.
func (h *Handler) telemetryStream(w http.ResponseWriter, r *http.Request, s *session) {
	hub, _ := h.isBuiltIn(r.PathValue("hub"))
	id := r.PathValue("id")
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	after, _ := resumeAfter(r)
	from := after + 1
	p, err := h.o.Hub.Events(ctx, hub, from, iothub.MaxEventPage, 0)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	out := h.startSSE(w)
	ended := h.o.Hub.EventWaitsEnded()
	for {
		var buf []byte
		for _, m := range p.Messages {
			if !isTelemetry(m, id) {
				continue
			}
			html, err := h.fragment("telemetry-row", m)
			if err != nil {
				h.o.Logger.Error("console: telemetry row", "err", err)
				return
			}
			buf = row(buf, m.Seq, html)
		}
		if len(p.Messages) == 0 {
			select {
			case <-ended:
				return
			default:
			}
			buf = append(buf, ": keep-alive\n\n"...)
		}
		if !h.alive(s) { // at least every heartbeat: the stream ends with its session
			return
		}
		if out.flush(buf) != nil || ctx.Err() != nil {
			return
		}
		if p, err = h.o.Hub.Events(ctx, hub, p.Next, iothub.MaxEventPage, h.o.Heartbeat); err != nil {
			return
		}
	}
}

// deviceLink is a device's page on its hub.
func deviceLink(hub, id string) string {
	return "/console/hubs/" + url.PathEscape(hub) + "/device/" + url.PathEscape(id)
}
