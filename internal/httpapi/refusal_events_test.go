package httpapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/throttle"
)

// TestRefusalsRecorded: every refused device request over HTTPS is one
// refused event — its registration ID, the operation polled, the
// attestation the credential is for, transport, source address, the
// tracking ID the device got, the code, the message and its cause, and the
// payload of a register — whether the registration service refused it,
// throttling did or a fault rule answered; a TPM challenge is none. A
// request let through carries its origin to the service.
func TestRefusalsRecorded(t *testing.T) {
	r := fake()
	var origin registration.Origin
	r.register = func(_ context.Context, req registration.Request) (dps.Operation, error) {
		origin = req.Origin
		switch req.RegistrationID {
		case "tpm-dev":
			return dps.Operation{}, &dps.TPMChallenge{AuthenticationKey: "a2V5", KeyName: "k"}
		case "ok-dev":
			return dps.Operation{ID: "1.a.b", RegistrationID: req.RegistrationID, Status: dps.StatusAssigning}, nil
		}
		return dps.Operation{}, &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized, Message: "the SAS token does not match"}
	}
	r.operation = func(context.Context, string, string, string, dps.Credential) (dps.Operation, error) {
		return dps.Operation{}, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNotFound, Message: "operation not found"}
	}
	inj, err := faults.New(faults.Options{}, faults.Rule{Name: "boom", Match: faults.Match{RegistrationID: "faulty-*"}, Action: faults.Action{Status: 503, ErrorCode: dps.CodeUnavailable}})
	if err != nil {
		t.Fatal(err)
	}
	rec := &dpstest.Recorder{}
	srv := httptest.NewTLSServer(httpapi.New(httpapi.Options{Registrar: r, Events: rec, Faults: inj,
		Throttle: throttle.New(throttle.Options{RegistersPer10s: 1})}))
	defer srv.Close()
	send := func(method, path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "SharedAccessSignature sr=x&sig=c2ln&se=1900000000&skn=registration")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	check := func(what string, resp *http.Response, want dps.RegistrationEvent) {
		t.Helper()
		got := rec.Take()
		if len(got) != 1 {
			t.Fatalf("%s: %d events recorded, want 1: %+v", what, len(got), got)
		}
		e := got[0]
		if !strings.HasPrefix(e.Source, "127.0.0.1:") {
			t.Errorf("%s: source %q, want the client's address", what, e.Source)
		}
		if e.TrackingID == "" || e.TrackingID != resp.Header.Get("x-ms-request-id") {
			t.Errorf("%s: tracking ID %q, want the answer's %q", what, e.TrackingID, resp.Header.Get("x-ms-request-id"))
		}
		e.Source, e.TrackingID = "", ""
		want.Kind, want.Transport = dps.EventRefused, "https"
		if string(e.Payload) != string(want.Payload) {
			t.Errorf("%s: payload %s, want %s", what, e.Payload, want.Payload)
		}
		e.Payload, want.Payload = nil, nil
		if !reflect.DeepEqual(e, want) {
			t.Errorf("%s: event\n%+v\nwant\n%+v", what, e, want)
		}
	}
	resp := send("PUT", "/0ne00000001/registrations/dev-7/register", `{"registrationId":"dev-7","payload":{"fw":"1.2"}}`)
	check("refused by the service", resp, dps.RegistrationEvent{RegistrationID: "dev-7", Attestation: dps.AttestationSymmetricKey,
		Code: dps.CodeUnauthorized, Reason: "the SAS token does not match", Cause: dps.CauseAuthentication, Payload: json.RawMessage(`{"fw":"1.2"}`)})
	resp = send("PUT", "/0ne00000001/registrations/dev-7/register", `{}`)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second register: HTTP %d, want 429", resp.StatusCode)
	}
	check("throttled", resp, dps.RegistrationEvent{RegistrationID: "dev-7", Code: dps.CodeThrottled, Reason: throttle.Message, Cause: dps.CauseThrottled})
	resp = send("GET", "/0ne00000001/registrations/dev-8/operations/1.x.y", "")
	check("poll refused", resp, dps.RegistrationEvent{RegistrationID: "dev-8", OperationID: "1.x.y",
		Code: dps.CodeNotFound, Reason: "operation not found", Cause: dps.CauseNotFound})
	resp = send("PUT", "/0ne00000001/registrations/faulty-1/register", `{}`)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("faulty register: HTTP %d, want 503", resp.StatusCode)
	}
	check("fault injected", resp, dps.RegistrationEvent{RegistrationID: "faulty-1", Code: dps.CodeUnavailable, Reason: "Fault injected by dps (status 503).", Cause: dps.CauseFault})
	resp = send("PUT", "/0ne00000001/registrations/bad-body/register", `{"registrationId":"other"}`)
	check("bad request", resp, dps.RegistrationEvent{RegistrationID: "bad-body", Code: dps.CodeInvalid,
		Reason: "registrationId in the body does not match the registration ID in the path", Cause: dps.CauseBadRequest})

	if resp := send("PUT", "/0ne00000001/registrations/tpm-dev/register", `{}`); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("TPM challenge: HTTP %d", resp.StatusCode)
	}
	if got := rec.Take(); len(got) != 0 {
		t.Errorf("a TPM challenge was recorded: %+v", got)
	}
	resp = send("PUT", "/0ne00000001/registrations/ok-dev/register", `{}`)
	if resp.StatusCode != http.StatusAccepted || len(rec.Take()) != 0 {
		t.Fatalf("accepted register: HTTP %d (the service records what it accepts, not the transport)", resp.StatusCode)
	}
	if origin.Transport != "https" || !strings.HasPrefix(origin.Source, "127.0.0.1:") || origin.TrackingID != resp.Header.Get("x-ms-request-id") {
		t.Errorf("origin %+v, want https, the client's address and the answer's tracking ID %s", origin, resp.Header.Get("x-ms-request-id"))
	}
}

