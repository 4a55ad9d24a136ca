package wire

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/opendps/dps"
)

func TestTablesCoverEveryKind(t *testing.T) {
	for _, k := range dps.Kinds() {
		if _, ok := statusOf[k]; !ok {
			t.Errorf("statusOf has no entry for %v", k)
		}
		code, ok := codeOf[k]
		if !ok {
			t.Errorf("codeOf has no entry for %v", k)
		}
		if code/1000 != statusOf[k] {
			t.Errorf("%v: code %d does not start with status %d", k, code, statusOf[k])
		}
	}
}

func TestErrorHidesInternalCauses(t *testing.T) {
	status, body := Error(errors.New("disk on fire at /var/secret"), "tid", time.Unix(0, 0))
	if status != http.StatusInternalServerError || body.ErrorCode != 500001 || body.Message != "Internal server error." {
		t.Fatalf("got %d %+v", status, body)
	}
	status, body = Error(&dps.Error{Kind: dps.KindUnauthorized, Code: 401002, Message: "bad"}, "tid", time.Unix(0, 0))
	if status != 401 || body.ErrorCode != 401002 || body.Message != "bad" || body.TimestampUtc != "1970-01-01T00:00:00.0000000Z" {
		t.Fatalf("got %d %+v", status, body)
	}
}

func TestFromOperation(t *testing.T) {
	op := dps.Operation{ID: "1", RegistrationID: "d", Status: dps.StatusAssigning}
	if got := FromOperation(op, true); got.RegistrationState != nil {
		t.Errorf("register answer carries registrationState: %+v", got)
	}
	got := FromOperation(op, false)
	if got.RegistrationState == nil || got.RegistrationState.RegistrationID != "d" || got.RegistrationState.Status != dps.StatusAssigning {
		t.Errorf("assigning poll = %+v", got)
	}
	op.Status = dps.StatusFailed
	op.Result = &dps.Registration{RegistrationID: "d", Status: dps.StatusFailed, ErrorCode: 400207, ErrorMessage: "x", AssignedHub: "old-hub"}
	got = FromOperation(op, false)
	if rs := got.RegistrationState; rs.ErrorCode != 400207 || rs.ErrorMessage != "x" || rs.AssignedHub != "" {
		t.Errorf("failed poll = %+v", rs)
	}
}

func TestASCII(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":"plain"}`, `{"a":"plain"}`},
		{`{"a":"café ☃"}`, `{"a":"caf\u00e9 \u2603"}`},
		{`{"😀":"x"}`, `{"\ud83d\ude00":"x"}`},
		{"{\"a\":\"\xff\"}", `{"a":"\ufffd"}`},
	}
	for _, tt := range tests {
		got := ASCII([]byte(tt.in))
		if string(got) != tt.want {
			t.Errorf("ASCII(%q) = %q, want %q", tt.in, got, tt.want)
		}
		var a, b any
		if json.Unmarshal([]byte(tt.in), &a) == nil {
			json.Unmarshal(got, &b)
			if !reflect.DeepEqual(a, b) && tt.in[len(tt.in)-3] != '\xff' {
				t.Errorf("ASCII changed the JSON value of %q", tt.in)
			}
		}
	}
}

func FuzzASCII(f *testing.F) {
	f.Add([]byte(`{"a":"café","b":[1,"😀"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) || !json.Valid(b) {
			return
		}
		out := ASCII(b)
		for _, c := range out {
			if c >= 0x80 {
				t.Fatalf("non-ASCII byte in %q", out)
			}
		}
		var x, y any
		json.Unmarshal(b, &x)
		if err := json.Unmarshal(out, &y); err != nil || !reflect.DeepEqual(x, y) {
			t.Fatalf("ASCII(%q) = %q changes the value (%v)", b, out, err)
		}
	})
}

func BenchmarkEncodeAssigned(b *testing.B) {
	now := time.Now()
	op := dps.Operation{ID: "1.abc.def", RegistrationID: "dev-1", Status: dps.StatusAssigned, Result: &dps.Registration{
		RegistrationID: "dev-1", DeviceID: "dev-1", AssignedHub: "hub.example.net", Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment,
		Created: now, Updated: now, ETag: "ZXRhZw==", Payload: json.RawMessage(`{"model":"t1","fw":"1.2.3"}`)}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(FromOperation(op, false)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRegister(b *testing.B) {
	body := []byte(`{"registrationId":"dev-1","payload":{"model":"t1","fw":{"version":"1.2.3","features":["a","b"]}}}`)
	b.ReportAllocs()
	for b.Loop() {
		var r DeviceRegistration
		if err := json.Unmarshal(body, &r); err != nil {
			b.Fatal(err)
		}
	}
}
