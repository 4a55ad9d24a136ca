// Package storetest is the conformance suite every store passes: SQLite on
// every `go test ./...`, PostgreSQL in the same run (on a throwaway
// cluster). Each subtest gets a fresh, isolated store.
package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/enrollment"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/issuance"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/tpmattest"
)

// Store is the full surface a store provides: the union of its consumers' needs.
type Store interface {
	registration.Store
	tpmattest.Store // the TPM challenges
	enrollment.Store
	enrollment.CAStore
	builtin.Store
	issuance.Store
	Meta(ctx context.Context, key, value string) (string, error)
	DeleteOperationsBefore(ctx context.Context, t time.Time) (int64, error)
	// GroupsVersion changes whenever any group changes, through any handle.
	GroupsVersion(ctx context.Context) (int64, error)
	// CheckWrite reports whether the store takes writes (readiness).
	CheckWrite(ctx context.Context, node string) error
	// The built-in hubs' event logs.
	AppendMessages(ctx context.Context, msgs []dps.Message) ([]dps.Message, error)
	Messages(ctx context.Context, hub string, after int64, limit int) ([]dps.Message, error)
	LastMessageSeq(ctx context.Context, hub string) (int64, error)
	DeleteMessagesBefore(ctx context.Context, hub string, t time.Time) (int64, error)
	TrimMessages(ctx context.Context, hub string, keep int64) (int64, error)
	EventCheckpoint(ctx context.Context, hub, consumer string) (int64, bool, error)
	SetEventCheckpoint(ctx context.Context, hub, consumer string, seq int64, now time.Time) error
	// The built-in hubs' cloud-to-device queues (c2d.go).
	EnqueueCloudMessage(ctx context.Context, m dps.CloudMessage, max int) (dps.CloudMessage, error)
	ReceiveCloudMessage(ctx context.Context, hub, deviceID, lockToken string, now, lockUntil time.Time) (dps.CloudMessage, bool, error)
	SettleCloudMessage(ctx context.Context, hub, deviceID, lockToken string, how dps.Settlement, now time.Time, maxDeliveries int) error
	PurgeCloudMessages(ctx context.Context, hub, deviceID string, now time.Time) (int, error)
	CloudQueueDepth(ctx context.Context, hub, deviceID string, now time.Time) (int, error)
	ExpireCloudMessages(ctx context.Context, now time.Time, limit int) (int, error)
	ReceiveCloudFeedback(ctx context.Context, hub, lockToken string, now, lockUntil time.Time, max int) ([]dps.CloudFeedback, error)
	SettleCloudFeedback(ctx context.Context, hub, lockToken string, complete bool, now time.Time) error
	DeleteCloudFeedbackBefore(ctx context.Context, t time.Time) (int64, error)
	// The built-in hubs' identity registries.
	ListHubDevices(ctx context.Context, hub, after string, limit int) ([]dps.HubDevice, error)
	CountHubDevices(ctx context.Context, hub string) (total, disabled int, err error)
	// Message routes' checkpoints, leases and dead letters (routes.go).
	ClaimRoute(ctx context.Context, hub, route, node string, now, until time.Time) (dps.RouteState, bool, error)
	AdvanceRoute(ctx context.Context, hub, route, node string, checkpoint int64, lastError string, now time.Time) error
	ReleaseRoute(ctx context.Context, hub, route, node string) error
	Routes(ctx context.Context, hub string) ([]dps.RouteState, error)
	DeadLetterMessages(ctx context.Context, hub, route, node string, msgs []dps.Message, reason string, now time.Time) error
	DeadLetters(ctx context.Context, hub, route string, after int64, limit int) ([]dps.DeadLetter, error)
	DeleteDeadLettersBefore(ctx context.Context, t time.Time) (int64, error)
	TrimDeadLetters(ctx context.Context, hub, route string, keep int) (int64, error)
	DeleteRoutedMessagesBefore(ctx context.Context, hub string, t time.Time, through int64) (int64, error)
	// The registration-events feed (regevents.go).
	AppendRegistrationEvents(ctx context.Context, events []dps.RegistrationEvent) ([]dps.RegistrationEvent, error)
	RegistrationEvents(ctx context.Context, after int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error)
	LatestRegistrationEvents(ctx context.Context, before int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error)
	DeleteRegistrationEventsBefore(ctx context.Context, t time.Time) (int64, error)
	TrimRegistrationEvents(ctx context.Context, keep int64) (int64, error)
}

// Factory makes stores. New returns an empty store no other call shares;
// Reopen returns a second handle on the same data (another node). Doc
// returns the document of a row as stored and SetDoc replaces it,
// bypassing the store's encoding: the table and the values of its key
// columns (docs.Tables), folded as stored.
type Factory struct {
	New    func(t *testing.T) Store
	Reopen func(t *testing.T, s Store) Store
	Doc    func(t *testing.T, s Store, table string, key ...string) []byte
	SetDoc func(t *testing.T, s Store, table string, doc []byte, key ...string)
}