// TestHubDeviceRefusalLogged: a device refused on a built-in hub's HTTPS
// routes (telemetry, C2D receive and settle) is one info line with the
// reason, hub, device ID, transport, source address and tracking ID, and
// never the token's signature.
func TestHubDeviceRefusalLogged(t *testing.T) {
	f := newHubFixture(t, nil)
	var logs lockedBuf
	f.handler = httpapi.New(httpapi.Options{Registrar: fake(), Hub: f.hub, Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	ts := f.server(t)
	bad := f.deviceToken("dev-1", randomKey())
	_, sig, _ := strings.Cut(bad, "sig=")
	sig, _, _ = strings.Cut(sig, "&")
	for _, tt := range []struct{ name, method, path string }{
		{"telemetry", "POST", "/devices/dev-1/messages/events?api-version=2021-04-12"},
		{"c2d receive", "GET", "/devices/dev-1/messages/deviceBound?api-version=2021-04-12"},
		{"c2d settle", "DELETE", "/devices/dev-1/messages/deviceBound/lock-1?api-version=2021-04-12"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(logs.String())
			a := do(t, ts.Client(), ts, tt.method, tt.path, map[string]string{"Authorization": bad}, []byte("x"))
			if a.status != http.StatusUnauthorized {
				t.Fatalf("HTTP %d %s", a.status, a.body)
			}
			var rec map[string]any
			for l := range strings.Lines(logs.String()[before:]) {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "device refused" {
					rec = m
				}
			}
			if rec == nil {
				t.Fatalf("no info line \"device refused\":\n%s", logs.String()[before:])
			}
			for k, v := range map[string]any{"level": "INFO", "hub": hubHost, "device_id": "dev-1", "transport": "https",
				"tracking_id": a.header.Get("x-ms-request-id"), "status": float64(401)} {
				if rec[k] != v {
					t.Errorf("%s = %v, want %v (line %v)", k, rec[k], v, rec)
				}
			}
			if reason, _ := rec["reason"].(string); reason == "" {
				t.Errorf("no reason: %v", rec)
			}
			if src, _ := rec["source"].(string); !strings.HasPrefix(src, "127.0.0.1:") {
				t.Errorf("source = %v", rec["source"])
			}
		})
	}
	if strings.Contains(logs.String(), sig) || strings.Contains(logs.String(), "SharedAccessSignature") {
		t.Errorf("the log shows the token:\n%s", logs.String())
	}
}
