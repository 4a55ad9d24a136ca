package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/registration"
)

// registrar is a function-field fake of httpapi.Registrar.
type registrar struct {
	register  func(context.Context, registration.Request) (dps.Operation, error)
	operation func(ctx context.Context, scope, regID, opID string, c dps.Credential) (dps.Operation, error)
	lookup    func(ctx context.Context, scope, regID string, c dps.Credential) (dps.Registration, error)
}

func (r registrar) Register(ctx context.Context, req registration.Request) (dps.Operation, error) {
	return r.register(ctx, req)
}
func (r registrar) Operation(ctx context.Context, scope, regID, opID string, c dps.Credential) (dps.Operation, error) {
	return r.operation(ctx, scope, regID, opID, c)
}
func (r registrar) Lookup(ctx context.Context, scope, regID string, c dps.Credential) (dps.Registration, error) {
	return r.lookup(ctx, scope, regID, c)
}

func fake() registrar {
	return registrar{
		register: func(_ context.Context, req registration.Request) (dps.Operation, error) {
			if req.Credential.SAS == "" {
				return dps.Operation{}, &dps.Error{Kind: dps.KindUnauthorized, Code: 401002, Message: "no"}
			}
			return dps.Operation{ID: "1.a.b", RegistrationID: req.RegistrationID, Status: dps.StatusAssigning, Payload: req.Payload}, nil
		},
		operation: func(_ context.Context, _, regID, opID string, _ dps.Credential) (dps.Operation, error) {
			now := time.Date(2026, 1, 2, 3, 4, 5, 123456700, time.UTC)
			return dps.Operation{ID: opID, RegistrationID: regID, Status: dps.StatusAssigned, Result: &dps.Registration{
				RegistrationID: regID, DeviceID: regID, AssignedHub: "h.example.net", Status: dps.StatusAssigned,
				Substatus: dps.SubstatusInitialAssignment, Created: now, Updated: now, ETag: "ZXRhZw==", Payload: json.RawMessage(`{"k":[1]}`),
			}}, nil
		},
		lookup: func(_ context.Context, _, regID string, _ dps.Credential) (dps.Registration, error) {
			return dps.Registration{}, &dps.Error{Kind: dps.KindNotFound, Code: 404201, Message: "registration not found"}
		},
	}
}

func TestRoutesAndShapes(t *testing.T) {
	var got registration.Request
	r := fake()
	inner := r.register
	r.register = func(ctx context.Context, req registration.Request) (dps.Operation, error) {
		got = req
		return inner(ctx, req)
	}
	h := httpapi.New(httpapi.Options{Registrar: r})
	tests := []struct {
		name, method, path, body, auth string
		status                         int
		want                           string
	}{
		{"ok/register", "PUT", "/0ne00000001/registrations/dev/register?api-version=2019-03-31", `{"registrationId":"dev","payload":{"m":1}}`, "sas", 202, `{"operationId":"1.a.b","status":"assigning"}`},
		{"ok/register-encoded-and-upper", "PUT", "/0ne00000001/Registrations/dev%3A1/REGISTER/", `{"registrationId":"DEV:1"}`, "sas", 202, `{"operationId":"1.a.b","status":"assigning"}`},
		{"ok/register-empty-body", "PUT", "/0ne00000001/registrations/dev/register", ``, "sas", 202, `{"operationId":"1.a.b","status":"assigning"}`},
		{"ok/poll-assigned", "GET", "/0ne00000001/registrations/dev/operations/1.x.y", `{}`, "sas", 200,
			`{"operationId":"1.x.y","status":"assigned","registrationState":{"registrationId":"dev","createdDateTimeUtc":"2026-01-02T03:04:05.1234567Z","assignedHub":"h.example.net","deviceId":"dev","status":"assigned","substatus":"initialAssignment","lastUpdatedDateTimeUtc":"2026-01-02T03:04:05.1234567Z","etag":"ZXRhZw==","payload":{"k":[1]}}}`},
		{"fail/unauthorized", "PUT", "/0ne00000001/registrations/dev/register", `{}`, "", 401, `"errorCode":401002`},
		{"fail/lookup-not-found", "POST", "/0ne00000001/registrations/dev", `{}`, "sas", 404, `"errorCode":404201`},
		{"fail/lookup-with-csr", "POST", "/0ne00000001/registrations/dev", `{"csr":"abc"}`, "sas", 400, `"errorCode":400004`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "https://dps"+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
				t.Fatalf("got %d %s\nwant %d containing %s", rec.Code, rec.Body, tt.status, tt.want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type = %q", ct)
			}
			if rec.Code == 202 && rec.Header()["retry-after"] == nil {
				t.Errorf("no lower-case retry-after header: %v", rec.Header())
			}
		})
	}
	if got.RegistrationID != "dev:1" && got.RegistrationID != "dev" {
		t.Errorf("registration ID from path = %q", got.RegistrationID)
	}
}

func TestPayloadPassedVerbatim(t *testing.T) {
	var got json.RawMessage
	r := fake()
	r.register = func(_ context.Context, req registration.Request) (dps.Operation, error) {
		got = req.Payload
		return dps.Operation{ID: "1", Status: dps.StatusAssigning}, nil
	}
	h := httpapi.New(httpapi.Options{Registrar: r})
	payload := `{"nested":{"a":[1,2.5,"x",null,true],"b":{"c":"\u00e9"}},"big":12345678901234567890}`
	req := httptest.NewRequest("PUT", "/0ne00000001/registrations/dev/register", strings.NewReader(`{"registrationId":"dev","payload":`+payload+`}`))
	req.Header.Set("Authorization", "x")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if string(got) != payload {
		t.Fatalf("payload = %s\nwant %s", got, payload)
	}
}

// FuzzDeviceRequest sends arbitrary paths and bodies through the handler:
// it must never panic, and every answer must be JSON.
func FuzzDeviceRequest(f *testing.F) {
	f.Add("PUT", "/0ne00000001/registrations/dev/register", []byte(`{"registrationId":"dev","payload":{"a":1}}`))
	f.Add("GET", "/0ne00000001/registrations/dev/operations/1.2.3", []byte(`{}`))
	f.Add("POST", "/0ne00000001/registrations/dev", []byte(`{"csr":""}`))
	f.Add("PUT", "/%zz/registrations/dev/register", []byte(`[`))
	h := httpapi.New(httpapi.Options{Registrar: fake()})
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequest(method, "https://dps"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", "sas")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Body.Len() > 0 && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s → %d non-JSON body %q", method, path, rec.Code, rec.Body.String())
		}
		if rec.Code == 0 || rec.Code >= 600 {
			t.Fatalf("status %d", rec.Code)
		}
	})
}

func BenchmarkRegisterHandler(b *testing.B) {
	h := httpapi.New(httpapi.Options{Registrar: fake()})
	body := []byte(`{"registrationId":"dev","payload":{"model":"thermostat","fw":"1.2.3"}}`)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("PUT", "/0ne00000001/registrations/dev/register?api-version=2021-06-01", bytes.NewReader(body))
		req.Header.Set("Authorization", "sas")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 202 {
			b.Fatal(rec.Code)
		}
	}
}

func BenchmarkPollHandler(b *testing.B) {
	h := httpapi.New(httpapi.Options{Registrar: fake()})
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest("GET", "/0ne00000001/registrations/dev/operations/1.x.y", nil)
		req.Header.Set("Authorization", "sas")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
