package wire

import (
	"errors"
	"net/http"
	"testing"
	"time"

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
