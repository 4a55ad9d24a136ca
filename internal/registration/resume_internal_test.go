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
// allocation whose group cannot be read now (a store error) is not queued
// at all, rather than in the default lane, where its webhook call would
// escape the webhook's bound; it is queued in its webhook's lane once the
// group reads again. One whose group is gone goes to the default lane (to
// fail with 404201).
func TestResumeWaitsOutTransientRematchFailures(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	g := dpstest.SymmetricKeyGroup("hook-grp")
	g.AllocationPolicy = dps.AllocationCustom
	g.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/allocate?code=k", APIVersion: "2021-10-01"}
	dpstest.MustPutGroup(t, db, g)
	store := &flakyGroups{Store: db}
	s := New(Options{IDScope: "0ne0000TEST", Store: store})
	// Lanes that start nothing: where each operation waits stays visible.
	s.lanes = newLanes(4, 4, 16, func(laneItem, func()) {})
	lane := func(id string) (string, bool) {
		s.lanes.mu.Lock()
		defer s.lanes.mu.Unlock()
		ln, ok := s.lanes.queued[id]
		if !ok {
			return "", false
		}
		return ln.key, true
	}
	now := time.Now().UTC()
	op := dps.Operation{ID: "op-flaky", RegistrationID: "dev-1", EnrollmentGroupID: "hook-grp", Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Status: dps.StatusAssigning, Created: now, Updated: now}

	store.fail.Store(true)
	if err := s.resume(ctx, op); dps.KindOf(err) != dps.KindUnavailable {
		t.Errorf("resume during an outage = %v, want the store's error", err)
	}
	if key, queued := lane(op.ID); queued {
		t.Fatalf("resumed during an outage into lane %q, want left for the next sweep", key)
	}

	store.fail.Store(false)
	if err := s.resume(ctx, op); err != nil {
		t.Fatal(err)
	}
	if key, _ := lane(op.ID); key != "webhook https://hook.example/allocate" {
		t.Errorf("resumed into lane %q, want the webhook's", key)
	}

	gone := op
	gone.ID, gone.EnrollmentGroupID = "op-gone", "deleted-grp"
	if err := s.resume(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if key, queued := lane(gone.ID); !queued || key != "" {
		t.Errorf("operation of a deleted group: queued %v in lane %q, want the default lane", queued, key)
	}
}

// TestUntrackKeepsOperationsInLanes: the sweep's listing may leave out an
// operation this node is still working on (PostgreSQL omits operations
// under a lease, this node's own included); the device's operation stays
// tracked, so registering again meanwhile still answers it.
func TestUntrackKeepsOperationsInLanes(t *testing.T) {
	s := New(Options{IDScope: "0ne0000TEST", Store: dpstest.NewSQLite(t), SingleNode: true})
	s.lanes = newLanes(4, 4, 16, func(laneItem, func()) {}) // started, never finished
	op := dps.Operation{ID: "op-leased", RegistrationID: "dev-1", Status: dps.StatusAssigning, Created: time.Now().UTC()}
	s.track(op, true)
	s.enqueue(op, "")
	s.untrackFinished(time.Now().Add(time.Second), nil) // listed after tracking, without the operation
	s.mu.Lock()
	got := s.devices[dps.FoldID("dev-1")].id
	s.mu.Unlock()
	if got != op.ID {
		t.Errorf("tracked operation of dev-1 = %q after a sweep that did not list it, want %q (still in its lane)", got, op.ID)
	}
}