// Run exercises a store.
func Run(t *testing.T, f Factory) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"Meta/FirstWriterWins", testMeta},
		{"Enrollment/CRUDAndETags", testEnrollmentETags},
		{"Enrollment/CaseInsensitiveIDs", testCaseInsensitive},
		{"Enrollment/ConcurrentWritersOneWins", testConcurrentWriters},
		{"Group/CRUDAndFilter", testGroups},
		{"Query/PagesAreCompleteAndOrdered", testPaging},
		{"Operation/CreateCompleteIdempotent", testOperations},
		{"Operation/LeaseAndTakeover", testLeases},
		{"Registration/QueryByGroupAndDelete", testRegistrations},
		{"HubDevice/PutGetDelete", testHubDevices},
		{"HubDevice/ETagPrecondition", testHubDevicePrecondition},
		{"HubDevice/RemoveIfUnchanged", testRemoveHubDevice},
		{"HubDevice/ListAndCount", testHubDeviceList},
		{"CA/PutGetDelete", testCAs},
		{"Challenge/LatestWinsAndConsumeOnce", testChallenges},
		{"Operation/Prune", testPrune},
		{"Operation/WithDeviceRecordsInOneTransaction", testWithDevice},
		{"Registration/WrittenOnlyOverTheRecordItWasComputedFrom", testRegistrationCAS},
		{"Operation/ConcurrentWritesFailAlone", testConcurrentFailures},
		{"Group/SecondHandleSeesChanges", testGroupsAcrossHandles},
		{"Health/CheckWrite", testCheckWrite},
		{"Operation/TrimPerRegistrationID", testTrim},
		{"Documents/GoldenFormat", testGoldenDocuments},
		{"Operation/PendingHeaders", testPendingHeaders},
		{"Messages/AppendInOrderGapFree", testMessagesAppend},
		{"Messages/PagesAfterAPosition", testMessagesPaging},
		{"Messages/FailingBatchWritesNothing", testMessagesAllOrNothing},
		{"Messages/ConcurrentAppendsAcrossHandles", testMessagesConcurrent},
		{"Messages/RetentionByTime", testMessagesRetentionByTime},
		{"Messages/RetentionByCount", testMessagesRetentionByCount},
		{"Messages/ReopenedKeepsEverything", testMessagesReopen},
		{"Messages/ConsumerCheckpoints", testEventCheckpoints},
		{"C2D/EnqueueReceiveInOrder", testC2DOrder},
		{"C2D/DepthLimitNotCountingExpired", testC2DDepth},
		{"C2D/LockHidesAndExpires", testC2DLock},
		{"C2D/SettleByLockToken", testC2DSettle},
		{"C2D/AbandonCountsThenDeadLetters", testC2DMaxDeliveries},
		{"C2D/ExpiredNeverDelivered", testC2DExpiry},
		{"C2D/PurgeAndDeviceDeletion", testC2DPurge},
		{"C2D/ConcurrentReceiversAcrossHandles", testC2DConcurrent},
		{"C2D/FeedbackOutcomes", testC2DFeedbackOutcomes},
		{"C2D/FeedbackLockedBatches", testC2DFeedbackLock},
		{"C2D/FeedbackExpires", testC2DFeedbackExpires},
		{"Routes/CheckpointsStartAtTheEndAndNeverGoBack", testRouteCheckpoints},
		{"Routes/OneLeaseHolderAndTakeover", testRouteLeases},
		{"Routes/ConcurrentClaimsOneWins", testRouteConcurrentClaims},
		{"Routes/DeadLettersUnderTheLease", testRouteDeadLetters},
		{"Routes/DeadLettersTrimmedToTheNewest", testRouteDeadLetterTrim},
		{"Routes/RetentionBehindTheCheckpoint", testRouteRetention},
		{"RegistrationEvents/AppendAssignsIncreasingSeq", testRegEventsAppend},
		{"RegistrationEvents/ReadAfterWithLimitAndFilters", testRegEventsRead},
		{"RegistrationEvents/LatestNewestFirst", testRegEventsLatest},
		{"RegistrationEvents/RetentionByAgeAndCount", testRegEventsRetention},
		{"RegistrationEvents/ConcurrentAppendsAcrossHandles", testRegEventsAcrossHandles},
		{"Issuance/CAsAndPolicies", testIssuingCAs},
		{"Issuance/IssuedOncePerOperationAndRevoked", testIssuedCertificates},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, f)
		})
	}
}

func ctx() context.Context { return context.Background() }

func kind(t *testing.T, what string, err error, want dps.Kind) {
	t.Helper()
	if got := dps.KindOf(err); err == nil || got != want {
		t.Errorf("%s: err = %v (kind %v), want kind %v", what, err, got, want)
	}
}

func enr(id string) dps.Enrollment {
	return dps.Enrollment{RegistrationID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeS1rZXktMTIzNDU2", SecondaryKey: "c2Vjb25kYXJ5LWtleS0xMjM0"}},
		ProvisioningStatus: dps.ProvisioningEnabled,
		InitialTwin:        json.RawMessage(`{"tags":{"a":1}}`),
	}}
}

func testMeta(t *testing.T, f Factory) {
	s := f.New(t)
	v, err := s.Meta(ctx(), "idScope", "0ne00000001")
	if err != nil || v != "0ne00000001" {
		t.Fatalf("Meta = %q, %v", v, err)
	}
	other := f.Reopen(t, s)
	if v, err := other.Meta(ctx(), "idScope", "0ne00000002"); err != nil || v != "0ne00000001" {
		t.Errorf("second writer got %q, %v; want the first value", v, err)
	}
}

func testEnrollmentETags(t *testing.T, f Factory) {
	s := f.New(t)
	_, err := s.Enrollment(ctx(), "dev-1")
	kind(t, "get missing", err, dps.KindNotFound)
	e, err := s.PutEnrollment(ctx(), enr("dev-1"), "")
	if err != nil || e.ETag == "" || e.Created.IsZero() {
		t.Fatalf("create = %+v, %v", e, err)
	}
	got, err := s.Enrollment(ctx(), "dev-1")
	if err != nil || got.ETag != e.ETag || got.Attestation.SymmetricKey.PrimaryKey != "cHJpbWFyeS1rZXktMTIzNDU2" || string(got.InitialTwin) == "" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	_, err = s.PutEnrollment(ctx(), enr("dev-1"), "")
	kind(t, "create existing", err, dps.KindConflict)
	_, err = s.PutEnrollment(ctx(), enr("dev-1"), `"stale"`)
	kind(t, "stale etag", err, dps.KindPrecondition)
	_, err = s.PutEnrollment(ctx(), enr("dev-new"), `"x"`)
	kind(t, "etag on missing", err, dps.KindPrecondition)
	time.Sleep(2 * time.Millisecond)
	u, err := s.PutEnrollment(ctx(), enr("dev-1"), e.ETag)
	if err != nil || u.ETag == e.ETag || !u.Created.Equal(e.Created) || !u.Updated.After(e.Updated) {
		t.Fatalf("update = %+v, %v", u, err)
	}
	if _, err := s.PutEnrollment(ctx(), enr("dev-1"), "*"); err != nil {
		t.Errorf("update *: %v", err)
	}
	if _, err := s.PutEnrollment(ctx(), enr("dev-1"), `W/"`+u.ETag[1:]); err == nil {
		t.Errorf("update with an old weak etag succeeded")
	}
	kind(t, "delete stale", s.DeleteEnrollment(ctx(), "dev-1", `"stale"`), dps.KindPrecondition)
	if err := s.DeleteEnrollment(ctx(), "dev-1", ""); err != nil {
		t.Fatal(err)
	}
	kind(t, "delete missing", s.DeleteEnrollment(ctx(), "dev-1", ""), dps.KindNotFound)
}

