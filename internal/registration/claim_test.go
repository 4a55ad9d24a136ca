package registration_test

import (
	"context"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/registration"
)

// TestRegisterAgainUnderAnotherEnrollment: a device whose operation is in
// flight but that now matches another enrollment (its individual
// enrollment was deleted, a group accepts it) starts a new operation of
// that enrollment rather than being answered with the one in flight.
func TestRegisterAgainUnderAnotherEnrollment(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	g := newGate(t)
	s := newService(t, db, nil, func(o *registration.Options) { o.Allocators[dps.AllocationCustom] = g })
	e := dpstest.MustPutEnrollment(t, db, customEnrollment("moved-dev", "https://hook.example/hang"))
	first := start(t, s, "moved-dev", cred(t, "moved-dev", string(e.Attestation.SymmetricKey.PrimaryKey)))
	<-g.started // in flight, and hangs
	if err := db.DeleteEnrollment(ctx, "moved-dev", ""); err != nil {
		t.Fatal(err)
	}
	grp := dpstest.MustPutGroup(t, db, customGroup("moved-grp", "https://hook.example/hang"))
	next := start(t, s, "moved-dev", groupCred(t, grp, "moved-dev"))
	if next.ID == first.ID || next.EnrollmentGroupID != "moved-grp" {
		t.Errorf("register under a group while the individual enrollment's operation is in flight = %s of %q, want a new operation of moved-grp (not %s)", next.ID, next.EnrollmentGroupID, first.ID)
	}
}
