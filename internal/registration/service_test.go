package registration_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/opendps/dps/internal/twin"
)

const scope = "0ne0000TEST"

var hubs = []dps.LinkedHub{
	{HostName: "hub-a.example.net", AllocationWeight: 1, ApplyAllocationPolicy: true},
	{HostName: "hub-b.example.net", AllocationWeight: 1, ApplyAllocationPolicy: true},
	{HostName: "hub-c.example.net", AllocationWeight: 1, ApplyAllocationPolicy: false},
}

// hubFunc wraps the built-in connector with a Provision that can fail.
// Services using it leave RecordDevicesWithOperations unset, so the engine
// calls Provision rather than writing device records itself.
type hubFunc struct {
	provision func(context.Context, dps.HubDevice) error
	inner     builtin.Connector
}

func (h *hubFunc) Provision(ctx context.Context, d dps.HubDevice) error {
	if h.provision != nil {
		if err := h.provision(ctx, d); err != nil {
			return err
		}
	}
	return h.inner.Provision(ctx, d)
}

func (h *hubFunc) Twin(ctx context.Context, hub, deviceID string) (json.RawMessage, error) {
	return h.inner.Twin(ctx, hub, deviceID)
}

func (h *hubFunc) Deprovision(ctx context.Context, hub, deviceID string) error {
	return h.inner.Deprovision(ctx, hub, deviceID)
}

type allocatorFunc func(context.Context, dps.AllocationRequest) (dps.Assignment, error)

func (f allocatorFunc) Allocate(ctx context.Context, r dps.AllocationRequest) (dps.Assignment, error) {
	return f(ctx, r)
}

func newService(t *testing.T, db *sqlite.DB, hub registration.HubConnector, mods ...func(*registration.Options)) *registration.Service {
	t.Helper()
	// The built-in connector on db, as dpsd wires it: device records go
	// with the operations. Another connector is called.
	recordDevices := hub == nil
	if hub == nil {
		hub = &builtin.Connector{Store: db}
	}
	o := registration.Options{
		IDScope:    scope,
		LinkedHubs: hubs,
		Allocators: map[dps.AllocationPolicy]registration.Allocator{
			dps.AllocationHashed: allocation.Hashed{},
			dps.AllocationStatic: allocation.Static{},
		},
		Hubs:                        hub,
		Store:                       db,
		SweepInterval:               50 * time.Millisecond,
		SingleNode:                  true, // SQLite
		RecordDevicesWithOperations: recordDevices,
	}
	for _, m := range mods {
		m(&o)
	}
	if o.Attestors == nil {
		o.Attestors = attestors(db, mechanisms{now: o.Now})
	}
	s := registration.New(o)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func token(t testing.TB, regID, key string, expiry time.Time) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	return sas.New(scope+"/registrations/"+regID, raw, "registration", expiry)
}

func cred(t testing.TB, regID, key string) dps.Credential {
	return dps.Credential{SAS: token(t, regID, key, time.Now().Add(time.Hour))}
}

// eventually waits (10 s at most) for cond, which says that what
// happened.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not so after 10 s: %s", what)
		}
	}
}