func testCaseInsensitive(t *testing.T, f Factory) {
	s := f.New(t)
	if _, err := s.PutEnrollment(ctx(), enr("Dev-CASE"), ""); err != nil {
		t.Fatal(err)
	}
	got, err := s.Enrollment(ctx(), "dev-case")
	if err != nil || got.RegistrationID != "Dev-CASE" {
		t.Errorf("lookup in another case = %+v, %v (the stored case is kept)", got.RegistrationID, err)
	}
	_, err = s.PutEnrollment(ctx(), enr("DEV-case"), "")
	kind(t, "create in another case", err, dps.KindConflict)
}

func testConcurrentWriters(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	e, err := s.PutEnrollment(ctx(), enr("race"), "")
	if err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		st := s
		if i%2 == 1 {
			st = other
		}
		wg.Go(func() {
			if _, err := st.PutEnrollment(ctx(), enr("race"), e.ETag); err == nil {
				wins.Add(1)
			} else if dps.KindOf(err) != dps.KindPrecondition {
				t.Errorf("loser: %v", err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("%d writers won with the same etag, want 1", wins.Load())
	}
}

func testGroups(t *testing.T, f Factory) {
	s := f.New(t)
	g := dps.Group{ID: "g-sym", Settings: enr("x").Settings}
	if _, err := s.PutGroup(ctx(), g, ""); err != nil {
		t.Fatal(err)
	}
	x := dps.Group{ID: "g-x509", Settings: dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "ca"}}}}}
	if _, err := s.PutGroup(ctx(), x, ""); err != nil {
		t.Fatal(err)
	}
	sym, err := s.Groups(ctx(), dps.AttestationSymmetricKey)
	if err != nil || len(sym) != 1 || sym[0].ID != "g-sym" {
		t.Errorf("symmetric groups = %+v, %v", sym, err)
	}
	all, _ := s.Groups(ctx(), "")
	if len(all) != 2 {
		t.Errorf("all groups = %d", len(all))
	}
	kind(t, "group exists", func() error { _, err := s.PutGroup(ctx(), g, ""); return err }(), dps.KindConflict)
	if err := s.DeleteGroup(ctx(), "G-SYM", ""); err != nil {
		t.Fatal(err)
	}
	_, err = s.Group(ctx(), "g-sym")
	kind(t, "deleted group", err, dps.KindNotFound)
}

