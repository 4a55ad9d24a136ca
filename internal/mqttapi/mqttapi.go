// Package mqttapi is the MQTT device transport. The DPS logic is a pure
// function of (connection identity, topic, payload) — Adapter.Handle — and
// the parsers of CONNECT usernames and request topics; broker.go is the thin
// shell that plugs them into the embedded mochi-mqtt broker. hub.go serves
// the device protocol of dps's built-in IoT hubs on the same broker.
package mqttapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/throttle"
	"github.com/opendps/dps/internal/wire"
)

// Topics of the DPS MQTT protocol.
const (
	ResponseFilter = "$dps/registrations/res/#"
	registerPrefix = "$dps/registrations/PUT/iotdps-register/?"
	pollPrefix     = "$dps/registrations/GET/iotdps-get-operationstatus/?"
	responsePrefix = "$dps/registrations/res/"
)

// MaxPayload is the largest request payload (the DPS message limit).
const MaxPayload = 96 * 1024

// Registrar is the registration service as the MQTT transport uses it.
type Registrar interface {
	Authenticate(ctx context.Context, scope, regID string, cred dps.Credential) error
	Register(ctx context.Context, req registration.Request) (dps.Operation, error)
	Operation(ctx context.Context, scope, regID, operationID string, cred dps.Credential) (dps.Operation, error)
}

// Identity is who a connection authenticated as at CONNECT.
type Identity struct {
	IDScope        string
	RegistrationID string
	Credential     dps.Credential
	// Transport is "mqtt", or "mqttws" over WebSocket (throttling and
	// fault rules); empty is "mqtt".
	Transport string
	// Source is the connection's remote address (logs).
	Source string
	// APIVersion is the username's api-version ("" if none): it decides
	// whether a register may carry a csr and an answer an issued chain.
	APIVersion string
}

func (id Identity) transport() string {
	if id.Transport == "" {
		return faults.TransportMQTT
	}
	return id.Transport
}

var errUsername = errors.New("mqttapi: username must be {idScope}/registrations/{registrationId}/api-version=…")

// ParseUsername parses a CONNECT username
// "{idScope}/registrations/{registrationId}/api-version=…[&ClientVersion=…]".
// The api-version part is optional; any query members are accepted.
func ParseUsername(username string) (scope, regID string, err error) {
	path, _, _ := strings.Cut(username, "/api-version=")
	scope, rest, ok := strings.Cut(path, "/")
	if !ok || scope == "" {
		return "", "", errUsername
	}
	regID, ok = strings.CutPrefix(rest, "registrations/")
	if !ok || regID == "" || strings.Contains(regID, "/") {
		return "", "", errUsername
	}
	return scope, regID, nil
}

// UsernameAPIVersion returns the api-version of a CONNECT username
// ("…/api-version=2026-11-01&ClientVersion=…"), "" when it has none.
func UsernameAPIVersion(username string) string {
	_, q, ok := strings.Cut(username, "/api-version=")
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(q, "&")
	return v
}

// Request is a parsed request topic.
type Request struct {
	Register    bool   // register, else operation status
	RID         string // $rid exactly as sent
	OperationID string // poll only
}

// ParseTopic parses a request topic. $rid is kept byte for byte; other
// members are percent-decoded.
func ParseTopic(topic string) (Request, error) {
	var r Request
	var query string
	switch {
	case strings.HasPrefix(topic, registerPrefix):
		r.Register, query = true, topic[len(registerPrefix):]
	case strings.HasPrefix(topic, pollPrefix):
		query = topic[len(pollPrefix):]
	default:
		return r, fmt.Errorf("mqttapi: %q is not a DPS request topic", topic)
	}
	haveRID := false
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			r.RID, haveRID = v, true
		case "operationId":
			r.OperationID = v
		}
	}
	if !haveRID {
		return r, errors.New("mqttapi: request topic has no $rid")
	}
	if !r.Register && r.OperationID == "" {
		return r, errors.New("mqttapi: operation status topic has no operationId")
	}
	return r, nil
}

