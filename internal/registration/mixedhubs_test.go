package registration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/hub/builtin"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/store/sqlite"
)

// remoteName is the remote hub of these tests (hubs[2]); hub-a and hub-b
// are built in.
const remoteName = "hub-c.example.net"

// fakeRemote is a remote hub: identities and their twins in memory, as
// the remote connector writes and reads them. An identity's ETag is made
// from its generation and what DPS writes, as dps's built-in hub makes it:
// a provisioning that writes the same identity over keeps it.
// deprovisionErr, when set, answers the n-th (0-based) delete; readErr,
// when set, every read of an identity's ETag (Removal); removeHook, when
// set, runs in each delete before it is answered.
type fakeRemote struct {
	mu             sync.Mutex
	devices        map[string]dps.HubDevice
	generations    int
	provisions     []dps.HubDevice
	deletes        []time.Time
	deprovisionErr func(n int) error
	readErr        error
	removeHook     func()
}

// put writes d as the remote hub's identity (r.mu held).
func (r *fakeRemote) put(d dps.HubDevice) {
	if cur, ok := r.devices[d.DeviceID]; ok {
		d.GenerationID = cur.GenerationID
	} else {
		r.generations++
		d.GenerationID = fmt.Sprint(r.generations)
	}
	d.ETag = fmt.Sprintf("%s/%s/%t", d.GenerationID, d.Auth.PrimaryKey, d.IoTEdge)
	r.devices[d.DeviceID] = d
}

func (r *fakeRemote) deleteCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.deletes)
}

func (r *fakeRemote) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.devices[id]
	return ok
}

func (r *fakeRemote) lastProvision() dps.HubDevice {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.provisions[len(r.provisions)-1]
}

func (r *fakeRemote) setTwin(id string, twin string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.devices[id]
	d.Twin = json.RawMessage(twin)
	r.devices[id] = d
}

// mixedHubs is dpsd's hub connector in small: the built-in connector on
// the store for hub-a and hub-b, fakeRemote for hub-c.
type mixedHubs struct {
	builtin *builtin.Connector
	remote  *fakeRemote
}

func (m *mixedHubs) Provision(ctx context.Context, d dps.HubDevice) error {
	if d.Hub != remoteName {
		return m.builtin.Provision(ctx, d)
	}
	m.remote.mu.Lock()
	defer m.remote.mu.Unlock()
	m.remote.put(d)
	m.remote.provisions = append(m.remote.provisions, d)
	return nil
}

func (m *mixedHubs) Deprovision(ctx context.Context, hub, id string) error {
	if hub != remoteName {
		return m.builtin.Deprovision(ctx, hub, id)
	}
	m.remote.mu.Lock()
	defer m.remote.mu.Unlock()
	n := len(m.remote.deletes)
	m.remote.deletes = append(m.remote.deletes, time.Now())
	if m.remote.deprovisionErr != nil {
		if err := m.remote.deprovisionErr(n); err != nil {
			return err
		}
	}
	delete(m.remote.devices, id)
	return nil
}

func (m *mixedHubs) Twin(ctx context.Context, hub, id string) (json.RawMessage, error) {
	if hub != remoteName {
		return m.builtin.Twin(ctx, hub, id)
	}
	m.remote.mu.Lock()
	defer m.remote.mu.Unlock()
	d, ok := m.remote.devices[id]
	if !ok {
		return nil, dps.Errorf(dps.KindNotFound, "not on the remote hub")
	}
	return d.Twin, nil
}

func (m *mixedHubs) Record(ctx context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	return m.builtin.Record(ctx, d)
}

func (m *mixedHubs) Removal(ctx context.Context, hub, id string) (*dps.HubDevice, error) {
	if hub != remoteName {
		return m.builtin.Removal(ctx, hub, id)
	}
	m.remote.mu.Lock()
	defer m.remote.mu.Unlock()
	if m.remote.readErr != nil {
		return nil, m.remote.readErr
	}
	d, ok := m.remote.devices[id]
	if !ok {
		return nil, nil
	}
	return &dps.HubDevice{Hub: hub, DeviceID: id, Replaces: d.ETag}, nil
}

