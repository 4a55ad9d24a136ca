package registration_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/allocation"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/store/sqlite"
)

// gate is a custom allocator whose calls for a webhook URL containing
// "hang" block until the gate is opened; other calls answer at once.
type gate struct {
	open    chan struct{}
	once    sync.Once
	started chan string // registration IDs, as calls start
	active  atomic.Int32
	maxHang atomic.Int32
}

func newGate(t *testing.T) *gate {
	g := &gate{open: make(chan struct{}), started: make(chan string, 1000)}
	t.Cleanup(g.release)
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) Allocate(ctx context.Context, r dps.AllocationRequest) (dps.Assignment, error) {
	g.started <- r.RegistrationID
	if strings.Contains(r.Settings().CustomAllocation.WebhookURL, "hang") {
		n := g.active.Add(1)
		defer g.active.Add(-1)
		for m := g.maxHang.Load(); n > m && !g.maxHang.CompareAndSwap(m, n); m = g.maxHang.Load() {
		}
		select {
		case <-g.open:
		case <-ctx.Done():
			return dps.Assignment{}, ctx.Err()
		}
	}
	return dps.Assignment{Hub: r.Candidates[0].HostName, Payload: json.RawMessage(`{"ok":true}`)}, nil
}

func customEnrollment(id, url string) dps.Enrollment {
	e := dpstest.SymmetricKeyEnrollment(id)
	e.AllocationPolicy = dps.AllocationCustom
	e.CustomAllocation = &dps.CustomAllocation{WebhookURL: url, APIVersion: "2021-10-01"}
	return e
}

func customGroup(id, url string) dps.Group {
	g := dpstest.SymmetricKeyGroup(id)
	g.AllocationPolicy = dps.AllocationCustom
	g.CustomAllocation = &dps.CustomAllocation{WebhookURL: url, APIVersion: "2021-10-01"}
	return g
}

func groupCred(t *testing.T, g dps.Group, id string) dps.Credential {
	raw, _ := base64.StdEncoding.DecodeString(string(g.Attestation.SymmetricKey.PrimaryKey))
	return dps.Credential{SAS: sas.New(scope+"/registrations/"+id, sas.DeriveKey(raw, id), "registration", time.Now().Add(time.Hour))}
}

func start(t *testing.T, s *registration.Service, id string, c dps.Credential) dps.Operation {
	t.Helper()
	op, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: id, Credential: c, Payload: json.RawMessage(`{"model":"m"}`)})
	if err != nil {
		t.Fatalf("Register(%s): %v", id, err)
	}
	return op
}

// stripe is the lock stripe the engine used to serialise a registration ID on.
func stripe(id string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(dps.FoldID(id)))
	return h.Sum32() % 256
}

// TestNoLockAcrossAllocation: while one device's webhook hangs, a device
// whose registration ID shares its lock stripe registers (hashed, within
// the request) at once.
func TestNoLockAcrossAllocation(t *testing.T) {
	db := dpstest.NewSQLite(t)
	g := newGate(t)
	s := newService(t, db, nil, func(o *registration.Options) { o.Allocators[dps.AllocationCustom] = g })
	slow := dpstest.MustPutEnrollment(t, db, customEnrollment("stripe-slow", "https://hook.example/hang"))
	fast := ""
	for i := 0; fast == ""; i++ {
		if id := fmt.Sprintf("stripe-fast-%d", i); stripe(id) == stripe("stripe-slow") {
			fast = id
		}
	}
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment(fast))
	start(t, s, "stripe-slow", cred(t, "stripe-slow", string(slow.Attestation.SymmetricKey.PrimaryKey)))
	<-g.started // the webhook call is under way, and hangs

	done := make(chan dps.Operation, 1)
	began := time.Now()
	go func() {
		op, _ := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: fast, Credential: cred(t, fast, string(e.Attestation.SymmetricKey.PrimaryKey))})
		done <- op
	}()
	select {
	case op := <-done:
		if op.Status != dps.StatusAssigned {
			t.Fatalf("hashed registration = %+v", op)
		}
		t.Logf("hashed registration beside a hanging webhook: %s", time.Since(began))
	case <-time.After(2 * time.Second):
		t.Fatal("a hashed registration waited for another device's webhook (shared lock)")
	}
}