// waitFinal polls the operation until it is final.
func waitFinal(t *testing.T, s *registration.Service, regID, opID string, c dps.Credential) dps.Operation {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		op, err := s.Operation(context.Background(), scope, regID, opID, c)
		if err != nil {
			t.Fatalf("Operation: %v", err)
		}
		if op.Status.Final() {
			return op
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("operation %s did not finish", opID)
	return dps.Operation{}
}

func register(t *testing.T, s *registration.Service, regID string, c dps.Credential, payload string) dps.Operation {
	t.Helper()
	req := registration.Request{IDScope: scope, RegistrationID: regID, Credential: c}
	if payload != "" {
		req.Payload = json.RawMessage(payload)
	}
	op, err := s.Register(context.Background(), req)
	if err != nil {
		t.Fatalf("Register(%s): %v", regID, err)
	}
	return waitFinal(t, s, regID, op.ID, c)
}

func TestRegisterSymmetricKeys(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil)
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("dev-individual"))
	g := dpstest.MustPutGroup(t, db, dpstest.SymmetricKeyGroup("group-1"))
	derive := func(groupKey dps.Key, id string) string {
		raw, _ := base64.StdEncoding.DecodeString(string(groupKey))
		return base64.StdEncoding.EncodeToString(sas.DeriveKey(raw, id))
	}
	tests := []struct {
		name, regID, key, wantGroup string
	}{
		{"ok/individual-primary", "dev-individual", string(e.Attestation.SymmetricKey.PrimaryKey), ""},
		{"ok/individual-secondary", "dev-individual", string(e.Attestation.SymmetricKey.SecondaryKey), ""},
		{"ok/individual-id-other-case", "DEV-Individual", string(e.Attestation.SymmetricKey.PrimaryKey), ""},
		{"ok/group-primary-derived", "grp-dev-1", derive(g.Attestation.SymmetricKey.PrimaryKey, "grp-dev-1"), "group-1"},
		{"ok/group-secondary-derived", "grp-dev-2", derive(g.Attestation.SymmetricKey.SecondaryKey, "grp-dev-2"), "group-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op := register(t, s, tt.regID, cred(t, tt.regID, tt.key), `{"model":"x"}`)
			if op.Status != dps.StatusAssigned {
				t.Fatalf("status = %s (%+v)", op.Status, op.Result)
			}
			r := op.Result
			if r.AssignedHub != "hub-a.example.net" && r.AssignedHub != "hub-b.example.net" {
				t.Errorf("assigned hub = %q; hub-c does not participate", r.AssignedHub)
			}
			if r.EnrollmentGroupID != tt.wantGroup {
				t.Errorf("group = %q, want %q", r.EnrollmentGroupID, tt.wantGroup)
			}
			hd, err := db.HubDevice(context.Background(), r.AssignedHub, r.DeviceID)
			if err != nil {
				t.Fatalf("hub device: %v", err)
			}
			if hd.Auth.Type != dps.HubAuthSAS || hd.Auth.PrimaryKey == "" {
				t.Errorf("hub device = %+v", hd)
			}
			if tt.wantGroup != "" && string(hd.Auth.PrimaryKey) != derive(g.Attestation.SymmetricKey.PrimaryKey, tt.regID) {
				t.Errorf("hub device key is not the derived primary key")
			}
		})
	}
}

