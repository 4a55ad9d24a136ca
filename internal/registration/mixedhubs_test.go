package registration_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
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
// the remote connector writes and reads them. deprovisionErr, when set,
// answers the n-th (0-based) delete.
type fakeRemote struct {
	mu             sync.Mutex
	devices        map[string]dps.HubDevice
	provisions     []dps.HubDevice
	deletes        []time.Time
	deprovisionErr func(n int) error
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
	m.remote.devices[d.DeviceID] = d
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
	return m.builtin.Removal(ctx, hub, id)
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
func mixedCase(t *testing.T, from string) (*registration.Service, *commitHook, *mixedHubs, dps.Enrollment, dps.Credential) {
	t.Helper()
	db := dpstest.OpenSQLite(t, filepath.Join(t.TempDir(), "dps.db"))
	st := &commitHook{DB: db, before: func(int) error { return nil }}
	hub := &mixedHubs{builtin: &builtin.Connector{Store: db}, remote: &fakeRemote{devices: map[string]dps.HubDevice{}}}
	e := dpstest.SymmetricKeyEnrollment("dev-mv")
	e.IoTHubs = []string{from}
	e.InitialTwin = json.RawMessage(`{"tags":{"from":"enrollment"}}`)
	e = dpstest.MustPutEnrollment(t, db, e)
	c := cred(t, "dev-mv", string(e.Attestation.SymmetricKey.PrimaryKey))
	s := newService(t, db, hub, func(o *registration.Options) {
		o.Store = st
		o.RecordsDevices = func(h string) bool { return h != remoteName }
	})
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
	if hub.remote.has("dev-mv") {
		t.Errorf("the device is still on the remote hub after the move committed")
	}
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
