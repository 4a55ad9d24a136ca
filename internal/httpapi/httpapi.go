// Package httpapi is the HTTPS adapter: it routes DPS device API requests
// (case-insensitively, any api-version), decodes them, makes one call to
// the registration service, and encodes the answer or the error in the DPS
// shapes. Requests for a built-in IoT hub (hub.go) go to the hub's use
// case and get IoT Hub's shapes. It holds no business rules.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/throttle"
	"github.com/opendps/dps/internal/wire"
)

// MaxBody is the largest request body accepted (the DPS message limit).
const MaxBody = 96 * 1024

// Registrar is the registration service as the device API uses it.
type Registrar interface {
	Register(ctx context.Context, req registration.Request) (dps.Operation, error)
	Operation(ctx context.Context, scope, regID, operationID string, cred dps.Credential) (dps.Operation, error)
	Lookup(ctx context.Context, scope, regID string, cred dps.Credential) (dps.Registration, error)
}

// Options configure a Handler.
type Options struct {
	Registrar  Registrar
	Logger     *slog.Logger
	RetryAfter time.Duration // Retry-After on assigning answers (default 2s)
	// Service, when set, serves every path that is not a device API path
	// (the service API).
	Service http.Handler
	Now     func() time.Time
	// Hub, when set, serves the built-in IoT hubs: a request whose Host
	// names one of them and whose path starts with devices, twins, routes or
	// messages (hub.go). nil: no hub.
	Hub *iothub.Service
	// HubPolicies are each built-in hub's shared access policies (IoT Hub
	// rights), by hub host name; they authorize the hub's service routes.
	HubPolicies map[string][]access.Policy
	// Throttle limits registers and polls (guard.go); nil: no limit.
	Throttle *throttle.Limiter
	// Faults injects configured faults into registers and polls
	// (guard.go); nil: none.
	Faults *faults.Injector
	// ServiceThrottle limits the built-in hubs' service requests
	// (servicethrottle.go); nil: no limit.
	ServiceThrottle *throttle.ServiceLimiter
	// Routes, when set, is the message routing engine GET /routes shows
	// (hubroutes.go); nil: no hub has routes.
	Routes Routes
	// Events, when set, receives the device requests refused (refusal.go).
	Events registration.EventRecorder
}

// Handler serves the device API.
type Handler struct {
	o          Options
	retryAfter string
	hubAuth    map[string]*access.Checker // folded hub name → its policies
}

// New returns a Handler.
func New(o Options) *Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	h := &Handler{o: o, retryAfter: strconv.Itoa(int(o.RetryAfter / time.Second))}
	if o.Hub != nil {
		h.hubAuth = hubCheckers(o)
	}
	return h
}