// ResponseTopic builds "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}]".
func ResponseTopic(status int, rid string, retryAfter int) string {
	t := responsePrefix + strconv.Itoa(status) + "/?$rid=" + rid
	if retryAfter > 0 {
		t += "&retry-after=" + strconv.Itoa(retryAfter)
	}
	return t
}

// Adapter turns one request publish into one response publish.
type Adapter struct {
	Registrar  Registrar
	RetryAfter time.Duration
	Now        func() time.Time
	// Throttle limits registers and polls; nil: no limit.
	Throttle *throttle.Limiter
	// Faults injects configured faults; nil: none.
	Faults *faults.Injector
	// Logger receives a line per refused request (refusal.go); nil: the
	// broker's logger.
	Logger *slog.Logger
	// Events, when set, receives the refused requests and connections
	// (refusal.go).
	Events registration.EventRecorder
}

// Handle answers one publish of an authenticated connection. ok is false
// when the topic cannot be answered (no $rid to address a response to); the
// caller then disconnects.
func (a *Adapter) Handle(ctx context.Context, id Identity, topic string, payload []byte) (respTopic string, body []byte, ok bool) {
	respTopic, body, ok, _ = a.HandleDrop(ctx, id, topic, payload)
	return respTopic, body, ok
}

// HandleDrop is Handle, and drop reports that a fault rule (drop:
// beforeResponse) wants the connection closed instead of answered.
func (a *Adapter) HandleDrop(ctx context.Context, id Identity, topic string, payload []byte) (respTopic string, body []byte, ok, drop bool) {
	req, err := ParseTopic(topic)
	if err != nil {
		if req.RID == "" {
			return "", nil, false, false
		}
		respTopic, body, ok = a.fail(id, req.RID, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: err.Error()})
		return respTopic, body, ok, false
	}
	if len(payload) > MaxPayload {
		respTopic, body, ok = a.fail(id, req.RID, &dps.Error{Kind: dps.KindTooLarge, Message: "payload exceeds the 96 KB limit"})
		return respTopic, body, ok, false
	}
	op := throttle.Poll
	if req.Register {
		op = throttle.Register
	}
	if wait, allowed := a.Throttle.Allow(id.transport(), op, id.RegistrationID); !allowed {
		respTopic, body = a.throttled(id, req.RID, op, wait)
		return respTopic, body, true, false
	}
	if !req.Register {
		op, err := a.Registrar.Operation(ctx, id.IDScope, id.RegistrationID, req.OperationID, id.Credential)
		p := faults.Point{Transport: id.transport(), Operation: faults.OpPoll, RegistrationID: id.RegistrationID, Group: op.EnrollmentGroupID, GroupKnown: err == nil}
		if respTopic, body, answered, drop := a.injected(ctx, id, req.RID, p); answered || drop {
			return respTopic, body, true, drop
		}
		if err != nil {
			respTopic, body = a.replyFor(refusedRequest{id: id, rid: req.RID, operationID: req.OperationID}, err, a.retryAfter())
			return respTopic, body, true, false
		}
		if op.Status == dps.StatusAssigned && a.Faults.Hold(ctx, p, op.ID) {
			op.Status, op.Result = dps.StatusAssigning, nil
		}
		respTopic, body, ok = a.answer(id, req.RID, op, false)
		return respTopic, body, ok, false
	}
	p := faults.Point{Transport: id.transport(), Operation: faults.OpRegister, RegistrationID: id.RegistrationID}
	respTopic, body, answered, drop := a.injected(ctx, id, req.RID, p)
	if answered {
		return respTopic, body, true, false
	}
	respTopic, body, ok = a.register(ctx, id, req, payload)
	return respTopic, body, ok, drop
}

