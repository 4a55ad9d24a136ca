package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wire"
)

// The built-in IoT hubs' HTTPS surface: a request whose Host names a
// built-in hub and whose path starts with devices, twins, messages,
// statistics or routes.
// Device telemetry (POST /devices/{id}/messages/events) authenticates the
// device itself; the service routes (/twins/…) take a SAS token of one of
// the hub's shared access policies. Errors are IoT Hub's: status per Kind,
// header iothub-errorcode with the error's name, and the body
// {"Message":"ErrorCode:<name>;<text>","ExceptionMessage":"Tracking ID:…"}
// (the direct-method failures DeviceNotOnline and GatewayTimeout:
// {"errorCode":…,"trackingId":…,"message":…,"info":{…},"timestampUtc":…}).
//
// Application properties of a telemetry message sent as iothub-app-*
// headers arrive with lower-case names: Go (and HTTP/2) keep no header
// name's case. A batch keeps its property names as sent.

// batchContentType is the media type of a telemetry batch.
const batchContentType = "application/vnd.microsoft.iothub.json"

// hubMaxServiceBody bounds the body of a hub service request (a twin is at
// most 8 KB of tags and 32 KB of desired properties; a method payload 128
// KB).
const hubMaxServiceBody = 256 * 1024

// hubFor returns the built-in hub a request is for: its Host names one
// (any case, port ignored) and its first path segment is devices, twins,
// messages, statistics or routes. The default hub is named localhost, as DPS is reached, so the
// path decides.
func (h *Handler) hubFor(r *http.Request) (string, bool) {
	if h.o.Hub == nil {
		return "", false
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	switch strings.ToLower(first) {
	case "devices", "twins", "messages", "statistics", "routes":
		return h.o.Hub.Hub(r.Host)
	}
	return "", false
}

// hubCheckers builds an access checker per built-in hub from its
// policies, keyed by the folded hub name. A hub whose policies cannot be
// used (a key that is not base64) gets none, so its service routes refuse
// every token, and says so in the log.
func hubCheckers(o Options) map[string]*access.Checker {
	out := make(map[string]*access.Checker, len(o.HubPolicies))
	for host, policies := range o.HubPolicies {
		name := host
		if hub, ok := o.Hub.Hub(host); ok {
			name = hub
		}
		c, err := access.New(policies, []string{name}, o.Now)
		if err != nil {
			o.Logger.Error("hub access policies unusable; the hub's service API refuses every token", "hub", name, logkey.Error, err)
			continue
		}
		out[strings.ToLower(name)] = c
	}
	return out
}

// serveHub routes a request for a built-in hub.
func (h *Handler) serveHub(w http.ResponseWriter, r *http.Request, hub string) {
	// IoT Hub's tracking IDs are 32 hex digits.
	w.Header().Set(requestIDHeader, strings.ReplaceAll(w.Header().Get(requestIDHeader), "-", ""))
	segs, ok := Segments(r.URL.EscapedPath())
	if !ok {
		h.writeHubError(w, r, dps.Errorf(dps.KindInvalid, "the request path is not valid percent-encoding"), nil)
		return
	}
	is := func(i int, s string) bool { return strings.EqualFold(segs[i], s) }
	switch {
	case h.serveHubQuery(w, r, hub, segs): // hubquery.go: POST /devices/query, before any /devices/{id} route
	case len(segs) == 4 && is(0, "devices") && is(2, "messages") && is(3, "events"):
		if h.hubMethod(w, r, http.MethodPost) {
			h.hubTelemetry(w, r, hub, segs[1])
		}
	case len(segs) == 2 && is(0, "twins"):
		switch r.Method {
		case http.MethodGet:
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.getTwin(w, r, hub, segs[1]) })
		case http.MethodPatch, http.MethodPut:
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.writeTwin(w, r, hub, segs[1]) })
		default:
			h.hubMethod(w, r, http.MethodGet, http.MethodPatch, http.MethodPut)
		}
	case len(segs) == 3 && is(0, "twins") && is(2, "methods"):
		if h.hubMethod(w, r, http.MethodPost) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.invokeMethod(w, r, hub, segs[1]) })
		}
	case h.serveHubC2D(w, r, hub, segs): // hubc2d.go
	case h.serveHubRoutes(w, r, hub, segs): // hubroutes.go: GET /routes, /routes/{name}/deadletters
	case len(segs) == 2 && is(0, "messages") && is(1, "events"):
		if h.hubMethod(w, r, http.MethodGet) {
			h.hubService(w, r, hub, access.ServiceConnect, func() { h.readEvents(w, r, hub) })
		}
	case len(segs) == 4 && is(0, "messages") && is(1, "events") && is(2, "checkpoints"):
		h.hubService(w, r, hub, access.ServiceConnect, func() { h.serveCheckpoint(w, r, hub, segs[3]) }) // hubevents.go
	case h.serveHubRegistry(w, r, hub, segs): // hubregistry.go
	default:
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint,
			Message: "no such endpoint on this hub: " + r.Method + " " + r.URL.Path}, nil)
	}
}