// Segments splits an escaped URL path into decoded segments, ignoring a
// trailing slash. ok is false when a segment is not valid percent-encoding.
func Segments(escapedPath string) (segs []string, ok bool) {
	p := strings.Trim(escapedPath, "/")
	if p == "" {
		return nil, true
	}
	raw := strings.Split(p, "/")
	segs = make([]string, len(raw))
	for i, s := range raw {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		segs[i] = d
	}
	return segs, true
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(requestIDHeader, wire.NewTrackingID())
	if hub, ok := h.hubFor(r); ok {
		h.serveHub(w, r, hub)
		return
	}
	segs, ok := Segments(r.URL.EscapedPath())
	if !ok {
		h.writeError(w, r, dps.Errorf(dps.KindInvalid, "the request path is not valid percent-encoding"))
		return
	}
	if len(segs) >= 3 && strings.EqualFold(segs[1], "registrations") && !strings.EqualFold(segs[0], "registrations") {
		scope, regID := segs[0], segs[2]
		switch {
		case len(segs) == 4 && strings.EqualFold(segs[3], "register"):
			if h.method(w, r, http.MethodPut) {
				h.register(w, r, scope, regID)
			}
			return
		case len(segs) == 5 && strings.EqualFold(segs[3], "operations"):
			if h.method(w, r, http.MethodGet) {
				h.operation(w, r, scope, regID, segs[4])
			}
			return
		case len(segs) == 3:
			if h.method(w, r, http.MethodPost) {
				h.lookup(w, r, scope, regID)
			}
			return
		}
	}
	if h.o.Service != nil {
		h.o.Service.ServeHTTP(w, r)
		return
	}
	h.writeError(w, r, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
}

func (h *Handler) method(w http.ResponseWriter, r *http.Request, want string) bool {
	if r.Method == want {
		return true
	}
	w.Header().Set("Allow", want)
	h.writeError(w, r, dps.Errorf(dps.KindMethodNotAllowed, "method %s is not allowed here; use %s", r.Method, want))
	return false
}

func credential(r *http.Request) dps.Credential {
	c := dps.Credential{SAS: r.Header.Get("Authorization")}
	if r.TLS != nil {
		c.Certificates = r.TLS.PeerCertificates
	}
	return c
}

// readBody reads the request body up to MaxBody and decodes it into a
// DeviceRegistration; an empty body is an empty registration.
func readBody(w http.ResponseWriter, r *http.Request) (wire.DeviceRegistration, error) {
	var body wire.DeviceRegistration
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return body, &dps.Error{Kind: dps.KindTooLarge, Message: "request body exceeds the 96 KB limit"}
		}
		return body, &dps.Error{Kind: dps.KindInvalid, Message: "could not read the request body", Err: err}
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return body, nil
	}
	if err := json.Unmarshal(data, &body); err != nil {
		return body, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "the request body is not a valid DeviceRegistration JSON object", Err: err}
	}
	if string(body.Payload) == "null" {
		body.Payload = nil
	}
	return body, nil
}

func (h *Handler) register(w http.ResponseWriter, r *http.Request, scope, regID string) {
	if h.throttled(w, r, throttle.Register, regID) {
		return
	}
	answered, drop := h.injected(w, r, faults.Point{Transport: transportHTTPS, Operation: faults.OpRegister, RegistrationID: regID})
	if answered {
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		h.deviceError(w, r, regID, err)
		return
	}
	d := deviceRequest{RegID: regID, Payload: body.Payload}
	if body.RegistrationID != "" && !strings.EqualFold(body.RegistrationID, regID) {
		h.refuse(w, r, d, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "registrationId in the body does not match the registration ID in the path"})
		return
	}
	req := registration.Request{
		IDScope:        scope,
		RegistrationID: regID,
		Credential:     credential(r),
		Payload:        body.Payload,
		Force:          strings.EqualFold(r.URL.Query().Get("forceRegistration"), "true"),
		Origin:         registration.Origin{Transport: transportHTTPS, Source: r.RemoteAddr, TrackingID: trackingID(w)},
		CSR:            body.CSR,
		CSRRefused:     wire.CheckCSRVersion(apiVersion(r), body.CSR),
	}
	if body.TPM != nil {
		req.Credential.TPM = &dps.TPMAttestation{EndorsementKey: body.TPM.EndorsementKey, StorageRootKey: body.TPM.StorageRootKey}
	}
	d.Attestation = attestationOf(req.Credential, true)
	op, err := h.o.Registrar.Register(r.Context(), req)
	if drop {
		abort()
	}
	if err != nil {
		h.refuse(w, r, d, err)
		return
	}
	h.writeOperation(w, r, op, true)
}

