package registration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
)

// flakyGroups is a store whose group reads fail as unavailable while fail
// is set.
type flakyGroups struct {
	Store
	fail atomic.Bool
}

func (f *flakyGroups) Group(ctx context.Context, id string) (dps.Group, error) {
	if f.fail.Load() {
		return dps.Group{}, &dps.Error{Kind: dps.KindUnavailable, Code: 503001, Message: "store unavailable"}
	}
	return f.Store.Group(ctx, id)
}

// TestResumeWaitsOutTransientRematchFailures: an unfinished custom
// allocation whose group cannot be read now (a store error) gets no lane
// at all (the engine leaves it for the next sweep: engine's
// TestResumeLeavesLaneErrorsForTheSweep), rather than the default lane,
// where its webhook call would escape the webhook's bound; it gets its
// webhook's lane once the group reads again. One whose group is gone goes
// to the default lane (to fail with 404201).
func TestResumeWaitsOutTransientRematchFailures(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	g := dpstest.SymmetricKeyGroup("hook-grp")
	g.AllocationPolicy = dps.AllocationCustom
	g.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/allocate?code=k", APIVersion: "2021-10-01"}
	dpstest.MustPutGroup(t, db, g)
	store := &flakyGroups{Store: db}
	w := work{New(Options{IDScope: "0ne0000TEST", Store: store})}
	now := time.Now().UTC()
	op := dps.Operation{ID: "op-flaky", RegistrationID: "dev-1", EnrollmentGroupID: "hook-grp", Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Status: dps.StatusAssigning, Created: now, Updated: now}

	store.fail.Store(true)
	if key, err := w.Lane(ctx, op); dps.KindOf(err) != dps.KindUnavailable {
		t.Errorf("lane during an outage = %q, %v; want the store's error (left for the next sweep)", key, err)
	}

	store.fail.Store(false)
	key, err := w.Lane(ctx, op)
	if err != nil {
		t.Fatal(err)
	}
	if key != "webhook https://hook.example/allocate" {
		t.Errorf("resumed into lane %q, want the webhook's", key)
	}

	gone := op
	gone.ID, gone.EnrollmentGroupID = "op-gone", "deleted-grp"
	if key, err := w.Lane(ctx, gone); err != nil || key != "" {
		t.Errorf("operation of a deleted group: lane %q, %v; want the default lane", key, err)
	}
}