// hubMethod reports whether r.Method is one of allowed, answering 405
// otherwise.
func (h *Handler) hubMethod(w http.ResponseWriter, r *http.Request, allowed ...string) bool {
	for _, m := range allowed {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	h.writeHubError(w, r, dps.Errorf(dps.KindMethodNotAllowed, "method %s is not allowed here; use %s", r.Method, strings.Join(allowed, " or ")), nil)
	return false
}

// hubService runs serve if the request carries a SAS token of one of the
// hub's policies with right. A device's own token names no policy and is
// refused.
func (h *Handler) hubService(w http.ResponseWriter, r *http.Request, hub string, right access.Right, serve func()) {
	c := h.hubAuth[strings.ToLower(hub)]
	if c == nil {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized,
			Message: "This hub has no shared access policy that could sign the token."}, nil)
		return
	}
	if err := c.Check(r.Header.Get("Authorization"), r.URL.Path, right); err != nil {
		// IoT Hub answers a policy without the right as it answers a bad
		// token: 401 401002 IotHubUnauthorizedAccess (the Node service
		// SDK would call a 403 TooManyDevicesError).
		if e := dps.AsError(err); e.Kind == dps.KindForbidden {
			err = &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized, Message: e.Message}
		}
		h.writeHubError(w, r, err, nil)
		return
	}
	if h.hubThrottled(w, r, hub) {
		return
	}
	serve()
}

// hubTelemetry accepts a device's message, or a batch of them (all or
// none), into the hub's event log and answers 204.
func (h *Handler) hubTelemetry(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	id, err := h.o.Hub.Authenticate(r.Context(), hub, deviceID, credential(r))
	if err != nil {
		h.hubDeviceRefused(w, r, hub, deviceID, err)
		return
	}
	limit := h.o.Hub.MaxMessageSize()
	batch := isBatch(r.Header.Get("Content-Type"))
	readLimit := limit
	if batch {
		// A batch's messages total at most the message limit; base64 and
		// the JSON around them take up to about a half more.
		readLimit = 2 * limit
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(readLimit)))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			err = &dps.Error{Kind: dps.KindTooLarge, Code: dps.CodeTooLarge,
				Message: fmt.Sprintf("The request body is over the limit of %d bytes.", readLimit)}
		} else {
			err = &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "could not read the request body", Err: err}
		}
		h.writeHubError(w, r, err, nil)
		return
	}
	var msgs []dps.Message
	if batch {
		if msgs, err = parseBatch(data); err == nil {
			total := 0
			for _, m := range msgs {
				total += iothub.Size(m)
			}
			if total > limit {
				err = &dps.Error{Kind: dps.KindTooLarge, Code: dps.CodeTooLarge,
					Message: fmt.Sprintf("The batch's messages total %d bytes, over the limit of %d bytes.", total, limit)}
			}
		}
		if err != nil {
			h.writeHubError(w, r, err, nil)
			return
		}
	} else {
		msgs = []dps.Message{headerMessage(r.Header, data)}
	}
	if _, err := h.o.Hub.Send(r.Context(), id, msgs...); err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func isBatch(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && strings.EqualFold(mt, batchContentType)
}

// headerGet returns the first value of the header name, compared
// case-insensitively.
func headerGet(hdr http.Header, name string) string {
	if v := hdr.Get(name); v != "" {
		return v
	}
	for k, vs := range hdr {
		if strings.EqualFold(k, name) && len(vs) > 0 {
			return vs[0]
		}
	}
	return ""
}