func TestRegisterRejects(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil)
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("dev-1"))
	g := dpstest.MustPutGroup(t, db, dpstest.SymmetricKeyGroup("group-1"))
	pk := string(e.Attestation.SymmetricKey.PrimaryKey)
	otherScope, _ := base64.StdEncoding.DecodeString(pk)
	tests := []struct {
		name  string
		scope string
		regID string
		sas   string
	}{
		{"fail/wrong-key", scope, "dev-1", token(t, "dev-1", dpstest.Key(32), time.Now().Add(time.Hour))},
		{"fail/unknown-device", scope, "nobody", token(t, "nobody", dpstest.Key(32), time.Now().Add(time.Hour))},
		{"fail/expired", scope, "dev-1", token(t, "dev-1", pk, time.Now().Add(-10*time.Minute))},
		{"fail/wrong-scope-in-request", "0ne0000OTHR", "dev-1", sas.New("0ne0000OTHR/registrations/dev-1", otherScope, "registration", time.Now().Add(time.Hour))},
		{"fail/token-for-other-device", scope, "dev-1", token(t, "dev-2", pk, time.Now().Add(time.Hour))},
		{"fail/group-key-itself", scope, "grp-dev", token(t, "grp-dev", string(g.Attestation.SymmetricKey.PrimaryKey), time.Now().Add(time.Hour))},
		{"fail/no-token", scope, "dev-1", ""},
		{"fail/garbage-token", scope, "dev-1", "SharedAccessSignature garbage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Register(context.Background(), registration.Request{IDScope: tt.scope, RegistrationID: tt.regID, Credential: dps.Credential{SAS: tt.sas}})
			e := dps.AsError(err)
			if err == nil || e.Kind != dps.KindUnauthorized || e.Code != 401002 {
				t.Fatalf("err = %v, want 401002 unauthorized", err)
			}
			if _, err := db.Registration(context.Background(), tt.regID); dps.KindOf(err) != dps.KindNotFound {
				t.Errorf("a registration record was stored: %v", err)
			}
			if ops, _ := db.PendingOperations(context.Background()); len(ops) != 0 {
				t.Errorf("%d operations stored", len(ops))
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil)
	e := dpstest.SymmetricKeyEnrollment("dev-off")
	e.ProvisioningStatus = dps.ProvisioningDisabled
	e = dpstest.MustPutEnrollment(t, db, e)
	g := dpstest.SymmetricKeyGroup("group-off")
	g.ProvisioningStatus = dps.ProvisioningDisabled
	g = dpstest.MustPutGroup(t, db, g)
	gk, _ := base64.StdEncoding.DecodeString(string(g.Attestation.SymmetricKey.PrimaryKey))
	for name, c := range map[string]struct{ id, key string }{
		"individual": {"dev-off", string(e.Attestation.SymmetricKey.PrimaryKey)},
		"group":      {"grp-off-1", base64.StdEncoding.EncodeToString(sas.DeriveKey(gk, "grp-off-1"))},
	} {
		t.Run(name, func(t *testing.T) {
			op := register(t, s, c.id, cred(t, c.id, c.key), "")
			if op.Status != dps.StatusDisabled || op.Result == nil || op.Result.Status != dps.StatusDisabled {
				t.Fatalf("op = %+v", op)
			}
			if _, err := db.Registration(context.Background(), c.id); dps.KindOf(err) != dps.KindNotFound {
				t.Errorf("disabled device got a registration record: %v", err)
			}
			// A wrong key on a disabled enrollment is still 401, not disabled.
			_, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: c.id, Credential: cred(t, c.id, dpstest.Key(32))})
			if dps.KindOf(err) != dps.KindUnauthorized {
				t.Errorf("wrong key on disabled enrollment: %v, want unauthorized", err)
			}
		})
	}
}

func TestReprovisioning(t *testing.T) {
	twinA := json.RawMessage(`{"tags":{"site":"a"},"properties":{"desired":{"v":1}}}`)
	var target atomic.Value
	target.Store("hub-a.example.net")
	pick := allocatorFunc(func(_ context.Context, r dps.AllocationRequest) (dps.Assignment, error) {
		return dps.Assignment{Hub: target.Load().(string)}, nil
	})
	tests := []struct {
		name       string
		policy     *dps.ReprovisionPolicy
		wantHub    string
		wantSub    dps.Substatus
		wantTwinOf string // "migrated" or "initial"
	}{
		{"migrate", &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}, "hub-b.example.net", dps.SubstatusDeviceDataMigrated, "migrated"},
		{"reset", &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false}, "hub-b.example.net", dps.SubstatusDeviceDataReset, "initial"},
		{"never", &dps.ReprovisionPolicy{}, "hub-a.example.net", dps.SubstatusInitialAssignment, "migrated"},
		{"default-is-migrate", nil, "hub-b.example.net", dps.SubstatusDeviceDataMigrated, "migrated"},
	}
	for _, tt := range tests {
		for _, viaConnector := range []bool{false, true} {
			name := tt.name
			if viaConnector {
				name += "/connector-called"
			}
			t.Run(name, func(t *testing.T) {
				testReprovisioning(t, tt.policy, tt.wantHub, tt.wantSub, tt.wantTwinOf, viaConnector, &target, pick, twinA)
			})
		}
	}
}