func testPaging(t *testing.T, f Factory) {
	s := f.New(t)
	for i := range 23 {
		if _, err := s.PutEnrollment(ctx(), enr(fmt.Sprintf("p-%02d", i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	cont := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		items, next, err := s.Enrollments(ctx(), cont, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range items {
			ids = append(ids, e.RegistrationID)
		}
		if next == "" {
			break
		}
		cont = next
	}
	if len(ids) != 23 || ids[0] != "p-00" || ids[22] != "p-22" {
		t.Errorf("paged ids = %v", ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Errorf("not ordered: %v", ids)
		}
	}
	_, _, err := s.Enrollments(ctx(), "%%%not-a-token", 5)
	kind(t, "bad continuation", err, dps.KindInvalid)
	items, next, err := s.Enrollments(ctx(), "", 100)
	if err != nil || len(items) != 23 || next != "" {
		t.Errorf("one big page = %d items, next %q, %v", len(items), next, err)
	}
}

func op(id, reg string) dps.Operation {
	now := time.Now().UTC()
	return dps.Operation{ID: id, RegistrationID: reg, Status: dps.StatusAssigning, Proof: dps.Proof{Type: dps.AttestationSymmetricKey},
		Payload: json.RawMessage(`{"p":[1,"x"]}`), Created: now, Updated: now}
}

func testOperations(t *testing.T, f Factory) {
	s := f.New(t)
	o := op("op-1", "Dev-Op")
	if _, err := s.CreateOperation(ctx(), o); err != nil {
		t.Fatal(err)
	}
	_, err := s.CreateOperation(ctx(), o)
	kind(t, "duplicate operation", err, dps.KindConflict)
	pending, err := s.PendingOperations(ctx())
	if err != nil || len(pending) != 1 || string(pending[0].Payload) != `{"p":[1,"x"]}` {
		t.Fatalf("pending = %+v, %v", pending, err)
	}
	o.Status = dps.StatusAssigned
	o.Result = &dps.Registration{RegistrationID: "Dev-Op", AssignedHub: "h1", DeviceID: "Dev-Op", Status: dps.StatusAssigned, EnrollmentGroupID: "G1"}
	done, err := s.CompleteOperation(ctx(), o)
	if err != nil || done.Result.ETag == "" {
		t.Fatalf("complete = %+v, %v", done, err)
	}
	// A second completion (another node that finished late) changes nothing.
	late := o
	late.Result = &dps.Registration{RegistrationID: "Dev-Op", AssignedHub: "h2", Status: dps.StatusAssigned}
	again, err := s.CompleteOperation(ctx(), late)
	if err != nil || again.Result.AssignedHub != "h1" || again.Result.ETag != done.Result.ETag {
		t.Errorf("second completion = %+v, %v; want the first one", again.Result, err)
	}
	reg, err := s.Registration(ctx(), "dev-op")
	if err != nil || reg.AssignedHub != "h1" || reg.ETag != done.Result.ETag {
		t.Errorf("registration = %+v, %v", reg, err)
	}
	if pending, _ := s.PendingOperations(ctx()); len(pending) != 0 {
		t.Errorf("still pending: %d", len(pending))
	}
	got, err := s.Operation(ctx(), "op-1")
	if err != nil || got.Status != dps.StatusAssigned {
		t.Errorf("operation = %+v, %v", got, err)
	}
	_, err = s.Operation(ctx(), "nope")
	kind(t, "missing operation", err, dps.KindNotFound)
	// An operation completed before it was accepted: created final, its
	// registration record written with it.
	fin := op("op-3", "dev-fast")
	fin.Status = dps.StatusAssigned
	fin.Result = &dps.Registration{RegistrationID: "dev-fast", AssignedHub: "h3", Status: dps.StatusAssigned}
	stored, err := s.CreateOperation(ctx(), fin)
	if err != nil || stored.Result.ETag == "" {
		t.Fatalf("create final = %+v, %v", stored.Result, err)
	}
	if r, err := s.Registration(ctx(), "dev-fast"); err != nil || r.ETag != stored.Result.ETag || r.AssignedHub != "h3" {
		t.Errorf("record of a final operation = %+v, %v", r, err)
	}
	if got, _ := s.Operation(ctx(), "op-3"); got.Result == nil || got.Result.ETag != stored.Result.ETag {
		t.Errorf("stored final operation = %+v", got)
	}
	// A disabled outcome writes no registration record.
	d := op("op-2", "dev-off")
	s.CreateOperation(ctx(), d)
	d.Status = dps.StatusDisabled
	d.Result = &dps.Registration{RegistrationID: "dev-off", Status: dps.StatusDisabled}
	if _, err := s.CompleteOperation(ctx(), d); err != nil {
		t.Fatal(err)
	}
	_, err = s.Registration(ctx(), "dev-off")
	kind(t, "disabled registration record", err, dps.KindNotFound)
}

func testLeases(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	if _, err := s.CreateOperation(ctx(), op("lease-1", "d")); err != nil {
		t.Fatal(err)
	}
	ok, err := s.ClaimOperation(ctx(), "lease-1", "node-a", time.Now().Add(time.Hour))
	if err != nil || !ok {
		t.Fatalf("claim = %v, %v", ok, err)
	}
	if ok, _ := other.ClaimOperation(ctx(), "lease-1", "node-b", time.Now().Add(time.Hour)); ok {
		t.Error("node-b claimed an operation node-a holds")
	}
	if ok, _ := s.ClaimOperation(ctx(), "lease-1", "node-a", time.Now().Add(time.Hour)); !ok {
		t.Error("node-a could not renew its lease")
	}
	// node-a stops renewing: its lease expires and node-b takes over.
	s.ClaimOperation(ctx(), "lease-1", "node-a", time.Now().Add(-time.Second))
	if ok, _ := other.ClaimOperation(ctx(), "lease-1", "node-b", time.Now().Add(time.Hour)); !ok {
		t.Error("node-b could not take over an expired lease")
	}
	o := op("lease-1", "d")
	o.Status = dps.StatusFailed
	o.Result = &dps.Registration{RegistrationID: "d", Status: dps.StatusFailed, ErrorCode: dps.CodeCustomAllocationFailed}
	if _, err := other.CompleteOperation(ctx(), o); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.ClaimOperation(ctx(), "lease-1", "node-a", time.Now().Add(time.Hour)); ok {
		t.Error("a finished operation was claimed")
	}
}

func testRegistrations(t *testing.T, f Factory) {
	s := f.New(t)
	for i := range 5 {
		o := op(fmt.Sprintf("r-op-%d", i), fmt.Sprintf("r-dev-%d", i))
		s.CreateOperation(ctx(), o)
		o.Status = dps.StatusAssigned
		group := "grp-a"
		if i == 4 {
			group = "grp-b"
		}
		o.Result = &dps.Registration{RegistrationID: o.RegistrationID, Status: dps.StatusAssigned, AssignedHub: "h", EnrollmentGroupID: group}
		if _, err := s.CompleteOperation(ctx(), o); err != nil {
			t.Fatal(err)
		}
	}
	p1, next, err := s.Registrations(ctx(), "GRP-A", "", 3)
	if err != nil || len(p1) != 3 || next == "" {
		t.Fatalf("page 1 = %d, %q, %v", len(p1), next, err)
	}
	p2, next, err := s.Registrations(ctx(), "grp-a", next, 3)
	if err != nil || len(p2) != 1 || next != "" {
		t.Fatalf("page 2 = %d, %q, %v", len(p2), next, err)
	}
	r, _ := s.Registration(ctx(), "r-dev-0")
	kind(t, "delete stale", s.DeleteRegistration(ctx(), "r-dev-0", `"x"`), dps.KindPrecondition)
	if err := s.DeleteRegistration(ctx(), "r-dev-0", r.ETag); err != nil {
		t.Fatal(err)
	}
	_, err = s.Registration(ctx(), "r-dev-0")
	kind(t, "deleted registration", err, dps.KindNotFound)
}

func testHubDevices(t *testing.T, f Factory) {
	s := f.New(t)
	d := dps.HubDevice{Hub: "Hub.example.net", DeviceID: "Dev", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5"}, Twin: json.RawMessage(`{"tags":{}}`)}
	if _, err := s.PutHubDevice(ctx(), d); err != nil {
		t.Fatal(err)
	}
	got, err := s.HubDevice(ctx(), "hub.example.net", "dev")
	if err != nil || got.Auth.PrimaryKey != "a2V5" || string(got.Twin) != `{"tags":{}}` {
		t.Fatalf("hub device = %+v, %v", got, err)
	}
	if err := s.DeleteHubDevice(ctx(), "hub.example.net", "dev"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteHubDevice(ctx(), "hub.example.net", "dev"); err != nil {
		t.Errorf("deleting an absent device: %v", err)
	}
}

// testHubDeviceList: a hub's identities are listed in pages that resume
// after the last device of the previous one (device IDs compared folded),
// every device once, none of another hub; counts say how many are
// disabled.
func testHubDeviceList(t *testing.T, f Factory) {
	s := f.New(t)
	want := map[string]bool{}
	for i := range 25 {
		id := fmt.Sprintf("Dev-%02d", i)
		d := dps.HubDevice{Hub: "Hub.example.net", DeviceID: id, Status: dps.DeviceEnabled}
		if i%5 == 0 {
			d.Status = dps.DeviceDisabled
		}
		if _, err := s.PutHubDevice(ctx(), d); err != nil {
			t.Fatal(err)
		}
		want[id] = true
	}
	if _, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "other.example.net", DeviceID: "Dev-99"}); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	after := ""
	for pages := 0; ; pages++ {
		page, err := s.ListHubDevices(ctx(), "hub.example.net", after, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 10 || pages > 3 {
			t.Fatalf("page %d has %d devices", pages, len(page))
		}
		for _, d := range page {
			if seen[d.DeviceID] || !want[d.DeviceID] || d.Hub != "Hub.example.net" {
				t.Fatalf("page %d: %s/%s (seen before: %v)", pages, d.Hub, d.DeviceID, seen[d.DeviceID])
			}
			seen[d.DeviceID] = true
		}
		if len(page) < 10 {
			break
		}
		after = strings.ToUpper(page[len(page)-1].DeviceID) // compared folded
	}
	if len(seen) != len(want) {
		t.Errorf("listed %d devices, want %d", len(seen), len(want))
	}
	total, disabled, err := s.CountHubDevices(ctx(), "HUB.example.net")
	if err != nil || total != 25 || disabled != 5 {
		t.Errorf("counts = %d total, %d disabled, %v; want 25, 5", total, disabled, err)
	}
	if total, _, err := s.CountHubDevices(ctx(), "nohub"); err != nil || total != 0 {
		t.Errorf("counts of a hub without devices = %d, %v", total, err)
	}
}

// testHubDevicePrecondition: every write gives a hub device record a new
// ETag, and a write with Replaces happens only over the record with that
// ETag.
func testHubDevicePrecondition(t *testing.T, f Factory) {
	s := f.New(t)
	d := dps.HubDevice{Hub: "h", DeviceID: "dev", Status: dps.DeviceDisabled, StatusReason: "r", GenerationID: "638000000000000001",
		LiveTwin: json.RawMessage(`{"version":2}`), TwinWrite: dps.TwinKeep, Replaces: ""}
	first, err := s.PutHubDevice(ctx(), d)
	if err != nil || first.ETag == "" || first.Replaces != "" {
		t.Fatalf("put = %+v, %v", first, err)
	}
	got, err := s.HubDevice(ctx(), "h", "dev")
	if err != nil || got.ETag != first.ETag || got.Status != dps.DeviceDisabled || got.StatusReason != "r" || got.GenerationID != d.GenerationID ||
		string(got.LiveTwin) != `{"version":2}` || got.TwinWrite != 0 {
		t.Fatalf("hub device = %+v, %v", got, err)
	}
	got.StatusReason, got.Replaces = "second", first.ETag
	second, err := s.PutHubDevice(ctx(), got)
	if err != nil || second.ETag == first.ETag {
		t.Fatalf("put over the current ETag = %+v, %v", second, err)
	}
	got.StatusReason = "stale" // Replaces is still the first ETag
	if _, err := s.PutHubDevice(ctx(), got); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("put over a stale ETag: err = %v, want conflict", err)
	}
	if cur, _ := s.HubDevice(ctx(), "h", "dev"); cur.StatusReason != "second" || cur.ETag != second.ETag {
		t.Errorf("a refused write changed the record: %+v", cur)
	}
	if _, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "h", DeviceID: "DEV", Replaces: dps.ReplacesNothing}); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("create over an existing record: err = %v, want conflict", err)
	}
	if cur, _ := s.HubDevice(ctx(), "h", "dev"); cur.ETag != second.ETag {
		t.Errorf("a refused create changed the record: %+v", cur)
	}
	if made, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "h", DeviceID: "new", Replaces: dps.ReplacesNothing}); err != nil || made.Replaces != "" {
		t.Errorf("create = %+v, %v", made, err)
	}
	if _, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "h", DeviceID: "absent", Replaces: first.ETag}); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("put with Replaces over no record: err = %v, want not found", err)
	}
	if _, err := s.HubDevice(ctx(), "h", "absent"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("a refused write created the record: %v", err)
	}
}

