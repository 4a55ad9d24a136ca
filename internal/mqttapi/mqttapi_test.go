package mqttapi_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/registration"
)

func TestParseUsername(t *testing.T) {
	tests := []struct {
		in, scope, id string
		ok            bool
	}{
		{"0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot-provisioning-device%2F1.9.1", "0ne00000001", "dev-1", true},
		{"0ne00000001/registrations/dev-1/api-version=2019-03-31", "0ne00000001", "dev-1", true},
		{"0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=2019-03-31", "0ne00000001", "dev-1", true},
		{"0ne00000001/registrations/dev-1", "0ne00000001", "dev-1", true},
		{"0ne00000001/registrations/", "", "", false},
		{"0ne00000001/devices/dev-1/api-version=1", "", "", false},
		{"/registrations/dev-1", "", "", false},
		{"0ne00000001/registrations/a/b/api-version=1", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		scope, id, err := mqttapi.ParseUsername(tt.in)
		if (err == nil) != tt.ok || scope != tt.scope || id != tt.id {
			t.Errorf("ParseUsername(%q) = %q, %q, %v", tt.in, scope, id, err)
		}
	}
}

func TestParseTopic(t *testing.T) {
	tests := []struct {
		in       string
		register bool
		rid, op  string
		ok       bool
	}{
		{"$dps/registrations/PUT/iotdps-register/?$rid=1", true, "1", "", true},
		{"$dps/registrations/PUT/iotdps-register/?$rid=5f0a9e3c-1b2d-4c5e-8f9a-0b1c2d3e4f5a", true, "5f0a9e3c-1b2d-4c5e-8f9a-0b1c2d3e4f5a", "", true},
		{"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=42&operationId=4.abc.def", false, "42", "4.abc.def", true},
		{"$dps/registrations/GET/iotdps-get-operationstatus/?operationId=x&$rid=a%20b", false, "a%20b", "x", true},
		{"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1", false, "1", "", false},
		{"$dps/registrations/PUT/iotdps-register/?rid=1", true, "", "", false},
		{"devices/x/messages/events/", false, "", "", false},
	}
	for _, tt := range tests {
		r, err := mqttapi.ParseTopic(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseTopic(%q) err = %v", tt.in, err)
			continue
		}
		if tt.ok && (r.Register != tt.register || r.RID != tt.rid || r.OperationID != tt.op) {
			t.Errorf("ParseTopic(%q) = %+v", tt.in, r)
		}
	}
}

type fakeRegistrar struct {
	mu  sync.Mutex
	got registration.Request
	big atomic.Int64 // polls of operation "big" answered
}

// Authenticate accepts every password but these: "bad" is a wrong
// credential, "down" an outage of the store, "slow" a timeout.
func (f *fakeRegistrar) Authenticate(_ context.Context, _, _ string, cred dps.Credential) error {
	switch cred.SAS {
	case "bad":
		return &dps.Error{Kind: dps.KindUnauthorized, Code: 401002, Message: "no"}
	case "down":
		return &dps.Error{Kind: dps.KindUnavailable, Message: "the database is unavailable"}
	case "slow":
		return context.DeadlineExceeded
	}
	return nil
}

// Register takes 2 seconds (or until ctx ends) for the payload "slow".
func (f *fakeRegistrar) Register(ctx context.Context, req registration.Request) (dps.Operation, error) {
	f.mu.Lock()
	f.got = req
	f.mu.Unlock()
	if string(req.Payload) == `"slow"` {
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return dps.Operation{}, ctx.Err()
		}
	}
	if req.Credential.SAS == "bad" {
		return dps.Operation{}, &dps.Error{Kind: dps.KindUnauthorized, Code: 401002, Message: "no"}
	}
	return dps.Operation{ID: "1.a.b", RegistrationID: req.RegistrationID, Status: dps.StatusAssigning}, nil
}

// bigPayload is the device payload of operation "big": its answers fill a
// connection's buffers quickly.
var bigPayload = json.RawMessage(`"` + strings.Repeat("x", 256*1024) + `"`)

// Operation knows the operations "1.a.b" and "big" (assigned, with a 256 KB
// payload).
func (f *fakeRegistrar) Operation(_ context.Context, _, regID, opID string, _ dps.Credential) (dps.Operation, error) {
	if opID != "1.a.b" && opID != "big" {
		return dps.Operation{}, &dps.Error{Kind: dps.KindNotFound, Code: 404201, Message: "operation not found"}
	}
	op := dps.Operation{ID: opID, RegistrationID: regID, Status: dps.StatusAssigned, Result: &dps.Registration{
		RegistrationID: regID, DeviceID: regID, AssignedHub: "h.example.net", Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment}}
	if opID == "big" {
		f.big.Add(1)
		op.Result.Payload = bigPayload
	}
	return op, nil
}