// TestHangingWebhookDoesNotStarveOthers: operations of a webhook that hangs
// take at most WebhookConcurrency workers; another webhook's operations run
// on the rest, though the hanging ones arrived first and outnumber the
// workers.
func TestHangingWebhookDoesNotStarveOthers(t *testing.T) {
	db := dpstest.NewSQLite(t)
	g := newGate(t)
	s := newService(t, db, nil, func(o *registration.Options) {
		o.Allocators[dps.AllocationCustom] = g
		o.Workers, o.WebhookConcurrency = 8, 3
	})
	hang := dpstest.MustPutGroup(t, db, customGroup("hang-grp", "https://hook.example/hang?code=a"))
	// Another key of the same function is the same endpoint.
	hang2 := dpstest.MustPutGroup(t, db, customGroup("hang-grp-2", "https://HOOK.example/hang?code=b"))
	ok := dpstest.MustPutGroup(t, db, customGroup("ok-grp", "https://hook.example/ok"))
	for i := range 20 {
		grp := []dps.Group{hang, hang2}[i%2]
		id := fmt.Sprintf("hang-%02d", i)
		start(t, s, id, groupCred(t, grp, id))
	}
	deadline := time.Now().Add(5 * time.Second)
	for i := range 10 {
		id := fmt.Sprintf("ok-%02d", i)
		c := groupCred(t, ok, id)
		op := start(t, s, id, c)
		for !op.Status.Final() {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not finish beside a hanging webhook (%d hanging calls at once)", id, g.maxHang.Load())
			}
			time.Sleep(5 * time.Millisecond)
			var err error
			if op, err = s.Operation(context.Background(), scope, id, op.ID, c); err != nil {
				t.Fatal(err)
			}
		}
		if op.Status != dps.StatusAssigned {
			t.Fatalf("%s: %+v", id, op.Result)
		}
	}
	if n := g.maxHang.Load(); n != 3 {
		t.Errorf("%d calls to the hanging webhook at once, want WebhookConcurrency = 3", n)
	}
	// Once the webhook answers, the backlog drains.
	g.release()
	for i := range 20 {
		id := fmt.Sprintf("hang-%02d", i)
		grp := []dps.Group{hang, hang2}[i%2]
		r, err := waitRecord(db, id)
		if err != nil || r.Status != dps.StatusAssigned {
			t.Fatalf("%s after the webhook recovered: %+v, %v (group %s)", id, r, err, grp.ID)
		}
	}
}