// headerMessage is a telemetry message from its request headers and body.
func headerMessage(hdr http.Header, body []byte) dps.Message {
	get := func(name string) string { return headerGet(hdr, name) }
	sys := hubproto.SystemProperties{
		MessageID:       get("iothub-messageid"),
		CorrelationID:   get("iothub-correlationid"),
		UserID:          get("iothub-userid"),
		To:              get("iothub-to"),
		ContentType:     get("iothub-contenttype"),
		ContentEncoding: get("iothub-contentencoding"),
		Expiry:          get("iothub-expiry"),
		InterfaceID:     get("iothub-interface-id"),
		Subject:         get("dt-subject"),
	}
	var props map[string]string
	for k, vs := range hdr {
		name, ok := cutPrefixFold(k, "iothub-app-")
		if !ok || name == "" || len(vs) == 0 {
			continue
		}
		if props == nil {
			props = map[string]string{}
		}
		props[strings.ToLower(name)] = vs[0]
	}
	return iothub.NewMessage(sys, props, body)
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

// batchItem is one message of a telemetry batch: a base64 body, or with
// base64Encoded false a string body (the C SDK's string messages), and
// its properties: iothub-app-{name} application properties and the system
// properties under their header names.
type batchItem struct {
	Body          *string           `json:"body"`
	Base64Encoded *bool             `json:"base64Encoded"`
	Properties    map[string]string `json:"properties"`
}

func malformedBatch(format string, args ...any) error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "malformed message batch: " + fmt.Sprintf(format, args...)}
}

// parseBatch reads a telemetry batch, a JSON array of batchItem.
func parseBatch(data []byte) ([]dps.Message, error) {
	var items []batchItem
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, malformedBatch("want a JSON array of {\"body\":…,\"properties\":{…}}: %v", err)
	}
	if len(items) == 0 {
		return nil, malformedBatch("it holds no messages")
	}
	msgs := make([]dps.Message, len(items))
	for i, it := range items {
		if it.Body == nil {
			return nil, malformedBatch("message %d has no body", i)
		}
		body := []byte(*it.Body)
		if it.Base64Encoded == nil || *it.Base64Encoded {
			b, err := base64.StdEncoding.DecodeString(*it.Body)
			if err != nil {
				return nil, malformedBatch("the body of message %d is not base64", i)
			}
			body = b
		}
		hdr := http.Header{}
		var props map[string]string
		for k, v := range it.Properties {
			if name, ok := cutPrefixFold(k, "iothub-app-"); ok {
				if name != "" {
					if props == nil {
						props = map[string]string{}
					}
					props[name] = v
				}
				continue
			}
			hdr.Set(k, v)
		}
		m := headerMessage(hdr, body)
		m.Properties = props
		msgs[i] = m
	}
	return msgs, nil
}

// hubTwin is the service API's Twin JSON (members in Azure's order).
type hubTwin struct {
	DeviceID                  string          `json:"deviceId"`
	ETag                      string          `json:"etag"`
	DeviceETag                string          `json:"deviceEtag"`
	Status                    string          `json:"status"`
	StatusReason              *string         `json:"statusReason"`
	StatusUpdateTime          string          `json:"statusUpdateTime"`
	ConnectionState           string          `json:"connectionState"`
	LastActivityTime          string          `json:"lastActivityTime"`
	CloudToDeviceMessageCount int             `json:"cloudToDeviceMessageCount"`
	AuthenticationType        string          `json:"authenticationType"`
	X509Thumbprint            hubThumbprint   `json:"x509Thumbprint"`
	ModelID                   string          `json:"modelId"`
	Version                   int64           `json:"version"`
	Tags                      json.RawMessage `json:"tags,omitempty"`
	Properties                hubTwinProps    `json:"properties"`
	Capabilities              hubCapabilities `json:"capabilities"`
}

type hubThumbprint struct {
	Primary   *string `json:"primaryThumbprint"`
	Secondary *string `json:"secondaryThumbprint"`
}

type hubTwinProps struct {
	Desired  json.RawMessage `json:"desired"`
	Reported json.RawMessage `json:"reported"`
}

type hubCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// zeroTime is how Azure writes a time it never recorded.
const zeroTime = "0001-01-01T00:00:00Z"