// Remove deletes an identity as the remote connector does: with
// If-Match its ETag.
func (m *mixedHubs) Remove(ctx context.Context, d dps.HubDevice) error {
	if d.Hub != remoteName {
		return m.builtin.Remove(ctx, d)
	}
	m.remote.mu.Lock()
	hook := m.remote.removeHook
	m.remote.mu.Unlock()
	if hook != nil {
		hook()
	}
	m.remote.mu.Lock()
	defer m.remote.mu.Unlock()
	n := len(m.remote.deletes)
	m.remote.deletes = append(m.remote.deletes, time.Now())
	if m.remote.deprovisionErr != nil {
		if err := m.remote.deprovisionErr(n); err != nil {
			return err
		}
	}
	cur, ok := m.remote.devices[d.DeviceID]
	switch {
	case !ok:
		return nil
	case d.Replaces != "" && cur.ETag != d.Replaces:
		return dps.Errorf(dps.KindConflict, "HTTP 412: the device changed")
	}
	delete(m.remote.devices, d.DeviceID)
	return nil
}

// commitHook is the registration store with a hook before each operation
// transaction that writes device records: it may fail the commit (as a
// lost race does) or change the store first (as a concurrent writer).
type commitHook struct {
	*sqlite.DB
	before func(n int) error
	mu     sync.Mutex
	n      int
}

func (c *commitHook) hook() error {
	c.mu.Lock()
	n, before := c.n, c.before
	c.n++
	c.mu.Unlock()
	return before(n)
}

// set makes before the hook, counting commits from 0.
func (c *commitHook) set(before func(n int) error) {
	c.mu.Lock()
	c.before, c.n = before, 0
	c.mu.Unlock()
}

func (c *commitHook) CreateOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	if err := c.hook(); err != nil {
		return op, err
	}
	return c.DB.CreateOperationWithDevice(ctx, op, put, remove)
}

func (c *commitHook) CompleteOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error) {
	if err := c.hook(); err != nil {
		return op, err
	}
	return c.DB.CompleteOperationWithDevice(ctx, op, put, remove)
}

// mixedCase is a service with built-in hubs and the remote hub-c, its
// store wrapped in a commitHook (no hook until the test sets one), and
// one enrolled device, dev-mv, first provisioned to from.
func mixedCase(t *testing.T, from string, mods ...func(*registration.Options)) (*registration.Service, *commitHook, *mixedHubs, dps.Enrollment, dps.Credential) {
	t.Helper()
	db := dpstest.OpenSQLite(t, filepath.Join(t.TempDir(), "dps.db"))
	st := &commitHook{DB: db, before: func(int) error { return nil }}
	hub := &mixedHubs{builtin: &builtin.Connector{Store: db}, remote: &fakeRemote{devices: map[string]dps.HubDevice{}}}
	e := dpstest.SymmetricKeyEnrollment("dev-mv")
	e.IoTHubs = []string{from}
	e.InitialTwin = json.RawMessage(`{"tags":{"from":"enrollment"}}`)
	e = dpstest.MustPutEnrollment(t, db, e)
	c := cred(t, "dev-mv", string(e.Attestation.SymmetricKey.PrimaryKey))
	s := newService(t, db, hub, append([]func(*registration.Options){func(o *registration.Options) {
		o.Store = st
		o.RecordsDevices = func(h string) bool { return h != remoteName }
	}}, mods...)...)
	if op := waitFinal(t, s, "dev-mv", register(t, s, "dev-mv", c, "").ID, c); op.Status != dps.StatusAssigned || op.Result.AssignedHub != from {
		t.Fatalf("first registration: %s %+v", op.Status, op.Result)
	}
	return s, st, hub, e, c
}

// moveTo points the enrollment at hub.
func moveTo(t *testing.T, db *sqlite.DB, e dps.Enrollment, hub string) {
	t.Helper()
	cur, err := db.Enrollment(context.Background(), e.RegistrationID)
	if err != nil {
		t.Fatal(err)
	}
	cur.IoTHubs = []string{hub}
	dpstest.MustPutEnrollment(t, db, cur)
}