func waitRecord(db *sqlite.DB, id string) (dps.Registration, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := db.Registration(context.Background(), id)
		if err == nil || time.Now().After(deadline) {
			return r, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRegisterAgainWhileInFlight: a device that registers again while its
// registration runs is answered with the operation in flight; only one
// operation of it is unfinished, and once that one ends the next register
// starts a new one.
func TestRegisterAgainWhileInFlight(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	g := newGate(t)
	s := newService(t, db, nil, func(o *registration.Options) { o.Allocators[dps.AllocationCustom] = g })
	e := dpstest.MustPutEnrollment(t, db, customEnrollment("again-dev", "https://hook.example/hang"))
	c := cred(t, "again-dev", string(e.Attestation.SymmetricKey.PrimaryKey))
	first := start(t, s, "again-dev", c)
	<-g.started
	for range 5 {
		op := start(t, s, "AGAIN-dev", c)
		if op.ID != first.ID || op.Status != dps.StatusAssigning {
			t.Fatalf("register while in flight = %s %s, want the operation in flight %s", op.ID, op.Status, first.ID)
		}
	}
	if pending, _ := db.PendingOperations(ctx); len(pending) != 1 {
		t.Errorf("%d unfinished operations of one device, want 1", len(pending))
	}
	g.release()
	if op := waitFinal(t, s, "again-dev", first.ID, c); op.Status != dps.StatusAssigned {
		t.Fatalf("in-flight operation = %+v", op.Result)
	}
	next := start(t, s, "again-dev", c)
	if next.ID == first.ID {
		t.Errorf("a register after the operation ended got the old operation")
	}
	waitFinal(t, s, "again-dev", next.ID, c)
}

// TestFinishedOperationsBounded: one device registering again and again
// leaves at most KeepOperations finished operations in the store, and no
// finished operation (stored or cached for polls) keeps its payload; the
// registration state still carries the webhook's payload for the device.
func TestFinishedOperationsBounded(t *testing.T) {
	ctx := context.Background()
	for _, policy := range []dps.AllocationPolicy{dps.AllocationHashed, dps.AllocationCustom} {
		t.Run(string(policy), func(t *testing.T) {
			db := dpstest.NewSQLite(t)
			g := newGate(t)
			s := newService(t, db, nil, func(o *registration.Options) {
				o.Allocators[dps.AllocationCustom] = g
				o.KeepOperations = 3
			})
			e := customEnrollment("busy-dev", "https://hook.example/ok")
			e.AllocationPolicy = policy
			e = dpstest.MustPutEnrollment(t, db, e)
			c := cred(t, "busy-dev", string(e.Attestation.SymmetricKey.PrimaryKey))
			payload := `{"blob":"` + strings.Repeat("p", 4096) + `"}`
			var ids []string
			for range 12 {
				ids = append(ids, register(t, s, "busy-dev", c, payload).ID)
			}
			// The trim follows the write of the result the device may already
			// have read: give it a moment.
			for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if _, err := db.Operation(ctx, ids[len(ids)-4]); dps.KindOf(err) == dps.KindNotFound {
					break
				}
			}
			for i, id := range ids {
				op, err := db.Operation(ctx, id)
				if kept := err == nil; kept != (i >= len(ids)-3) {
					t.Errorf("operation %d of %d kept in the store = %v (%v)", i+1, len(ids), kept, err)
				}
				if err == nil && len(op.Payload) > 0 && string(op.Payload) != "null" {
					t.Errorf("stored final operation %d keeps the device's payload (%d bytes)", i+1, len(op.Payload))
				}
			}
			last, err := s.Operation(ctx, scope, "busy-dev", ids[len(ids)-1], c)
			if err != nil || len(last.Payload) > 0 && string(last.Payload) != "null" {
				t.Errorf("polled operation = payload %d bytes, %v", len(last.Payload), err)
			}
			if policy == dps.AllocationCustom && (last.Result == nil || string(last.Result.Payload) != `{"ok":true}`) {
				t.Errorf("the webhook's payload for the device is lost: %+v", last.Result)
			}
		})
	}
}

// TestPollValidatesRegistrationID: a poll or status lookup with an invalid
// registration ID is a bad request (400004), as a register is, even from a
// group device whose key signs that ID.
func TestPollValidatesRegistrationID(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil)
	g := dpstest.MustPutGroup(t, db, dpstest.SymmetricKeyGroup("long-grp"))
	id := strings.Repeat("a", 129)
	c := groupCred(t, g, id)
	want := func(name string, err error) {
		t.Helper()
		if e := dps.AsError(err); err == nil || e.Kind != dps.KindInvalid || e.Code != 400004 {
			t.Errorf("%s with a %d-character ID: %v, want 400004", name, len(id), err)
		}
	}
	_, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: id, Credential: c})
	want("register", err)
	_, err = s.Operation(context.Background(), scope, id, "1.0011223344556677.00000000-0000-4000-8000-000000000000", c)
	want("poll", err)
	_, err = s.Lookup(context.Background(), scope, id, c)
	want("status lookup", err)
	for _, bad := range []string{"-lead", "has space", ""} {
		_, err = s.Operation(context.Background(), scope, bad, "1.x", groupCred(t, g, bad))
		if dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("poll for %q: %v, want invalid", bad, err)
		}
	}
}

// TestConcurrentRegistersOfOneDevice: registers of one device arriving
// together (custom allocation) create one operation and one webhook call;
// every one of them is answered with that operation.
func TestConcurrentRegistersOfOneDevice(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	g := newGate(t)
	s := newService(t, db, nil, func(o *registration.Options) { o.Allocators[dps.AllocationCustom] = g })
	grp := dpstest.MustPutGroup(t, db, customGroup("burst-grp", "https://hook.example/hang"))
	c := groupCred(t, grp, "burst-dev")
	const n = 32
	ids := make(chan string, n)
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-begin
			op, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: "burst-dev", Credential: c, Payload: json.RawMessage(`{"model":"m"}`)})
			if err != nil {
				t.Errorf("Register: %v", err)
				return
			}
			ids <- op.ID
		})
	}
	close(begin)
	wg.Wait()
	close(ids)
	answers := map[string]int{}
	for id := range ids {
		answers[id]++
	}
	if len(answers) != 1 {
		t.Errorf("%d registers of one device were answered with %d operations: %v", n, len(answers), answers)
	}
	select {
	case <-g.started: // the one webhook call
	case <-time.After(5 * time.Second):
		t.Fatal("no webhook call")
	}
	time.Sleep(100 * time.Millisecond)
	if more := len(g.started); more != 0 {
		t.Errorf("%d webhook calls, want 1", 1+more)
	}
	if pending, err := db.PendingOperations(ctx); err != nil || len(pending) != 1 {
		t.Errorf("%d unfinished operations of one device (%v), want 1", len(pending), err)
	}
}