func orNull(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func fromServiceTwin(v iothub.ServiceTwin) hubTwin {
	t := hubTwin{
		DeviceID:           v.DeviceID,
		ETag:               v.ETag,
		DeviceETag:         v.DeviceETag,
		Status:             string(v.Status),
		StatusReason:       orNull(v.StatusReason),
		StatusUpdateTime:   zeroTime,
		ConnectionState:    "Disconnected",
		LastActivityTime:   zeroTime,
		AuthenticationType: string(v.AuthType),
		X509Thumbprint:     hubThumbprint{orNull(v.PrimaryThumbprint), orNull(v.SecondaryThumbprint)},
		ModelID:            v.ModelID,
		Version:            v.Twin.Version,
		Tags:               v.Twin.Tags,
		Properties:         hubTwinProps{v.Twin.Properties.Desired, v.Twin.Properties.Reported},
		Capabilities:       hubCapabilities{v.IoTEdge},
	}
	if v.Connected {
		t.ConnectionState, t.LastActivityTime = "Connected", wire.Time(v.ConnectedSince)
	}
	return t
}

func (h *Handler) answerTwin(w http.ResponseWriter, r *http.Request, v iothub.ServiceTwin, err error) {
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	w.Header()["ETag"] = []string{`"` + v.ETag + `"`}
	writeJSON(w, http.StatusOK, fromServiceTwin(v))
}

func (h *Handler) getTwin(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	v, err := h.o.Hub.ServiceTwin(r.Context(), hub, deviceID)
	h.answerTwin(w, r, v, err)
}

// writeTwin serves PATCH (merge) and PUT (replace) of a twin.
func (h *Handler) writeTwin(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	body, err := readHubBody(w, r)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	var v iothub.ServiceTwin
	if r.Method == http.MethodPut {
		v, err = h.o.Hub.ReplaceTwin(r.Context(), hub, deviceID, body, r.Header.Get("If-Match"))
	} else {
		v, err = h.o.Hub.UpdateTwin(r.Context(), hub, deviceID, body, r.Header.Get("If-Match"))
	}
	h.answerTwin(w, r, v, err)
}

func readHubBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, hubMaxServiceBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, &dps.Error{Kind: dps.KindTooLarge, Code: dps.CodeTooLarge, Message: fmt.Sprintf("The request body is over the limit of %d bytes.", hubMaxServiceBody)}
		}
		return nil, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "could not read the request body", Err: err}
	}
	return data, nil
}

// methodRequest is the body of a direct-method call (CloudToDeviceMethod).
type methodRequest struct {
	MethodName               string          `json:"methodName"`
	Payload                  json.RawMessage `json:"payload"`
	ResponseTimeoutInSeconds *int            `json:"responseTimeoutInSeconds"`
	ConnectTimeoutInSeconds  *int            `json:"connectTimeoutInSeconds"`
}

// methodResult is the answer to a direct-method call
// (CloudToDeviceMethodResult): 200 whatever status the device chose.
type methodResult struct {
	Status  int             `json:"status"`
	Payload json.RawMessage `json:"payload"`
}

// methodTimeout is the response timeout a call gets (IoT Hub's clamp, as
// iothub.InvokeMethod applies it).
func methodTimeout(seconds *int) time.Duration {
	if seconds == nil || *seconds == 0 {
		return iothub.DefaultMethodTimeout
	}
	return min(max(time.Duration(*seconds)*time.Second, iothub.MinMethodTimeout), iothub.MaxMethodTimeout)
}

func (h *Handler) invokeMethod(w http.ResponseWriter, r *http.Request, hub, deviceID string) {
	data, err := readHubBody(w, r)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	var req methodRequest
	if err := json.Unmarshal(data, &req); err != nil {
		h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeFormatError,
			Message: "the body is not a direct-method request {\"methodName\":…,\"payload\":…,\"responseTimeoutInSeconds\":…}: " + err.Error()}, nil)
		return
	}
	switch {
	case req.MethodName == "":
		err = &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "methodName is required"}
	case req.ResponseTimeoutInSeconds != nil && *req.ResponseTimeoutInSeconds < 0,
		req.ConnectTimeoutInSeconds != nil && *req.ConnectTimeoutInSeconds < 0:
		err = &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "responseTimeoutInSeconds and connectTimeoutInSeconds may not be negative"}
	}
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	// connectTimeoutInSeconds is accepted but not waited for: the device
	// must be connected when the call arrives (IoT Hub's default, 0).
	timeout := methodTimeout(req.ResponseTimeoutInSeconds)
	res, err := h.o.Hub.InvokeMethod(r.Context(), hub, deviceID, req.MethodName, req.Payload, timeout)
	if err != nil && r.Context().Err() != nil {
		return // the caller gave up waiting; nobody reads an answer
	}
	if err != nil {
		var info map[string]string
		if dps.AsError(err).Code == dps.CodeGatewayTimeout {
			info = map[string]string{"timeout": fmt.Sprintf("%02d:%02d:%02d", int(timeout.Hours()), int(timeout.Minutes())%60, int(timeout.Seconds())%60)}
		}
		h.writeHubError(w, r, err, info)
		return
	}
	writeJSON(w, http.StatusOK, methodResult{Status: res.Status, Payload: res.Payload})
}