// TestRemoteToBuiltInDeletesAfterCommit: a device moving from a remote hub
// to a built-in one keeps its remote identity until the operation that
// gives it the built-in record committed. When the first commit loses a
// race (KindConflict), the operation computed again still finds the
// identity on the remote hub and migrates its twin; deleting it before
// the commit left the device with no identity anywhere, and lost its twin.
func TestRemoteToBuiltInDeletesAfterCommit(t *testing.T) {
	s, st, hub, e, c := mixedCase(t, remoteName)
	hub.remote.setTwin("dev-mv", `{"tags":{"owner":"ops"},"properties":{"desired":{"mode":"eco"}}}`) // changed on the remote hub
	moveTo(t, st.DB, e, "hub-a.example.net")
	var violations []string
	st.set(func(n int) error {
		_, err := st.DB.HubDevice(context.Background(), "hub-a.example.net", "dev-mv")
		if !hub.remote.has("dev-mv") && err != nil {
			violations = append(violations, "commit attempt with the device on no hub")
		}
		if n == 0 {
			return &dps.Error{Kind: dps.KindConflict, Message: "the device's registration changed concurrently"}
		}
		return nil
	})
	op := waitFinal(t, s, "dev-mv", register(t, s, "dev-mv", c, "").ID, c)
	if op.Status != dps.StatusAssigned || op.Result.AssignedHub != "hub-a.example.net" || op.Result.Substatus != dps.SubstatusDeviceDataMigrated {
		t.Fatalf("move: %s %+v", op.Status, op.Result)
	}
	if len(violations) > 0 {
		t.Errorf("%v", violations)
	}
	eventually(t, "the device deleted from the remote hub after the move committed", func() bool { return !hub.remote.has("dev-mv") })
	raw, err := hub.builtin.Twin(context.Background(), "hub-a.example.net", "dev-mv")
	if err != nil || !strings.Contains(string(raw), `"owner":"ops"`) || !strings.Contains(string(raw), `"mode":"eco"`) {
		t.Errorf("twin on the built-in hub = %s, %v; want the remote twin migrated", raw, err)
	}
}

// TestLeftRemoteIdentityDeleteRetried: a remote identity whose delete
// fails after the move committed is deleted again in the background with
// backoff; the device has its built-in identity all along, and a failure
// of the delete does not hold the registration.
func TestLeftRemoteIdentityDeleteRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, st, hub, e, c := mixedCase(t, remoteName)
		hub.remote.deprovisionErr = func(n int) error {
			if n < 3 {
				return errors.New("IoT hub hub-c.example.net: HTTP 503")
			}
			return nil
		}
		moveTo(t, st.DB, e, "hub-a.example.net")
		start := time.Now()
		op := waitFinal(t, s, "dev-mv", register(t, s, "dev-mv", c, "").ID, c)
		if op.Status != dps.StatusAssigned || op.Result.AssignedHub != "hub-a.example.net" || time.Since(start) > 0 {
			t.Fatalf("move: %s %+v after %s; want assigned at once", op.Status, op.Result, time.Since(start))
		}
		if _, err := st.DB.HubDevice(context.Background(), "hub-a.example.net", "dev-mv"); err != nil || !hub.remote.has("dev-mv") {
			t.Fatalf("right after the move: built-in record %v, remote identity %v; want both", err, hub.remote.has("dev-mv"))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		hub.remote.mu.Lock()
		deletes := append([]time.Time(nil), hub.remote.deletes...)
		hub.remote.mu.Unlock()
		if len(deletes) != 4 || hub.remote.has("dev-mv") {
			t.Fatalf("%d deletes, still on the remote hub: %v; want it deleted at the fourth", len(deletes), hub.remote.has("dev-mv"))
		}
		for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
			if gap := deletes[i+1].Sub(deletes[i]); gap < want || gap > want+want/4 {
				t.Errorf("delete %d came %s after the one before, want %s plus at most a quarter", i+2, gap, want)
			}
		}
	})
}