// testRemoveHubDevice: RemoveHubDevice removes a record (and its C2D
// queue) only while it has the ETag its Replaces names: a record written
// since stays, with its queue (KindConflict); an absent one is no error;
// no Replaces removes whatever the record is.
func testRemoveHubDevice(t *testing.T, f Factory) {
	s := f.New(t)
	first, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: c2dHub, DeviceID: "Dev-R", StatusReason: "first"})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, c2dMessage("Dev-R", "r1", c2dT0))
	first.StatusReason, first.Replaces = "second", first.ETag
	second, err := s.PutHubDevice(ctx(), first)
	if err != nil {
		t.Fatal(err)
	}
	stale := dps.HubDevice{Hub: strings.ToUpper(c2dHub), DeviceID: "dev-r", Replaces: first.ETag}
	if err := s.RemoveHubDevice(ctx(), stale); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("remove with a stale ETag: err = %v, want conflict", err)
	}
	if cur, err := s.HubDevice(ctx(), c2dHub, "Dev-R"); err != nil || cur.ETag != second.ETag {
		t.Fatalf("after a refused remove: %+v, %v; want the record kept", cur, err)
	}
	depth(t, s, "Dev-R", c2dT0, 1)
	if err := s.RemoveHubDevice(ctx(), dps.HubDevice{Hub: c2dHub, DeviceID: "DEV-R", Replaces: second.ETag}); err != nil {
		t.Fatalf("remove with the current ETag: %v", err)
	}
	if _, err := s.HubDevice(ctx(), c2dHub, "Dev-R"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("after the remove: %v, want not found", err)
	}
	depth(t, s, "Dev-R", c2dT0, 0)
	if err := s.RemoveHubDevice(ctx(), dps.HubDevice{Hub: c2dHub, DeviceID: "Dev-R", Replaces: second.ETag}); err != nil {
		t.Errorf("removing an absent record: %v", err)
	}
	if _, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: c2dHub, DeviceID: "dev-any"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveHubDevice(ctx(), dps.HubDevice{Hub: c2dHub, DeviceID: "dev-any"}); err != nil {
		t.Fatalf("remove without Replaces: %v", err)
	}
	if _, err := s.HubDevice(ctx(), c2dHub, "dev-any"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("after a remove without Replaces: %v, want not found", err)
	}
}