func (h *Handler) operation(w http.ResponseWriter, r *http.Request, scope, regID, opID string) {
	if h.throttled(w, r, throttle.Poll, regID) {
		return
	}
	op, err := h.o.Registrar.Operation(r.Context(), scope, regID, opID, credential(r))
	// Fault rules see the operation's group once it is read (a read
	// changes nothing).
	p := faults.Point{Transport: transportHTTPS, Operation: faults.OpPoll, RegistrationID: regID, Group: op.EnrollmentGroupID, GroupKnown: err == nil}
	answered, drop := h.injected(w, r, p)
	switch {
	case answered:
		return
	case drop:
		abort()
	case err == nil && op.Status == dps.StatusAssigned && h.o.Faults.Hold(r.Context(), p, op.ID):
		op = held(op)
	}
	if err != nil {
		h.refuse(w, r, deviceRequest{RegID: regID, OperationID: opID, Attestation: attestationOf(credential(r), false)}, err)
		return
	}
	h.writeOperation(w, r, op, false)
}

func (h *Handler) lookup(w http.ResponseWriter, r *http.Request, scope, regID string) {
	body, err := readBody(w, r)
	if err != nil {
		h.deviceError(w, r, regID, err)
		return
	}
	if body.CSR != "" {
		h.deviceError(w, r, regID, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "csr is not allowed in a registration status lookup"})
		return
	}
	reg, err := h.o.Registrar.Lookup(r.Context(), scope, regID, credential(r))
	if err != nil {
		h.deviceError(w, r, regID, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.FromRegistration(reg))
}

func (h *Handler) writeOperation(w http.ResponseWriter, r *http.Request, op dps.Operation, register bool) {
	status := wire.OperationStatus(op, register)
	if status == http.StatusAccepted {
		// Lower-case: the C SDK looks this header up case-sensitively.
		w.Header()["retry-after"] = []string{h.retryAfter}
	}
	writeJSON(w, status, wire.FromOperationFor(op, register, apiVersion(r)))
}

// apiVersion is a request's api-version ("" when it has none).
func apiVersion(r *http.Request) string { return r.URL.Query().Get("api-version") }

// WriteJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := wire.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errorCode":`+strconv.Itoa(dps.CodeInternal)+`,"message":"Internal server error."}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// requestIDHeader carries a request's tracking ID, the same as an error
// body's trackingId and the "request failed" log line's request_id.
const requestIDHeader = "x-ms-request-id"

// trackingID returns the request's tracking ID, set by ServeHTTP, or sets
// one (a handler reached some other way).
func trackingID(w http.ResponseWriter) string {
	if id := w.Header().Get(requestIDHeader); id != "" {
		return id
	}
	id := wire.NewTrackingID()
	w.Header().Set(requestIDHeader, id)
	return id
}

// writeError is the one way an HTTP error answer is written (device API,
// service API, the routing fallbacks and MQTT over WebSocket): status and
// code from the Kind table (wire.Error), the request's tracking ID, one log
// line.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	h.writeErrorRetry(w, r, err, h.retryAfter)
}

// writeErrorRetry is writeError with the Retry-After of a 429 or 503.
func (h *Handler) writeErrorRetry(w http.ResponseWriter, r *http.Request, err error, retryAfter string) {
	if ch, ok := errors.AsType[*dps.TPMChallenge](err); ok {
		// The TPM challenge: exactly {authenticationKey, keyName, message}
		// (the C SDK reads a 401 without "status" as a challenge).
		writeJSON(w, http.StatusUnauthorized, wire.TPMChallenge{AuthenticationKey: ch.AuthenticationKey, KeyName: ch.KeyName,
			Message: "Import the authenticationKey into the TPM and sign the next request with it."})
		return
	}
	tracking := trackingID(w)
	status, body := wire.Error(err, tracking, h.o.Now())
	e := dps.AsError(err)
	level := slog.LevelDebug
	if e.Kind == dps.KindInternal || e.Kind == dps.KindUnavailable {
		level = slog.LevelError
	}
	h.o.Logger.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, logkey.ErrorCode, body.ErrorCode, logkey.RequestID, tracking, logkey.Error, err)
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header()["retry-after"] = []string{retryAfter}
	}
	w.Header().Set("x-ms-error-code", strconv.Itoa(body.ErrorCode))
	writeJSON(w, status, body)
}