// injected applies the fault rule matching p, if any: an error answer
// (answered), a delay, or drop (the caller serves the request, then closes
// the connection instead of answering).
func (a *Adapter) injected(ctx context.Context, id Identity, rid string, p faults.Point) (respTopic string, body []byte, answered, drop bool) {
	f, ok := a.Faults.Check(ctx, p)
	if !ok {
		return "", nil, false, false
	}
	switch act := f.Action; {
	case act.Status != 0:
		status, eb := httpapi.FaultAnswer(act, wire.NewTrackingID(), a.now())
		a.recordRefusal(refusedRequest{id: id, group: p.Group}, eb, dps.CauseFault)
		b, _ := wire.Marshal(eb)
		return ResponseTopic(status, rid, act.RetryAfterSeconds), wire.ASCII(b), true, false
	case act.DelayMs > 0:
		t := time.NewTimer(time.Duration(act.DelayMs) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", nil, false, true // the connection went away or the request timed out
		}
	case act.Drop == faults.DropBeforeResponse:
		return "", nil, false, true
	}
	return "", nil, false, false
}

// retrySeconds is a retry-after in whole seconds, at least 1.
func retrySeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

func (a *Adapter) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Adapter) register(ctx context.Context, id Identity, req Request, payload []byte) (string, []byte, bool) {
	var reg wire.DeviceRegistration
	if trimmed := strings.TrimSpace(string(payload)); trimmed != "" {
		if err := json.Unmarshal(payload, &reg); err != nil {
			return a.fail(id, req.RID, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "the register payload is not a valid DeviceRegistration JSON object"})
		}
	}
	if reg.RegistrationID != "" && !strings.EqualFold(reg.RegistrationID, id.RegistrationID) {
		return a.fail(id, req.RID, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "registrationId in the payload does not match the connection's registration ID"})
	}
	if reg.TPM != nil {
		return a.fail(id, req.RID, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "TPM attestation is not supported over MQTT; register over HTTPS"})
	}
	if string(reg.Payload) == "null" {
		reg.Payload = nil
	}
	op, err := a.Registrar.Register(ctx, registration.Request{
		IDScope:        id.IDScope,
		RegistrationID: id.RegistrationID,
		Credential:     id.Credential,
		Payload:        reg.Payload,
		Origin:         registration.Origin{Transport: id.transport(), Source: id.Source},
		CSR:            reg.CSR,
		CSRRefused:     wire.CheckCSRVersion(id.APIVersion, reg.CSR),
	})
	if err != nil {
		topic, body := a.replyFor(refusedRequest{id: id, rid: req.RID, payload: reg.Payload}, err, a.retryAfter())
		return topic, body, true
	}
	return a.answer(id, req.RID, op, true)
}

func (a *Adapter) retryAfter() int {
	if a.RetryAfter <= 0 {
		return 2
	}
	return int(a.RetryAfter / time.Second)
}

func (a *Adapter) answer(id Identity, rid string, op dps.Operation, register bool) (string, []byte, bool) {
	status := wire.OperationStatus(op, register)
	body, err := wire.Marshal(wire.FromOperationFor(op, register, id.APIVersion))
	if err != nil {
		return a.fail(Identity{}, rid, err)
	}
	retry := 0
	if status == http.StatusAccepted {
		retry = a.retryAfter()
	}
	return ResponseTopic(status, rid, retry), wire.ASCII(body), true
}

func (a *Adapter) fail(id Identity, rid string, err error) (string, []byte, bool) {
	topic, body := a.reply(id, rid, err, a.retryAfter())
	return topic, body, true
}

// reply is the answer to a failed request; a 429 or 503 carries retry.
func (a *Adapter) reply(id Identity, rid string, err error, retry int) (string, []byte) {
	return a.replyFor(refusedRequest{id: id, rid: rid}, err, retry)
}

// replyFor is reply with what is known of the request, for the events feed.
func (a *Adapter) replyFor(q refusedRequest, err error, retry int) (string, []byte) {
	id, rid := q.id, q.rid
	tracking := wire.NewTrackingID()
	status, eb := wire.Error(err, tracking, a.now())
	a.logRefusal(id, err, status, eb.ErrorCode, tracking)
	a.recordRefusal(q, eb, dps.RefusalCause(err))
	body, _ := wire.Marshal(eb)
	if status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
		retry = 0
	}
	return ResponseTopic(status, rid, retry), wire.ASCII(body)
}