func TestHandle(t *testing.T) {
	id := mqttapi.Identity{IDScope: "0ne00000001", RegistrationID: "dev-1", Credential: dps.Credential{SAS: "good"}}
	reg := "$dps/registrations/PUT/iotdps-register/?$rid="
	poll := "$dps/registrations/GET/iotdps-get-operationstatus/?$rid="
	tests := []struct {
		name, topic, payload string
		wantTopic, wantBody  string
		wantPayload          string
	}{
		{"ok/empty-payload (C#)", reg + "7", "", "$dps/registrations/res/202/?$rid=7&retry-after=3", `{"operationId":"1.a.b","status":"assigning"}`, ""},
		{"ok/payload-only (C#)", reg + "8", `{"payload":{"m":[1,{"x":null}]}}`, "$dps/registrations/res/202/?$rid=8&retry-after=3", `"status":"assigning"`, `{"m":[1,{"x":null}]}`},
		{"ok/full (Node)", reg + "abc-DEF", `{"registrationId":"DEV-1","payload":{"a":1}}`, "$dps/registrations/res/202/?$rid=abc-DEF&retry-after=3", `"operationId":"1.a.b"`, `{"a":1}`},
		{"ok/poll-space (Node)", poll + "r%2F1&operationId=1.a.b", " ", "$dps/registrations/res/200/?$rid=r%2F1", `"assignedHub":"h.example.net"`, ""},
		{"ok/poll-json (C)", poll + "9&operationId=1.a.b", `{"registrationId":"dev-1"}`, "$dps/registrations/res/200/?$rid=9", `"registrationState":{"registrationId":"dev-1"`, ""},
		{"fail/unknown-operation", poll + "9&operationId=nope", "", "$dps/registrations/res/404/?$rid=9", `"errorCode":404201`, ""},
		{"fail/bad-json", reg + "1", `{"registrationId":`, "$dps/registrations/res/400/?$rid=1", `"errorCode":400004`, ""},
		{"fail/other-device", reg + "1", `{"registrationId":"dev-2"}`, "$dps/registrations/res/400/?$rid=1", `"errorCode":400004`, ""},
		{"fail/tpm", reg + "1", `{"registrationId":"dev-1","tpm":{"endorsementKey":"AAAA"}}`, "$dps/registrations/res/400/?$rid=1", `not supported over MQTT`, ""},
		{"fail/too-large", reg + "1", `{"payload":"` + strings.Repeat("x", 100*1024) + `"}`, "$dps/registrations/res/413/?$rid=1", `"errorCode":413001`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeRegistrar{}
			a := &mqttapi.Adapter{Registrar: f, RetryAfter: 3e9}
			topic, body, ok := a.Handle(context.Background(), id, tt.topic, []byte(tt.payload))
			if !ok || topic != tt.wantTopic || !strings.Contains(string(body), tt.wantBody) || !json.Valid(body) {
				t.Fatalf("Handle = %q %s %v\nwant %q containing %s", topic, body, ok, tt.wantTopic, tt.wantBody)
			}
			if tt.wantPayload != "" && string(f.got.Payload) != tt.wantPayload {
				t.Errorf("payload passed = %s, want %s", f.got.Payload, tt.wantPayload)
			}
			if f.got.RegistrationID != "" && f.got.RegistrationID != "dev-1" {
				t.Errorf("registration ID = %q, want the connection's", f.got.RegistrationID)
			}
		})
	}
	a := &mqttapi.Adapter{Registrar: &fakeRegistrar{}}
	if _, _, ok := a.Handle(context.Background(), id, "$dps/registrations/PUT/iotdps-register/", nil); ok {
		t.Errorf("a request without $rid must not be answered")
	}
	bad := id
	bad.Credential.SAS = "bad"
	if topic, _, _ := a.Handle(context.Background(), bad, reg+"5", nil); topic != "$dps/registrations/res/401/?$rid=5" {
		t.Errorf("unauthorized topic = %q", topic)
	}
}

func FuzzParseTopic(f *testing.F) {
	f.Add("$dps/registrations/PUT/iotdps-register/?$rid=1")
	f.Add("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=42&operationId=4.abc.def")
	f.Add("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=&operationId=&&==")
	f.Fuzz(func(t *testing.T, topic string) {
		r, err := mqttapi.ParseTopic(topic)
		if err != nil {
			return
		}
		if !strings.Contains(topic, "$rid="+r.RID) {
			t.Fatalf("$rid %q is not the bytes of %q", r.RID, topic)
		}
		rt := mqttapi.ResponseTopic(200, r.RID, 0)
		if !strings.HasPrefix(rt, "$dps/registrations/res/200/?$rid=") {
			t.Fatalf("response topic %q", rt)
		}
	})
}

func FuzzParseUsername(f *testing.F) {
	f.Add("0ne00000001/registrations/dev-1/api-version=2019-03-31&ClientVersion=x")
	f.Add("a/registrations/b")
	f.Fuzz(func(t *testing.T, u string) {
		scope, id, err := mqttapi.ParseUsername(u)
		if err != nil {
			return
		}
		if scope == "" || id == "" || strings.Contains(id, "/") || !strings.HasPrefix(u, scope+"/registrations/"+id) {
			t.Fatalf("ParseUsername(%q) = %q, %q", u, scope, id)
		}
	})
}

func FuzzHandle(f *testing.F) {
	f.Add("$dps/registrations/PUT/iotdps-register/?$rid=1", []byte(`{"payload":{}}`))
	f.Add("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=1&operationId=1.a.b", []byte(" "))
	id := mqttapi.Identity{IDScope: "0ne00000001", RegistrationID: "dev-1"}
	a := &mqttapi.Adapter{Registrar: &fakeRegistrar{}}
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		rt, body, ok := a.Handle(context.Background(), id, topic, payload)
		if ok && (!strings.HasPrefix(rt, "$dps/registrations/res/") || !json.Valid(body)) {
			t.Fatalf("Handle(%q) = %q %q", topic, rt, body)
		}
	})
}