func testCAs(t *testing.T, f Factory) {
	s := f.New(t)
	c, err := s.PutCACertificate(ctx(), dps.CACertificate{Name: "Root", Certificate: "pem"}, "")
	if err != nil || c.ETag == "" {
		t.Fatal(err)
	}
	c.Verified = true
	if _, err := s.PutCACertificate(ctx(), c, c.ETag); err != nil {
		t.Fatal(err)
	}
	got, err := s.CACertificate(ctx(), "root")
	if err != nil || !got.Verified {
		t.Errorf("CA = %+v, %v", got, err)
	}
	all, _ := s.CACertificates(ctx())
	if len(all) != 1 {
		t.Errorf("CAs = %d", len(all))
	}
	if err := s.DeleteCACertificate(ctx(), "ROOT", ""); err != nil {
		t.Fatal(err)
	}
}

func testChallenges(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	now := time.Now().UTC()
	s.PutChallenge(ctx(), dps.Challenge{RegistrationID: "Tpm", Key: "k1", Created: now, Expires: now.Add(time.Minute)})
	s.PutChallenge(ctx(), dps.Challenge{RegistrationID: "tpm", Key: "k2", Created: now, Expires: now.Add(time.Minute)})
	c, err := s.Challenge(ctx(), "TPM")
	if err != nil || c.Key != "k2" {
		t.Fatalf("challenge = %+v, %v", c, err)
	}
	if ok, _ := s.ConsumeChallenge(ctx(), "tpm", "k1"); ok {
		t.Error("a superseded challenge was consumed")
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 6 {
		st := s
		if i%2 == 1 {
			st = other
		}
		wg.Go(func() {
			if ok, err := st.ConsumeChallenge(ctx(), "tpm", "k2"); err == nil && ok {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Errorf("challenge consumed %d times, want once", wins.Load())
	}
}

func testPrune(t *testing.T, f Factory) {
	s := f.New(t)
	old := op("old", "d")
	old.Created = time.Now().Add(-48 * time.Hour)
	s.CreateOperation(ctx(), old)
	old.Status = dps.StatusFailed
	s.CompleteOperation(ctx(), old)
	stuck := op("stuck", "d")
	stuck.Created = time.Now().Add(-48 * time.Hour)
	s.CreateOperation(ctx(), stuck)
	n, err := s.DeleteOperationsBefore(ctx(), time.Now().Add(-24*time.Hour))
	if err != nil || n != 1 {
		t.Errorf("pruned %d, %v; want 1 (unfinished operations are kept)", n, err)
	}
	if _, err := s.Operation(ctx(), "stuck"); err != nil {
		t.Errorf("unfinished operation pruned: %v", err)
	}
}

func testWithDevice(t *testing.T, f Factory) {
	s := f.New(t)
	old := dps.HubDevice{Hub: "old.example.net", DeviceID: "dev-w"}
	if _, err := s.PutHubDevice(ctx(), old); err != nil {
		t.Fatal(err)
	}
	o := op("op-w", "dev-w")
	o.Status = dps.StatusAssigned
	o.Result = &dps.Registration{RegistrationID: "dev-w", AssignedHub: "new.example.net", DeviceID: "dev-w", Status: dps.StatusAssigned}
	put := dps.HubDevice{Hub: "new.example.net", DeviceID: "dev-w", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5"}}
	stored, err := s.CreateOperationWithDevice(ctx(), o, put, &old)
	if err != nil || stored.Result.ETag == "" {
		t.Fatalf("create = %+v, %v", stored.Result, err)
	}
	if _, err := s.HubDevice(ctx(), "new.example.net", "dev-w"); err != nil {
		t.Errorf("device record not written: %v", err)
	}
	_, err = s.HubDevice(ctx(), "old.example.net", "dev-w")
	kind(t, "moved device on its old hub", err, dps.KindNotFound)
	// A failure rolls everything back: a duplicate operation ID writes no device.
	other := dps.HubDevice{Hub: "third.example.net", DeviceID: "dev-w"}
	_, err = s.CreateOperationWithDevice(ctx(), o, other, nil)
	kind(t, "duplicate operation", err, dps.KindConflict)
	_, err = s.HubDevice(ctx(), "third.example.net", "dev-w")
	kind(t, "device of a failed transaction", err, dps.KindNotFound)

	// The device record's precondition: written only over the record it
	// was computed from; a changed or deleted record is a conflict (the
	// operation is computed again) and nothing of the transaction stays.
	cur, err := s.HubDevice(ctx(), "new.example.net", "dev-w")
	if err != nil {
		t.Fatal(err)
	}
	changed := cur
	changed.StatusReason = "changed by the hub meanwhile"
	changed, err = s.PutHubDevice(ctx(), changed)
	if err != nil {
		t.Fatal(err)
	}
	again := op("op-w2", "dev-w")
	again.Status = dps.StatusAssigned
	again.Result = &dps.Registration{RegistrationID: "dev-w", AssignedHub: "new.example.net", DeviceID: "dev-w", Status: dps.StatusAssigned, ETag: stored.Result.ETag}
	stale := cur
	stale.Replaces, stale.StatusReason = cur.ETag, "from the stale record"
	_, err = s.CreateOperationWithDevice(ctx(), again, stale, nil)
	kind(t, "operation with a device record computed from a changed one", err, dps.KindConflict)
	if got, _ := s.HubDevice(ctx(), "new.example.net", "dev-w"); got.StatusReason != changed.StatusReason || got.ETag != changed.ETag {
		t.Errorf("device record = %+v, want the concurrent write kept", got)
	}
	if _, err := s.Operation(ctx(), "op-w2"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("the refused operation was stored: %v", err)
	}
	if r, _ := s.Registration(ctx(), "dev-w"); r.ETag != stored.Result.ETag {
		t.Errorf("the refused operation rewrote the registration record")
	}
	fresh := changed
	fresh.Replaces, fresh.StatusReason = changed.ETag, "from the current record"
	if _, err := s.CreateOperationWithDevice(ctx(), again, fresh, nil); err != nil {
		t.Fatalf("operation with a device record computed from the current one: %v", err)
	}
	if got, _ := s.HubDevice(ctx(), "new.example.net", "dev-w"); got.StatusReason != fresh.StatusReason || got.ETag == changed.ETag {
		t.Errorf("device record = %+v, want the operation's", got)
	}
	if err := s.DeleteHubDevice(ctx(), "new.example.net", "dev-w"); err != nil {
		t.Fatal(err)
	}
	gone := fresh
	gone.Replaces = changed.ETag
	third := op("op-w3", "dev-w")
	third.Status = dps.StatusAssigned
	r, _ := s.Registration(ctx(), "dev-w")
	third.Result = &dps.Registration{RegistrationID: "dev-w", AssignedHub: "new.example.net", DeviceID: "dev-w", Status: dps.StatusAssigned, ETag: r.ETag}
	_, err = s.CreateOperationWithDevice(ctx(), third, gone, nil)
	kind(t, "operation with a device record computed from a deleted one", err, dps.KindConflict)

	// A device moving to a remote hub: a put without Hub writes no record,
	// the old one is removed with the operation.
	local := dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-r"}
	if _, err := s.PutHubDevice(ctx(), local); err != nil {
		t.Fatal(err)
	}
	away := op("op-r", "dev-r")
	away.Status = dps.StatusAssigned
	away.Result = &dps.Registration{RegistrationID: "dev-r", AssignedHub: "remote.example.net", DeviceID: "dev-r", Status: dps.StatusAssigned}
	if _, err := s.CreateOperationWithDevice(ctx(), away, dps.HubDevice{}, &local); err != nil {
		t.Fatalf("operation moving its device to a remote hub: %v", err)
	}
	_, err = s.HubDevice(ctx(), "local.example.net", "dev-r")
	kind(t, "device moved to a remote hub, on its old hub", err, dps.KindNotFound)
	_, err = s.HubDevice(ctx(), "", "")
	kind(t, "the record of no device", err, dps.KindNotFound)

	// The removal's precondition: the record the device leaves is removed
	// only if it did not change since it was read (its twin migrated, say);
	// otherwise the operation is a conflict and nothing of it stays.
	left, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-l", StatusReason: "as read"})
	if err != nil {
		t.Fatal(err)
	}
	changedLeft, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-l", StatusReason: "changed meanwhile"})
	if err != nil {
		t.Fatal(err)
	}
	leaving := op("op-l", "dev-l")
	leaving.Status = dps.StatusAssigned
	leaving.Result = &dps.Registration{RegistrationID: "dev-l", AssignedHub: "remote.example.net", DeviceID: "dev-l", Status: dps.StatusAssigned}
	_, err = s.CreateOperationWithDevice(ctx(), leaving, dps.HubDevice{}, &dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-l", Replaces: left.ETag})
	kind(t, "operation removing a record that changed since it was read", err, dps.KindConflict)
	if got, err := s.HubDevice(ctx(), "local.example.net", "dev-l"); err != nil || got.ETag != changedLeft.ETag {
		t.Errorf("record after the refused removal = %+v, %v; want the concurrent write kept", got, err)
	}
	if _, err := s.Operation(ctx(), "op-l"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("the refused operation was stored: %v", err)
	}
	if _, err := s.CreateOperationWithDevice(ctx(), leaving, dps.HubDevice{}, &dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-l", Replaces: changedLeft.ETag}); err != nil {
		t.Fatalf("operation removing the record as it is: %v", err)
	}
	_, err = s.HubDevice(ctx(), "local.example.net", "dev-l")
	kind(t, "record removed over its current ETag", err, dps.KindNotFound)
	// The same through CompleteOperationWithDevice.
	if _, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-m"}); err != nil {
		t.Fatal(err)
	}
	now, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-m", StatusReason: "changed"})
	if err != nil {
		t.Fatal(err)
	}
	pending := op("op-m", "dev-m")
	if _, err := s.CreateOperation(ctx(), pending); err != nil {
		t.Fatal(err)
	}
	pending.Status = dps.StatusAssigned
	pending.Result = &dps.Registration{RegistrationID: "dev-m", AssignedHub: "remote.example.net", DeviceID: "dev-m", Status: dps.StatusAssigned}
	_, err = s.CompleteOperationWithDevice(ctx(), pending, dps.HubDevice{}, &dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-m", Replaces: "\"stale\""})
	kind(t, "completion removing a record that changed since it was read", err, dps.KindConflict)
	if got, _ := s.Operation(ctx(), "op-m"); got.Status != dps.StatusAssigning {
		t.Errorf("the refused completion finished the operation: %s", got.Status)
	}
	if _, err := s.CompleteOperationWithDevice(ctx(), pending, dps.HubDevice{}, &dps.HubDevice{Hub: "local.example.net", DeviceID: "dev-m", Replaces: now.ETag}); err != nil {
		t.Fatalf("completion removing the record as it is: %v", err)
	}
	_, err = s.HubDevice(ctx(), "local.example.net", "dev-m")
	kind(t, "record removed by a completion over its current ETag", err, dps.KindNotFound)
}

func testRegistrationCAS(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	final := func(id, hub, prevETag string) dps.Operation {
		o := op(id, "dev-cas")
		o.Status = dps.StatusAssigned
		o.Result = &dps.Registration{RegistrationID: "dev-cas", AssignedHub: hub, Status: dps.StatusAssigned, ETag: prevETag}
		return o
	}
	first, err := s.CreateOperation(ctx(), final("cas-1", "h1", ""))
	if err != nil {
		t.Fatal(err)
	}
	// Computed from "no record" too, but the record exists now.
	_, err = other.CreateOperation(ctx(), final("cas-2", "h2", ""))
	kind(t, "stale (absent) previous record", err, dps.KindConflict)
	if _, err := s.Operation(ctx(), "cas-2"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("the refused operation was stored: %v", err)
	}
	second, err := other.CreateOperation(ctx(), final("cas-3", "h3", first.Result.ETag))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateOperation(ctx(), final("cas-4", "h4", first.Result.ETag))
	kind(t, "stale previous record", err, dps.KindConflict)
	// The asynchronous path: an accepted operation completed from a stale record stays unfinished.
	pend := op("cas-5", "dev-cas")
	if _, err := s.CreateOperation(ctx(), pend); err != nil {
		t.Fatal(err)
	}
	stale := final("cas-5", "h5", first.Result.ETag)
	_, err = s.CompleteOperation(ctx(), stale)
	kind(t, "complete from a stale record", err, dps.KindConflict)
	if got, _ := s.Operation(ctx(), "cas-5"); got.Status != dps.StatusAssigning {
		t.Errorf("operation completed despite the conflict: %s", got.Status)
	}
	fresh := final("cas-5", "h5", second.Result.ETag)
	if _, err := s.CompleteOperation(ctx(), fresh); err != nil {
		t.Fatal(err)
	}
	r, _ := s.Registration(ctx(), "dev-cas")
	if r.AssignedHub != "h5" {
		t.Errorf("record = %+v, want the last successful write (h5)", r)
	}
	// With device records: a stale completion writes none of them.
	if _, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: "h5", DeviceID: "dev-cas"}); err != nil {
		t.Fatal(err)
	}
	pend = op("cas-6", "dev-cas")
	if _, err := s.CreateOperation(ctx(), pend); err != nil {
		t.Fatal(err)
	}
	put, moved := dps.HubDevice{Hub: "h6", DeviceID: "dev-cas", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "a2V5"}}, &dps.HubDevice{Hub: "h5", DeviceID: "dev-cas"}
	_, err = other.CompleteOperationWithDevice(ctx(), final("cas-6", "h6", second.Result.ETag), put, moved)
	kind(t, "complete with device from a stale record", err, dps.KindConflict)
	_, err = s.HubDevice(ctx(), "h6", "dev-cas")
	kind(t, "device of a refused completion", err, dps.KindNotFound)
	if _, err := s.HubDevice(ctx(), "h5", "dev-cas"); err != nil {
		t.Errorf("a refused completion removed the device: %v", err)
	}
	done, err := other.CompleteOperationWithDevice(ctx(), final("cas-6", "h6", r.ETag), put, moved)
	if err != nil || done.Status != dps.StatusAssigned || done.Result.ETag == r.ETag {
		t.Fatalf("complete with device = %+v, %v", done.Result, err)
	}
	if _, err := s.HubDevice(ctx(), "h6", "dev-cas"); err != nil {
		t.Errorf("device record not written: %v", err)
	}
	_, err = s.HubDevice(ctx(), "h5", "dev-cas")
	kind(t, "moved device on its old hub", err, dps.KindNotFound)
	// Completing it again returns it as stored and writes nothing.
	again, err := s.CompleteOperationWithDevice(ctx(), final("cas-6", "h7", done.Result.ETag), dps.HubDevice{Hub: "h7", DeviceID: "dev-cas"}, nil)
	if err != nil || again.Result.AssignedHub != "h6" {
		t.Errorf("second completion = %+v, %v; want the stored result", again.Result, err)
	}
	_, err = s.HubDevice(ctx(), "h7", "dev-cas")
	kind(t, "device of a second completion", err, dps.KindNotFound)
}

// testConcurrentFailures: writes failing among many concurrent ones (which a
// store may commit together) leave nothing behind and do not affect the
// others.
func testConcurrentFailures(t *testing.T, f Factory) {
	s := f.New(t)
	if _, err := s.CreateOperation(ctx(), op("taken", "d")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			id := fmt.Sprintf("dev-%d", i)
			o := op("op-"+id, id)
			o.Status = dps.StatusAssigned
			o.Result = &dps.Registration{RegistrationID: id, DeviceID: id, AssignedHub: "ok.example.net", Status: dps.StatusAssigned}
			hub := "ok.example.net"
			if i%2 == 1 {
				o.ID, hub = "taken", fmt.Sprintf("bad-%d.example.net", i) // fails: the operation ID exists
			}
			_, err := s.CreateOperationWithDevice(ctx(), o, dps.HubDevice{Hub: hub, DeviceID: id}, nil)
			if (err == nil) != (i%2 == 0) {
				t.Errorf("write %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	for i := range 60 {
		id := fmt.Sprintf("dev-%d", i)
		_, regErr := s.Registration(ctx(), id)
		if i%2 == 0 {
			if regErr != nil {
				t.Errorf("%s: registration of a successful write: %v", id, regErr)
			}
			if _, err := s.HubDevice(ctx(), "ok.example.net", id); err != nil {
				t.Errorf("%s: device of a successful write: %v", id, err)
			}
			continue
		}
		kind(t, id+": registration of a failed write", regErr, dps.KindNotFound)
		_, err := s.HubDevice(ctx(), fmt.Sprintf("bad-%d.example.net", i), id)
		kind(t, id+": device of a failed write", err, dps.KindNotFound)
	}
}

// CheckPruneBatch checks a store opened with a prune batch of 3 deletes
// finished operations 3 at a time (the sweeper calls again after a full
// batch) and never an unfinished one.
func CheckPruneBatch(t *testing.T, s Store) {
	t.Helper()
	old := time.Now().Add(-48 * time.Hour)
	for i := range 8 {
		o := op(fmt.Sprintf("batch-%d", i), fmt.Sprintf("dev-batch-%d", i))
		o.Created = old.Add(time.Duration(i) * time.Second)
		if i > 0 {
			o.Status = dps.StatusFailed // one unfinished, seven finished
		}
		if _, err := s.CreateOperation(ctx(), o); err != nil {
			t.Fatal(err)
		}
	}
	var got []int64
	for range 4 {
		n, err := s.DeleteOperationsBefore(ctx(), time.Now().Add(-24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if fmt.Sprint(got) != "[3 3 1 0]" {
		t.Errorf("pruned %v in successive calls, want [3 3 1 0]", got)
	}
	if _, err := s.Operation(ctx(), "batch-0"); err != nil {
		t.Errorf("unfinished operation pruned: %v", err)
	}
}
