package registration_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/allocation"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/store/sqlite"
)

// TestEventsRecorded: a register that passed authentication is an
// accepted event (the payload as received, the request's origin), then
// its outcome: assigned (hub, device ID, the payload returned) or failed
// (code, reason, cause; disabled too) — with the origin also when the
// operation completed in the background; a refused register is none (the
// transports record refusals).
func TestEventsRecorded(t *testing.T) {
	db := dpstest.NewSQLite(t)
	rec := &dpstest.Recorder{}
	var opIDs sync.Map // registration ID → the operation ID the allocator saw
	custom := allocatorFunc(func(_ context.Context, r dps.AllocationRequest) (dps.Assignment, error) {
		opIDs.Store(r.RegistrationID, r.OperationID)
		if r.RegistrationID == "dev-nohub" {
			return dps.Assignment{}, &dps.AllocationFailure{Code: dps.CodeCustomAllocationNoHub, Message: "no hub for you"}
		}
		return dps.Assignment{Hub: "hub-b.example.net", Payload: json.RawMessage(`{"welcome":true}`)}, nil
	})
	s := newService(t, db, nil, func(o *registration.Options) {
		o.Events = rec
		o.Allocators = map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}, dps.AllocationCustom: custom}
	})
	origin := registration.Origin{Transport: "mqttws", Source: "192.0.2.9:1234", TrackingID: "t-9"}
	put := func(id string, mod func(*dps.Enrollment)) dps.Enrollment {
		e := dpstest.SymmetricKeyEnrollment(id)
		if mod != nil {
			mod(&e)
		}
		return dpstest.MustPutEnrollment(t, db, e)
	}
	regist := func(e dps.Enrollment) dps.Operation {
		t.Helper()
		c := cred(t, e.RegistrationID, string(e.Attestation.SymmetricKey.PrimaryKey))
		op, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: e.RegistrationID, Credential: c,
			Payload: json.RawMessage(`{"fw":"2.0"}`), Origin: origin})
		if err != nil {
			t.Fatal(err)
		}
		return waitFinal(t, s, e.RegistrationID, op.ID, c)
	}
	check := func(e dps.RegistrationEvent, kind dps.EventKind, op dps.Operation) {
		t.Helper()
		if e.Kind != kind || e.RegistrationID != op.RegistrationID || e.OperationID != op.ID || e.Attestation != dps.AttestationSymmetricKey ||
			e.Transport != origin.Transport || e.Source != origin.Source || e.TrackingID != origin.TrackingID {
			t.Errorf("event %+v, want %s of %s with the request's origin", e, kind, op.ID)
		}
	}

	for _, tc := range []struct {
		name string
		mod  func(*dps.Enrollment)
	}{
		{"inline", nil},
		{"background", func(e *dps.Enrollment) { e.AllocationPolicy = dps.AllocationCustom }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := regist(put("dev-"+tc.name, tc.mod))
			ev := rec.Wait(t, 2)
			check(ev[0], dps.EventAccepted, op)
			check(ev[1], dps.EventAssigned, op)
			if string(ev[0].Payload) != `{"fw":"2.0"}` {
				t.Errorf("accepted payload %s, want the device's", ev[0].Payload)
			}
			if ev[1].Hub != op.Result.AssignedHub || ev[1].DeviceID != op.Result.DeviceID || ev[1].Hub == "" {
				t.Errorf("assigned event %+v, want hub %s device %s", ev[1], op.Result.AssignedHub, op.Result.DeviceID)
			}
			if tc.mod != nil {
				if string(ev[1].Payload) != `{"welcome":true}` {
					t.Errorf("assigned payload %s, want the allocation's", ev[1].Payload)
				}
				if id, _ := opIDs.Load(op.RegistrationID); id != op.ID {
					t.Errorf("the allocation request's operation ID %v, want %s", id, op.ID)
				}
			}
		})
	}
	t.Run("failed", func(t *testing.T) {
		op := regist(put("dev-nohub", func(e *dps.Enrollment) { e.AllocationPolicy = dps.AllocationCustom }))
		ev := rec.Wait(t, 2)
		check(ev[1], dps.EventFailed, op)
		if ev[1].Code != dps.CodeCustomAllocationNoHub || ev[1].Reason != "no hub for you" || ev[1].Cause != dps.CauseAllocation {
			t.Errorf("failed event %+v", ev[1])
		}
	})
	t.Run("disabled", func(t *testing.T) {
		op := regist(put("dev-off", func(e *dps.Enrollment) { e.ProvisioningStatus = dps.ProvisioningDisabled }))
		ev := rec.Wait(t, 1)
		check(ev[0], dps.EventFailed, op)
		if ev[0].Cause != dps.CauseDisabled || ev[0].Reason == "" || string(ev[0].Payload) != `{"fw":"2.0"}` {
			t.Errorf("disabled event %+v", ev[0])
		}
	})
	t.Run("refused", func(t *testing.T) {
		_, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: "dev-inline", Credential: dps.Credential{SAS: "SharedAccessSignature sr=x&sig=eA%3D%3D&se=4102444800&skn=registration"}, Origin: origin})
		if dps.KindOf(err) != dps.KindUnauthorized {
			t.Fatalf("err = %v", err)
		}
		time.Sleep(50 * time.Millisecond)
		rec.Wait(t, 0)
	})
}

// noCreate is a store that does not take new operations.
type noCreate struct{ *sqlite.DB }

func (noCreate) CreateOperation(context.Context, dps.Operation) (dps.Operation, error) {
	return dps.Operation{}, &dps.Error{Kind: dps.KindUnavailable, Message: "the store is down"}
}

func (noCreate) CreateOperationWithDevice(context.Context, dps.Operation, dps.HubDevice, *dps.HubDevice) (dps.Operation, error) {
	return dps.Operation{}, &dps.Error{Kind: dps.KindUnavailable, Message: "the store is down"}
}

// TestAcceptedOnlyOnceStored: a register whose operation the store did
// not take (inline or for the background) fails, and is no accepted
// event: it is accepted only once its operation is stored.
func TestAcceptedOnlyOnceStored(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy dps.AllocationPolicy
	}{{"inline", dps.AllocationHashed}, {"background", dps.AllocationCustom}} {
		t.Run(tc.name, func(t *testing.T) {
			db := dpstest.NewSQLite(t)
			rec := &dpstest.Recorder{}
			custom := allocatorFunc(func(context.Context, dps.AllocationRequest) (dps.Assignment, error) {
				return dps.Assignment{Hub: "hub-b.example.net"}, nil
			})
			s := newService(t, db, nil, func(o *registration.Options) {
				o.Events, o.Store = rec, noCreate{db}
				o.Allocators = map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}, dps.AllocationCustom: custom}
			})
			e := dpstest.SymmetricKeyEnrollment("dev-1")
			e.AllocationPolicy = tc.policy
			e = dpstest.MustPutEnrollment(t, db, e)
			c := cred(t, e.RegistrationID, string(e.Attestation.SymmetricKey.PrimaryKey))
			if _, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: "dev-1", Credential: c}); err == nil {
				t.Fatal("a register whose operation was not stored succeeded")
			}
			time.Sleep(50 * time.Millisecond)
			rec.Wait(t, 0)
		})
	}
}