// TestBuiltInToRemoteRemovesUnchangedRecord: a device moving from a
// built-in hub to a remote one has its built-in record removed with the
// operation only if the record did not change since the operation read it
// (compare-and-set): a twin change meanwhile makes the operation compute
// again, and the remote hub gets the changed twin. Removing whatever the
// record had become migrated the twin as it was before the change.
func TestBuiltInToRemoteRemovesUnchangedRecord(t *testing.T) {
	s, st, hub, e, c := mixedCase(t, "hub-a.example.net")
	moveTo(t, st.DB, e, remoteName)
	st.set(func(n int) error {
		if n == 0 { // the device's twin changes on its built-in hub meanwhile
			cur, err := st.DB.HubDevice(context.Background(), "hub-a.example.net", "dev-mv")
			if err != nil {
				t.Fatal(err)
			}
			cur.Twin, cur.TwinWrite = json.RawMessage(`{"tags":{"late":"yes"}}`), dps.TwinApply
			if err := hub.builtin.Provision(context.Background(), cur); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	op := waitFinal(t, s, "dev-mv", register(t, s, "dev-mv", c, "").ID, c)
	if op.Status != dps.StatusAssigned || op.Result.AssignedHub != remoteName {
		t.Fatalf("move: %s %+v", op.Status, op.Result)
	}
	if _, err := st.DB.HubDevice(context.Background(), "hub-a.example.net", "dev-mv"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("built-in record after the move: %v, want removed", err)
	}
	if got := hub.remote.lastProvision(); !strings.Contains(string(got.Twin), `"late":"yes"`) {
		t.Errorf("twin provisioned on the remote hub = %s, want the change made before the move committed", got.Twin)
	}
}

// logBuffer is a test's log: what a slog.Logger wrote, for the test to
// read.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logTo makes the service log to l.
func logTo(l *logBuffer) func(*registration.Options) {
	return func(o *registration.Options) { o.Logger = slog.New(slog.NewTextHandler(l, nil)) }
}

// enrollOn enrolls a symmetric-key device of the service's store for hub
// and registers it there.
func enrollOn(t *testing.T, s *registration.Service, db *sqlite.DB, id, hub string) (dps.Enrollment, dps.Credential) {
	t.Helper()
	e := dpstest.SymmetricKeyEnrollment(id)
	e.IoTHubs = []string{hub}
	e = dpstest.MustPutEnrollment(t, db, e)
	c := cred(t, id, string(e.Attestation.SymmetricKey.PrimaryKey))
	if op := register(t, s, id, c, ""); op.Status != dps.StatusAssigned || op.Result.AssignedHub != hub {
		t.Fatalf("%s: %s %+v", id, op.Status, op.Result)
	}
	return e, c
}

// unavailable is a remote hub's transient failure.
var unavailable = errors.New("IoT hub hub-c.example.net: HTTP 503")

// TestLeftIdentityKeptWhenTheDeviceMovesBack: a device that moves back
// to a remote hub while the delete of the identity it left there is
// still being retried keeps its identity there: before each retry the
// device's registration is read again. The identity's ETag does not tell
// here (the hub keeps it when a provisioning writes the identity over
// unchanged, as dps's built-in hub does); deleting by device ID deleted
// the identity the device had just been given.
func TestLeftIdentityKeptWhenTheDeviceMovesBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, st, hub, e, c := mixedCase(t, remoteName)
		hub.remote.deprovisionErr = func(n int) error {
			if n == 0 {
				return unavailable
			}
			return nil
		}
		moveTo(t, st.DB, e, "hub-a.example.net")
		if op := register(t, s, "dev-mv", c, ""); op.Result.AssignedHub != "hub-a.example.net" {
			t.Fatalf("move: %+v", op.Result)
		}
		synctest.Wait() // the first delete failed
		moveTo(t, st.DB, e, remoteName)
		if op := register(t, s, "dev-mv", c, ""); op.Status != dps.StatusAssigned || op.Result.AssignedHub != remoteName {
			t.Fatalf("move back: %s %+v", op.Status, op.Result)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if !hub.remote.has("dev-mv") {
			t.Fatalf("the device moved back to the remote hub has no identity there (%d deletes)", hub.remote.deleteCount())
		}
		if n := hub.remote.deleteCount(); n != 1 {
			t.Errorf("%d deletes, want only the first, which failed", n)
		}
		if _, err := st.DB.HubDevice(context.Background(), "hub-a.example.net", "dev-mv"); dps.KindOf(err) != dps.KindNotFound {
			t.Errorf("built-in record after the move back: %v, want removed", err)
		}
	})
}

// TestLeftIdentityKeptWhenItChanged: the identity a device left is
// deleted only if it is still the one the move read before it committed
// (DELETE with If-Match its ETag): one written over since — provisioned
// again by another registration that has not committed yet, or by an
// operator — stays.
func TestLeftIdentityKeptWhenItChanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, st, hub, e, c := mixedCase(t, remoteName)
		hub.remote.deprovisionErr = func(n int) error {
			if n == 0 {
				return unavailable
			}
			return nil
		}
		moveTo(t, st.DB, e, "hub-a.example.net")
		if op := register(t, s, "dev-mv", c, ""); op.Result.AssignedHub != "hub-a.example.net" {
			t.Fatalf("move: %+v", op.Result)
		}
		synctest.Wait() // the first delete failed
		hub.remote.mu.Lock()
		d := hub.remote.devices["dev-mv"]
		d.IoTEdge = true // written over on the hub: a new ETag
		hub.remote.put(d)
		hub.remote.mu.Unlock()
		time.Sleep(time.Minute)
		synctest.Wait()
		if !hub.remote.has("dev-mv") {
			t.Fatalf("the identity written over after the move was deleted")
		}
		if n := hub.remote.deleteCount(); n != 2 {
			t.Errorf("%d deletes, want 2: one failed, one refused (412), and no more", n)
		}
	})
}