// testReprovisioning is one case of TestReprovisioning: the device records
// written with the operations (as dpsd does), or by calling the connector.
func testReprovisioning(t *testing.T, policy *dps.ReprovisionPolicy, wantHub string, wantSub dps.Substatus, wantTwinOf string, viaConnector bool, target *atomic.Value, pick allocatorFunc, twinA json.RawMessage) {
	ctx := context.Background()
	tt := struct {
		policy     *dps.ReprovisionPolicy
		wantHub    string
		wantSub    dps.Substatus
		wantTwinOf string
	}{policy, wantHub, wantSub, wantTwinOf}
	db := dpstest.NewSQLite(t)
	var hub registration.HubConnector
	if viaConnector {
		hub = &hubFunc{inner: builtin.Connector{Store: db}}
	}
	s := newService(t, db, hub, func(o *registration.Options) {
		o.Allocators[dps.AllocationHashed] = pick
	})
	target.Store("hub-a.example.net")
	e := dpstest.SymmetricKeyEnrollment("dev-r")
	e.ReprovisionPolicy = tt.policy
	e.InitialTwin = twinA
	e = dpstest.MustPutEnrollment(t, db, e)
	c := cred(t, "dev-r", string(e.Attestation.SymmetricKey.PrimaryKey))
	op := register(t, s, "dev-r", c, "")
	if op.Result.Substatus != dps.SubstatusInitialAssignment || op.Result.AssignedHub != "hub-a.example.net" {
		t.Fatalf("first: %+v", op.Result)
	}
	// The device's twin changes on hub A: a service updates its
	// tags, the device reports a property.
	hd, _ := db.HubDevice(ctx, "hub-a.example.net", "dev-r")
	var live twin.Twin
	if err := json.Unmarshal(hd.LiveTwin, &live); err != nil {
		t.Fatalf("live twin of a provisioned device: %v (%s)", err, hd.LiveTwin)
	}
	if _, err := live.Update([]byte(`{"tags":{"site":"changed"}}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := live.PatchReported([]byte(`{"fw":"2"}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	hd.LiveTwin, _ = live.MarshalJSON()
	if _, err := db.PutHubDevice(ctx, hd); err != nil {
		t.Fatal(err)
	}
	target.Store("hub-b.example.net")
	op = register(t, s, "dev-r", c, "")
	if op.Result.AssignedHub != tt.wantHub || op.Result.Substatus != tt.wantSub {
		t.Fatalf("second: hub %s substatus %s, want %s %s", op.Result.AssignedHub, op.Result.Substatus, tt.wantHub, tt.wantSub)
	}
	now, err := db.HubDevice(ctx, tt.wantHub, "dev-r")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"tags":{"site":"changed"},"properties":{"desired":{"v":1}}}`
	if tt.wantTwinOf == "initial" {
		want = string(twinA)
	}
	if err := json.Unmarshal(now.LiveTwin, &live); err != nil {
		t.Fatal(err)
	}
	if got := string(live.Initial()); got != want {
		t.Errorf("twin on %s = %s, want %s", tt.wantHub, got, want)
	}
	// Reported properties stay with the identity: a device that
	// stays keeps them, one that moved starts without.
	kept := strings.Contains(string(live.DeviceDoc()), `"fw":"2"`)
	if moved := tt.wantHub != "hub-a.example.net"; kept == moved {
		t.Errorf("moved %v, reported properties kept %v: %s", moved, kept, live.DeviceDoc())
	}
	if tt.wantHub != "hub-a.example.net" {
		eventually(t, "the device deleted from the old hub", func() bool { // at once, or in the background (the connector called)
			_, err := db.HubDevice(ctx, "hub-a.example.net", "dev-r")
			return dps.KindOf(err) == dps.KindNotFound
		})
		// Moving back to the first hub.
		target.Store("hub-a.example.net")
		op = register(t, s, "dev-r", c, "")
		if op.Result.Substatus != dps.SubstatusReprovisionedToInitialAssignment {
			t.Errorf("back to first hub: substatus %s", op.Result.Substatus)
		}
	}
	// Deleting the registration record makes the next one initial again.
	if err := db.DeleteRegistration(ctx, "dev-r", ""); err != nil {
		t.Fatal(err)
	}
	op = register(t, s, "dev-r", c, "")
	if op.Result.Substatus != dps.SubstatusInitialAssignment {
		t.Errorf("after delete: substatus %s", op.Result.Substatus)
	}
}

func TestAllocationFailureEndsFailed(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil, func(o *registration.Options) {
		o.Allocators[dps.AllocationHashed] = allocatorFunc(func(context.Context, dps.AllocationRequest) (dps.Assignment, error) {
			return dps.Assignment{}, &dps.AllocationFailure{Code: 400207, Message: "webhook said no"}
		})
	})
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("dev-f"))
	op := register(t, s, "dev-f", cred(t, "dev-f", string(e.Attestation.SymmetricKey.PrimaryKey)), "")
	if op.Status != dps.StatusFailed || op.Result.ErrorCode != 400207 || op.Result.ErrorMessage != "webhook said no" {
		t.Fatalf("op = %+v / %+v", op, op.Result)
	}
	r, err := db.Registration(context.Background(), "dev-f")
	if err != nil || r.Status != dps.StatusFailed {
		t.Fatalf("record = %+v, %v", r, err)
	}
}

func TestStaticNeedsLinkedHub(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil)
	e := dpstest.SymmetricKeyEnrollment("dev-s")
	e.AllocationPolicy = dps.AllocationStatic
	e.IoTHubs = []string{"HUB-C.example.net"} // linked, not participating: still allowed when named
	e = dpstest.MustPutEnrollment(t, db, e)
	op := register(t, s, "dev-s", cred(t, "dev-s", string(e.Attestation.SymmetricKey.PrimaryKey)), "")
	if op.Status != dps.StatusAssigned || op.Result.AssignedHub != "hub-c.example.net" {
		t.Fatalf("op = %+v / %+v", op, op.Result)
	}
	e.IoTHubs = []string{"unlinked.example.net"}
	e = dpstest.MustPutEnrollment(t, db, e)
	op = register(t, s, "dev-s", cred(t, "dev-s", string(e.Attestation.SymmetricKey.PrimaryKey)), "")
	if op.Status != dps.StatusFailed {
		t.Fatalf("unlinked hub: op = %+v / %+v", op, op.Result)
	}
}

// TestRestartResumesOperations accepts operations while the hub connector
// fails, stops the service, and starts a new one on the same database.
func TestRestartResumesOperations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dps.db")
	db1, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"dev-restart-0", "dev-restart-1", "dev-restart-2"}
	creds := map[string]dps.Credential{}
	for _, id := range ids {
		e := dpstest.MustPutEnrollment(t, db1, dpstest.SymmetricKeyEnrollment(id))
		creds[id] = cred(t, id, string(e.Attestation.SymmetricKey.PrimaryKey))
	}
	broken := &hubFunc{inner: builtin.Connector{Store: db1}, provision: func(context.Context, dps.HubDevice) error {
		return errors.New("hub unreachable")
	}}
	s1 := registration.New(registration.Options{IDScope: scope, LinkedHubs: hubs, Store: db1, Attestors: attestors(db1, mechanisms{}), Hubs: broken, SingleNode: true,
		Allocators: map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}}, SweepInterval: time.Hour})
	if err := s1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ops := map[string]string{} // registration ID → operation ID
	for _, id := range ids {
		op, err := s1.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: id, Credential: creds[id]})
		if err != nil {
			t.Fatal(err)
		}
		ops[id] = op.ID
		// Registering again while it is unfinished answers the same operation.
		if again, err := s1.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: id, Credential: creds[id]}); err != nil || again.ID != op.ID {
			t.Errorf("register again while unfinished = %s, %v; want %s", again.ID, err, op.ID)
		}
	}
	time.Sleep(50 * time.Millisecond)
	s1.Close()
	db1.Close()

	db2 := dpstest.OpenSQLite(t, path)
	pending, _ := db2.PendingOperations(context.Background())
	if len(pending) != 3 {
		t.Fatalf("pending after stop = %d, want 3", len(pending))
	}
	s2 := newService(t, db2, nil)
	for _, id := range ids {
		op := waitFinal(t, s2, id, ops[id], creds[id])
		if op.Status != dps.StatusAssigned {
			t.Errorf("%s: %s", id, op.Status)
		}
		if _, err := db2.Registration(context.Background(), id); err != nil {
			t.Errorf("registration after restart: %v", err)
		}
	}
}

func TestOperationLookups(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil)
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("dev-o"))
	e2 := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("dev-p"))
	c := cred(t, "dev-o", string(e.Attestation.SymmetricKey.PrimaryKey))
	op := register(t, s, "dev-o", c, "")
	if _, err := s.Operation(context.Background(), scope, "dev-o", "1.0000.nope", c); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("unknown operation: %v", err)
	}
	// Another device cannot read dev-o's operation.
	c2 := cred(t, "dev-p", string(e2.Attestation.SymmetricKey.PrimaryKey))
	if _, err := s.Operation(context.Background(), scope, "dev-p", op.ID, c2); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("foreign operation: %v", err)
	}
	r, err := s.Lookup(context.Background(), scope, "dev-o", c)
	if err != nil || r.Status != dps.StatusAssigned {
		t.Errorf("Lookup = %+v, %v", r, err)
	}
	if _, err := s.Lookup(context.Background(), scope, "dev-p", c2); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("Lookup before registering: %v", err)
	}
}

func BenchmarkRegister(b *testing.B) {
	db := dpstest.NewSQLite(b)
	s := registration.New(registration.Options{IDScope: scope, LinkedHubs: hubs, Store: db, Attestors: attestors(db, mechanisms{}), Hubs: &builtin.Connector{Store: db},
		SingleNode: true, RecordDevicesWithOperations: true,
		Allocators: map[dps.AllocationPolicy]registration.Allocator{dps.AllocationHashed: allocation.Hashed{}}})
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	g := dpstest.MustPutGroup(b, db, dpstest.SymmetricKeyGroup("bench"))
	gk, _ := base64.StdEncoding.DecodeString(string(g.Attestation.SymmetricKey.PrimaryKey))
	var n atomic.Int64
	b.ReportAllocs()
	// Many devices at once, as in a factory line: each waits for its own
	// operation, so ns/op is wall time divided by completed registrations.
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := fmt.Sprintf("bench-%d", n.Add(1))
			c := dps.Credential{SAS: sas.New(scope+"/registrations/"+id, sas.DeriveKey(gk, id), "registration", time.Now().Add(time.Hour))}
			op, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: id, Credential: c})
			if err != nil {
				b.Fatal(err)
			}
			for {
				got, err := s.Operation(context.Background(), scope, id, op.ID, c)
				if err != nil {
					b.Fatal(err)
				}
				if got.Status.Final() {
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
	})
}

// TestSameDeviceOnTwoNodes: registrations of one device arriving at the
// same time on two engines (two nodes) sharing a store all complete, the
// registration record is the result of one of them, never a mix, and the
// device exists on exactly the hub that record names. Both paths: completed
// within the request (hashed) and asynchronously (custom).
func TestSameDeviceOnTwoNodes(t *testing.T) {
	for _, policy := range []dps.AllocationPolicy{dps.AllocationHashed, dps.AllocationCustom} {
		t.Run(string(policy), func(t *testing.T) {
			db := dpstest.NewSQLite(t)
			var target atomic.Int64
			pick := allocatorFunc(func(_ context.Context, r dps.AllocationRequest) (dps.Assignment, error) {
				return dps.Assignment{Hub: hubs[target.Add(1)%2].HostName}, nil // alternate hubs: every registration moves the device
			})
			node := func(id string) *registration.Service {
				return newService(t, db, nil, func(o *registration.Options) {
					o.Allocators[policy] = pick
					o.NodeID = id
					o.KeepOperations = 100 // every operation is polled at the end
				})
			}
			nodes := []*registration.Service{node("a"), node("b")}
			e := dpstest.SymmetricKeyEnrollment("twin-dev")
			e.Settings.AllocationPolicy = policy
			e = dpstest.MustPutEnrollment(t, db, e)
			c := cred(t, "twin-dev", string(e.Attestation.SymmetricKey.PrimaryKey))
			var wg sync.WaitGroup
			ids := make(chan [2]any, 20)
			for i := range 20 {
				wg.Go(func() {
					s := nodes[i%2]
					op, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: "twin-dev", Credential: c})
					if err != nil {
						t.Error(err)
						return
					}
					ids <- [2]any{s, op.ID}
				})
			}
			wg.Wait()
			close(ids)
			etags := map[string]string{}
			opIDs := map[string]bool{} // a register while one is in flight answers the operation in flight
			for p := range ids {
				opIDs[p[1].(string)] = true
				op := waitFinal(t, p[0].(*registration.Service), "twin-dev", p[1].(string), c)
				if op.Status != dps.StatusAssigned {
					t.Fatalf("%s: %s", op.ID, op.Status)
				}
				etags[op.Result.ETag] = op.Result.AssignedHub
			}
			r, err := db.Registration(context.Background(), "twin-dev")
			if err != nil {
				t.Fatal(err)
			}
			if hub, ok := etags[r.ETag]; !ok || hub != r.AssignedHub {
				t.Errorf("record %s/%s is not the result of any operation", r.AssignedHub, r.ETag)
			}
			if len(etags) != len(opIDs) {
				t.Errorf("%d distinct results for %d operations: some record was written twice", len(etags), len(opIDs))
			}
			for _, h := range hubs {
				_, err := db.HubDevice(context.Background(), h.HostName, "twin-dev")
				if on := err == nil; on != (h.HostName == r.AssignedHub) {
					t.Errorf("device on %s: %v (%v); the record names %s", h.HostName, on, err, r.AssignedHub)
				}
			}
		})
	}
}

// TestRegisteringAgainKeepsHubState: a device that registers again to the
// hub it is on keeps what the hub knows of it: its status (a disabled
// device stays disabled), its generation, its reported properties; an
// initial twin the webhook returns replaces its tags and desired
// properties, and without one its twin stays as it is. Both with the
// records written with the operations and through the connector.
func TestRegisteringAgainKeepsHubState(t *testing.T) {
	for _, viaConnector := range []bool{false, true} {
		t.Run(fmt.Sprintf("connector-called=%v", viaConnector), func(t *testing.T) {
			ctx := context.Background()
			db := dpstest.NewSQLite(t)
			var webhookTwin atomic.Value
			webhookTwin.Store("")
			alloc := allocatorFunc(func(context.Context, dps.AllocationRequest) (dps.Assignment, error) {
				return dps.Assignment{Hub: "hub-a.example.net", InitialTwin: json.RawMessage(webhookTwin.Load().(string))}, nil
			})
			var hub registration.HubConnector
			if viaConnector {
				hub = &hubFunc{inner: builtin.Connector{Store: db}}
			}
			s := newService(t, db, hub, func(o *registration.Options) { o.Allocators[dps.AllocationHashed] = alloc })
			e := dpstest.SymmetricKeyEnrollment("dev-k")
			e.InitialTwin = json.RawMessage(`{"tags":{"site":"a"},"properties":{"desired":{"rate":1}}}`)
			e = dpstest.MustPutEnrollment(t, db, e)
			c := cred(t, "dev-k", string(e.Attestation.SymmetricKey.PrimaryKey))
			liveOf := func(d dps.HubDevice) twin.Twin {
				t.Helper()
				var tw twin.Twin
				if err := json.Unmarshal(d.LiveTwin, &tw); err != nil {
					t.Fatalf("live twin %s: %v", d.LiveTwin, err)
				}
				return tw
			}

			register(t, s, "dev-k", c, "")
			first, err := db.HubDevice(ctx, "hub-a.example.net", "dev-k")
			if err != nil {
				t.Fatal(err)
			}
			if first.Status != dps.DeviceEnabled || len(first.GenerationID) != 18 {
				t.Fatalf("new identity: status %q generation %q", first.Status, first.GenerationID)
			}
			tw := liveOf(first)
			if got := string(tw.DeviceDoc()); got != `{"desired":{"rate":1,"$version":1},"reported":{"$version":1}}` {
				t.Fatalf("new identity's twin = %s", got)
			}
			// The hub changes the device: an operator disables it, the
			// device reports a property.
			if _, err := tw.PatchReported([]byte(`{"fw":"1.2"}`), time.Now()); err != nil {
				t.Fatal(err)
			}
			first.LiveTwin, _ = tw.MarshalJSON()
			first.Status, first.StatusReason, first.Replaces = dps.DeviceDisabled, "stolen", first.ETag
			if _, err := db.PutHubDevice(ctx, first); err != nil {
				t.Fatal(err)
			}

			register(t, s, "dev-k", c, "")
			second, _ := db.HubDevice(ctx, "hub-a.example.net", "dev-k")
			if second.Status != dps.DeviceDisabled || second.StatusReason != "stolen" || second.GenerationID != first.GenerationID {
				t.Errorf("after registering again: status %q (%q) generation %q, want disabled (stolen) %q", second.Status, second.StatusReason, second.GenerationID, first.GenerationID)
			}
			if got := string(liveOf(second).DeviceDoc()); got != `{"desired":{"rate":1,"$version":1},"reported":{"fw":"1.2","$version":2}}` {
				t.Errorf("twin after registering again = %s, want it unchanged", got)
			}

			webhookTwin.Store(`{"tags":{"site":"b"},"properties":{"desired":{"mode":"eco"}}}`)
			register(t, s, "dev-k", c, "")
			third, _ := db.HubDevice(ctx, "hub-a.example.net", "dev-k")
			tw = liveOf(third)
			if got := string(tw.DeviceDoc()); got != `{"desired":{"mode":"eco","$version":2},"reported":{"fw":"1.2","$version":2}}` {
				t.Errorf("twin after the webhook's initial twin = %s", got)
			}
			if got := string(tw.Service().Tags); got != `{"site":"b"}` {
				t.Errorf("tags after the webhook's initial twin = %s", got)
			}
			if third.Status != dps.DeviceDisabled || third.GenerationID != first.GenerationID {
				t.Errorf("webhook twin changed the identity: %q %q", third.Status, third.GenerationID)
			}

			// The registration record deleted, an enrollment without an
			// initial twin: the identity on the hub is kept as it is.
			webhookTwin.Store("")
			if err := db.DeleteRegistration(ctx, "dev-k", ""); err != nil {
				t.Fatal(err)
			}
			e.InitialTwin = nil
			dpstest.MustPutEnrollment(t, db, e)
			if op := register(t, s, "dev-k", c, ""); op.Status != dps.StatusAssigned {
				t.Fatalf("after deleting the registration record: %s %+v", op.Status, op.Result)
			}
			fourth, _ := db.HubDevice(ctx, "hub-a.example.net", "dev-k")
			if got := string(liveOf(fourth).DeviceDoc()); got != string(tw.DeviceDoc()) || fourth.GenerationID != first.GenerationID {
				t.Errorf("twin after registering without a record = %s, want %s kept", got, tw.DeviceDoc())
			}
		})
	}
}