// hubErrorBody is IoT Hub's service error shape.
type hubErrorBody struct {
	Message          string `json:"Message"`
	ExceptionMessage string `json:"ExceptionMessage"`
}

// hubMethodErrorBody is the shape of a direct method's failure.
type hubMethodErrorBody struct {
	ErrorCode    int               `json:"errorCode"`
	TrackingID   string            `json:"trackingId"`
	Message      string            `json:"message"`
	Info         map[string]string `json:"info"`
	TimestampUtc string            `json:"timestampUtc"`
}

// hubErrorName is IoT Hub's name of an error (iothub-errorcode, and the
// ErrorCode: part of the body's Message).
func hubErrorName(e *dps.Error, code int) string {
	switch code {
	case dps.CodeFormatError:
		return "IotHubFormatError"
	case dps.CodeDeviceDisabled:
		return "DeviceDisabled"
	case dps.CodeQueueDepthExceeded:
		return "DeviceMaximumQueueDepthExceeded"
	case dps.CodeDeviceNotOnline:
		return "DeviceNotOnline"
	case dps.CodeMessageLockLost:
		return "DeviceMessageLockLost"
	case dps.CodeGatewayTimeout:
		return "GatewayTimeout"
	case dps.CodeNoSuchEndpoint:
		// Not DeviceNotFound: the Node service SDK would report a
		// missing device for a missing route.
		return "NotFound"
	}
	switch e.Kind {
	case dps.KindInvalid:
		return "ArgumentInvalid"
	case dps.KindUnauthorized, dps.KindForbidden:
		return "IotHubUnauthorizedAccess"
	case dps.KindNotFound:
		return "DeviceNotFound"
	case dps.KindConflict:
		return "DeviceAlreadyExists"
	case dps.KindPrecondition:
		return "PreconditionFailed"
	case dps.KindThrottled:
		return "ThrottlingException"
	case dps.KindUnavailable:
		return "ServiceUnavailable"
	case dps.KindTooLarge:
		return "MessageTooLarge"
	case dps.KindMethodNotAllowed:
		return "InvalidOperation"
	case dps.KindTimeout:
		return "GatewayTimeout"
	}
	return "ServerError"
}

// writeHubError answers err in IoT Hub's shape: status per Kind (the same
// table as the DPS answers), iothub-errorcode, the tracking ID of
// x-ms-request-id, one log line. info goes into a direct method's failure.
func (h *Handler) writeHubError(w http.ResponseWriter, r *http.Request, err error, info map[string]string) {
	h.writeHubErrorRetry(w, r, err, info, h.retryAfter)
}

// writeHubErrorRetry is writeHubError with the Retry-After of a 429 or 503.
func (h *Handler) writeHubErrorRetry(w http.ResponseWriter, r *http.Request, err error, info map[string]string, retryAfter string) {
	tracking := trackingID(w)
	now := h.o.Now()
	status, body := wire.Error(err, tracking, now)
	e := dps.AsError(err)
	name := hubErrorName(e, body.ErrorCode)
	level := slog.LevelDebug
	if e.Kind == dps.KindInternal || e.Kind == dps.KindUnavailable {
		level = slog.LevelError
	}
	h.o.Logger.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, logkey.ErrorCode, body.ErrorCode, logkey.RequestID, tracking, logkey.Error, err)
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header()["retry-after"] = []string{retryAfter}
	}
	w.Header()["iothub-errorcode"] = []string{name}
	if body.ErrorCode == dps.CodeDeviceNotOnline || body.ErrorCode == dps.CodeGatewayTimeout {
		if info == nil {
			info = map[string]string{}
		}
		writeJSON(w, status, hubMethodErrorBody{ErrorCode: body.ErrorCode, TrackingID: tracking, Message: body.Message, Info: info, TimestampUtc: body.TimestampUtc})
		return
	}
	writeJSON(w, status, hubErrorBody{
		Message:          "ErrorCode:" + name + ";" + body.Message,
		ExceptionMessage: "Tracking ID:" + tracking + "-G:0-TimeStamp:" + now.UTC().Format("01/02/2006 15:04:05"),
	})
}