// TestLeftIdentityUnreadIsKept: when the identity a device leaves cannot
// be read before the move commits (its hub fails), the move still
// commits, and the identity is kept and logged for the operator rather
// than deleted whatever it becomes.
func TestLeftIdentityUnreadIsKept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log logBuffer
		s, st, hub, e, c := mixedCase(t, remoteName, logTo(&log))
		hub.remote.readErr = unavailable
		moveTo(t, st.DB, e, "hub-a.example.net")
		start := time.Now()
		if op := register(t, s, "dev-mv", c, ""); op.Status != dps.StatusAssigned || op.Result.AssignedHub != "hub-a.example.net" || time.Since(start) > 0 {
			t.Fatalf("move: %s %+v after %s, want assigned at once", op.Status, op.Result, time.Since(start))
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if !hub.remote.has("dev-mv") || hub.remote.deleteCount() != 0 {
			t.Fatalf("identity kept %v after %d deletes; want kept, no delete", hub.remote.has("dev-mv"), hub.remote.deleteCount())
		}
		if got := log.String(); !strings.Contains(got, "could not be read before the move") || !strings.Contains(got, "device_id=dev-mv") || !strings.Contains(got, "hub="+remoteName) {
			t.Errorf("log:\n%s\nwant the kept identity named", got)
		}
	})
}

// TestLeftIdentitiesDeletedInTheBackground: the deletes of identities
// devices left are never in the registrations' path, and at most four
// run at once per hub: ten devices moving off a remote hub whose deletes
// hang are each assigned at once, with four deletes in flight; the
// others wait their turn, and all are deleted once the hub answers.
func TestLeftIdentitiesDeletedInTheBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, st, hub, e, c := mixedCase(t, remoteName)
		type device struct {
			e dps.Enrollment
			c dps.Credential
		}
		devices := map[string]device{"dev-mv": {e, c}}
		for i := range 9 {
			id := fmt.Sprintf("dev-bg%d", i)
			de, dc := enrollOn(t, s, st.DB, id, remoteName)
			devices[id] = device{de, dc}
		}
		release := make(chan struct{})
		var mu sync.Mutex
		inFlight, most := 0, 0
		hub.remote.removeHook = func() {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			select {
			case <-release:
			case <-time.After(time.Hour):
			}
			mu.Lock()
			inFlight--
			mu.Unlock()
		}
		start := time.Now()
		for id, d := range devices {
			moveTo(t, st.DB, d.e, "hub-a.example.net")
			if op := register(t, s, id, d.c, ""); op.Status != dps.StatusAssigned || op.Result.AssignedHub != "hub-a.example.net" {
				t.Fatalf("%s: %s %+v", id, op.Status, op.Result)
			}
		}
		if took := time.Since(start); took > 0 {
			t.Errorf("ten moves took %s next to hanging deletes, want no time", took)
		}
		synctest.Wait()
		mu.Lock()
		now := inFlight
		mu.Unlock()
		if now != 4 {
			t.Errorf("%d deletes in flight to the hub, want 4", now)
		}
		close(release)
		synctest.Wait()
		for id := range devices {
			if hub.remote.has(id) {
				t.Errorf("%s is still on the remote hub", id)
			}
		}
		if most != 4 {
			t.Errorf("at most %d deletes were in flight at once, want 4", most)
		}
	})
}