// headerCounter counts a store's listings of unfinished operations: whole
// (with the devices' payloads) and headers only.
type headerCounter struct {
	*sqlite.DB
	whole, headers atomic.Int32
}

func (c *headerCounter) PendingOperations(ctx context.Context) ([]dps.Operation, error) {
	c.whole.Add(1)
	return c.DB.PendingOperations(ctx)
}

func (c *headerCounter) PendingOperationHeaders(ctx context.Context) ([]dps.Operation, error) {
	c.headers.Add(1)
	return c.DB.PendingOperationHeaders(ctx)
}

// TestSweepListsHeadersOnly: resuming after a restart and every sweep list
// the unfinished operations without their documents (payloads up to 96 KB
// each); an operation resumed so (a group device whose registration ID has
// capitals, as sent) still completes with the key derived from its ID as
// sent.
func TestSweepListsHeadersOnly(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dps.db")
	db1, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	g := dpstest.MustPutGroup(t, db1, dpstest.SymmetricKeyGroup("mixed-grp"))
	c := groupCred(t, g, "Sensor-Mixed")
	broken := &hubFunc{inner: builtin.Connector{Store: db1}, provision: func(context.Context, dps.HubDevice) error { return errors.New("hub unreachable") }}
	s1 := registration.New(registration.Options{IDScope: scope, LinkedHubs: hubs, Store: db1, Attestors: attestors(db1, mechanisms{}), Hubs: broken, SingleNode: true,
		Allocators: map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}}, SweepInterval: time.Hour})
	if err := s1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	op, err := s1.Register(ctx, registration.Request{IDScope: scope, RegistrationID: "Sensor-Mixed", Credential: c,
		Payload: json.RawMessage(`{"blob":"` + strings.Repeat("p", 60_000) + `"}`)})
	if err != nil || op.Status.Final() {
		t.Fatalf("operation = %+v, %v; want it unfinished (the hub is unreachable)", op, err)
	}
	s1.Close()
	db1.Close()

	db2 := dpstest.OpenSQLite(t, path)
	counted := &headerCounter{DB: db2}
	s2 := registration.New(registration.Options{IDScope: scope, LinkedHubs: hubs, Store: counted, Attestors: attestors(db2, mechanisms{}), Hubs: &builtin.Connector{Store: db2}, SingleNode: true,
		Allocators: map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}}, SweepInterval: 20 * time.Millisecond})
	if err := s2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	done := waitFinal(t, s2, "Sensor-Mixed", op.ID, c)
	if done.Status != dps.StatusAssigned || done.Result == nil {
		t.Fatalf("resumed operation = %+v", done)
	}
	hd, err := db2.HubDevice(ctx, done.Result.AssignedHub, done.Result.DeviceID)
	raw, _ := base64.StdEncoding.DecodeString(string(g.Attestation.SymmetricKey.PrimaryKey))
	if want := base64.StdEncoding.EncodeToString(sas.DeriveKey(raw, "Sensor-Mixed")); err != nil || string(hd.Auth.PrimaryKey) != want {
		t.Errorf("device key on the hub = %v, %v; want the one derived from the ID as sent", hd.Auth.PrimaryKey == dps.Key(want), err)
	}
	time.Sleep(150 * time.Millisecond) // a few sweeps
	if w, h := counted.whole.Load(), counted.headers.Load(); w != 0 || h < 3 {
		t.Errorf("unfinished operations listed %d times whole and %d times as headers, want only headers (start and every sweep)", w, h)
	}
}