// TestLeftIdentityPendingAtShutdown: a delete still pending when the
// service closes is logged for the operator (the identity stays).
func TestLeftIdentityPendingAtShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log logBuffer
		s, st, hub, e, c := mixedCase(t, remoteName, logTo(&log))
		hub.remote.deprovisionErr = func(int) error { return unavailable }
		moveTo(t, st.DB, e, "hub-a.example.net")
		register(t, s, "dev-mv", c, "")
		time.Sleep(10 * time.Second) // four failed deletes (at 0, 1, 3 and 7 s, plus jitter); the fifth backs off
		synctest.Wait()
		s.Close()
		if got := log.String(); !strings.Contains(got, "not deleted (shutting down)") || !strings.Contains(got, "device_id=dev-mv") || !strings.Contains(got, "attempts=4") {
			t.Errorf("log:\n%s\nwant the pending delete logged at shutdown", got)
		}
		if !hub.remote.has("dev-mv") {
			t.Errorf("the identity was deleted")
		}
	})
}

// hookedBuiltIn is the built-in connector, called rather than writing
// device records with the operations, with a hook before each Remove.
type hookedBuiltIn struct {
	*builtin.Connector
	beforeRemove func(dps.HubDevice)
	removes      *atomic.Int32 // Removes answered
}

func (h hookedBuiltIn) Remove(ctx context.Context, d dps.HubDevice) error {
	h.beforeRemove(d)
	defer h.removes.Add(1)
	return h.Connector.Remove(ctx, d)
}

// TestLeftBuiltInRecordGuarded: through the built-in connector (called,
// not writing records with the operations) the record a device left is
// deleted after the commit only if unchanged since the move read it: one
// written meanwhile stays; an unchanged one goes.
func TestLeftBuiltInRecordGuarded(t *testing.T) {
	db := dpstest.OpenSQLite(t, filepath.Join(t.TempDir(), "dps.db"))
	var touch atomic.Bool
	var removes atomic.Int32
	hub := hookedBuiltIn{Connector: &builtin.Connector{Store: db}, removes: &removes, beforeRemove: func(d dps.HubDevice) {
		if !touch.Load() {
			return
		}
		cur, err := db.HubDevice(context.Background(), d.Hub, d.DeviceID)
		if err != nil {
			t.Error(err)
			return
		}
		cur.StatusReason, cur.Replaces = "written by an operator", cur.ETag
		if _, err := db.PutHubDevice(context.Background(), cur); err != nil {
			t.Error(err)
		}
	}}
	s := newService(t, db, hub)
	for _, tc := range []struct {
		id      string
		touched bool
	}{{"dev-kept", true}, {"dev-gone", false}} {
		touch.Store(tc.touched)
		e, c := enrollOn(t, s, db, tc.id, "hub-a.example.net")
		moveTo(t, db, e, "hub-b.example.net")
		if op := register(t, s, tc.id, c, ""); op.Result.AssignedHub != "hub-b.example.net" {
			t.Fatalf("%s: move: %+v", tc.id, op.Result)
		}
		if tc.touched {
			eventually(t, "the background delete answered", func() bool { return removes.Load() == 1 })
			if _, err := db.HubDevice(context.Background(), "hub-a.example.net", tc.id); err != nil {
				t.Errorf("%s: the record written after the move: %v, want kept", tc.id, err)
			}
			continue
		}
		eventually(t, tc.id+" deleted from its old hub", func() bool {
			_, err := db.HubDevice(context.Background(), "hub-a.example.net", tc.id)
			return dps.KindOf(err) == dps.KindNotFound
		})
	}
}
