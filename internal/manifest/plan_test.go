package manifest

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/enrollment"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/wire"
)

const testHub = "hub.test"

// service is a real service API and built-in hub (SQLite store, the
// management use case, the HTTPS adapter) on a loopback TLS listener.
type testService struct {
	t      *Target
	store  *sqlite.DB
	writes atomic.Int64 // PUT, PATCH and DELETE requests served
	// hook, when set, serves the requests instead of the service (next):
	// a test's faults, or another service's behaviour.
	hook atomic.Pointer[func(w http.ResponseWriter, r *http.Request, next http.Handler)]
}

// setHook makes f serve the service's requests (nil: the service again).
func (s *testService) setHook(f func(w http.ResponseWriter, r *http.Request, next http.Handler)) {
	if f == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&f)
}

func newService(tb testing.TB) *testService {
	tb.Helper()
	st := dpstest.NewSQLite(tb)
	svcKey, hubKey := dpstest.Key(32), dpstest.Key(32)
	checker, err := access.New([]access.Policy{{Name: "owner", PrimaryKey: svcKey, Rights: []access.Right{access.ServiceConfig,
		access.EnrollmentRead, access.EnrollmentWrite, access.RegistrationStatusRead, access.RegistrationStatusWrite}}}, []string{"localhost"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	linked := []dps.LinkedHub{{HostName: testHub, AllocationWeight: 1, ApplyAllocationPolicy: true}}
	service := httpapi.NewService(httpapi.ServiceOptions{Manager: enrollment.New(enrollment.Options{Store: st, LinkedHubs: linked}), Authorizer: checker})
	h := httpapi.New(httpapi.Options{Service: service, Hub: iothub.New(iothub.Options{Store: st, Hubs: []string{testHub}}),
		HubPolicies: map[string][]access.Policy{testHub: {{Name: "iothubowner", PrimaryKey: hubKey, Rights: access.HubRights()}}}})
	s := &testService{store: st}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && !strings.HasSuffix(r.URL.Path, "/query") && !strings.HasSuffix(r.URL.Path, "/attestationmechanism") {
			s.writes.Add(1)
		}
		if f := s.hook.Load(); f != nil {
			(*f)(w, r, h)
			return
		}
		h.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	key := func(k string) []byte { b, _ := base64.StdEncoding.DecodeString(k); return b }
	s.t = &Target{
		Service:  &client.Client{Endpoint: srv.URL, HostName: "localhost", KeyName: "owner", Key: key(svcKey), HTTP: srv.Client()},
		Hubs:     map[string]*client.Client{testHub: {Endpoint: srv.URL, HostName: testHub, KeyName: "iothubowner", Key: key(hubKey), HTTP: srv.Client()}},
		PageSize: 2, // several pages with a few objects
	}
	return s
}

func parse(tb testing.TB, doc string, vars map[string]string) *Manifest {
	tb.Helper()
	m, err := Parse("m.yaml", []byte(doc), env(vars))
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func plan(tb testing.TB, s *testService, m *Manifest, prune bool) *Plan {
	tb.Helper()
	p, err := NewPlan(context.Background(), m, s.t, Options{Prune: prune})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func apply(tb testing.TB, s *testService, m *Manifest, prune bool) (*Plan, Result) {
	tb.Helper()
	p := plan(tb, s, m, prune)
	return p, p.Apply(context.Background(), s.t, nil)
}

func written(p *Plan) string {
	var b bytes.Buffer
	p.Write(&b)
	return b.String()
}

const fleet = `
certificates:
  - name: factory
    certificate: "${DPS_CA}"
enrollmentGroups:
  - enrollmentGroupId: line-1
    attestation: {type: x509, x509: {caReferences: {primary: factory}}}
  - enrollmentGroupId: line-2
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_GROUP_KEY}"}}
enrollments:
  - registrationId: dev-1
    attestation: {type: symmetricKey, symmetricKey: {primaryKey: "${DPSD_DEV1_KEY}"}}
    initialTwin: {tags: {site: berlin}}
  - registrationId: dev-2
    attestation: {type: symmetricKey}
    provisioningStatus: disabled
  - registrationId: dev-3
    attestation: {type: symmetricKey}
hubDevices:
  hub.test:
    - deviceId: sensor-1
      authentication: {type: sas, symmetricKey: {primaryKey: "${DPSD_SENSOR_KEY}"}}
      twin: {tags: {site: berlin}, properties: {desired: {interval: 30}}}
`

func fleetEnv(tb testing.TB) map[string]string {
	return map[string]string{"DPS_CA": dpstest.NewRoot(tb, "Factory Root").PEM(), "DPSD_GROUP_KEY": dpstest.Key(64),
		"DPSD_DEV1_KEY": dpstest.Key(64), "DPSD_SENSOR_KEY": dpstest.Key(32)}
}

// TestApplyCreatesThenChangesNothing: the first apply creates everything
// (certificates before the groups that reference them), the second plans
// nothing and writes nothing.
func TestApplyCreatesThenChangesNothing(t *testing.T) {
	s := newService(t)
	vars := fleetEnv(t)
	m := parse(t, fleet, vars)
	p, res := apply(t, s, m, false)
	if res.Created != 7 || len(res.Failures) != 0 {
		t.Fatalf("first apply: %v %v\n%s", res, res.Failures, written(p))
	}
	ctx := context.Background()
	e, err := s.store.Enrollment(ctx, "dev-1")
	if err != nil || string(e.Attestation.SymmetricKey.PrimaryKey) != vars["DPSD_DEV1_KEY"] || !strings.Contains(string(e.InitialTwin), "berlin") {
		t.Errorf("dev-1: %v %+v", err, e)
	}
	if e, _ := s.store.Enrollment(ctx, "dev-2"); e.ProvisioningStatus != dps.ProvisioningDisabled || e.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Errorf("dev-2: %+v", e)
	}
	tw, _, err := s.t.Hubs[testHub].HubCall(ctx, "GET", "/twins/sensor-1", nil, nil)
	if err != nil || !strings.Contains(string(tw), `"interval":30`) || !strings.Contains(string(tw), `"site":"berlin"`) {
		t.Errorf("sensor-1's twin: %v %s", err, tw)
	}
	dev, _, _ := s.t.Hubs[testHub].HubCall(ctx, "GET", "/devices/sensor-1", nil, nil)
	if !strings.Contains(string(dev), vars["DPSD_SENSOR_KEY"]) {
		t.Errorf("sensor-1's key: %s", dev)
	}

	before := s.writes.Load()
	p = plan(t, s, parse(t, fleet, vars), true)
	if p.Changes() || written(p) != "no changes: 7 object(s) up to date\n" {
		t.Errorf("second plan:\n%s", written(p))
	}
	if res := p.Apply(ctx, s.t, nil); res.Unchanged != 7 || res.String() != "no changes: 7 object(s) up to date" {
		t.Errorf("second apply: %v", res)
	}
	if n := s.writes.Load() - before; n != 0 {
		t.Errorf("the second apply wrote %d times", n)
	}
}

// TestApplyUpdatesOnlyWhatChanged: one member changed is one update, with
// the current ETag, that keeps what the file does not give (the
// generated keys); a changed key prints as (changed).
func TestApplyUpdatesOnlyWhatChanged(t *testing.T) {
	s := newService(t)
	vars := fleetEnv(t)
	apply(t, s, parse(t, fleet, vars), false)
	ctx := context.Background()
	dev2, _ := s.store.Enrollment(ctx, "dev-2")

	changed := strings.Replace(fleet, "provisioningStatus: disabled", "provisioningStatus: enabled", 1)
	vars["DPSD_DEV1_KEY"] = dpstest.Key(64)
	p := plan(t, s, parse(t, changed, vars), false)
	out := written(p)
	want := "~ enrollment dev-1\n    attestation.symmetricKey.primaryKey: (changed)\n~ enrollment dev-2\n    provisioningStatus: \"disabled\" → \"enabled\"\n0 to create, 2 to update, 0 to delete, 5 unchanged\n"
	if out != want {
		t.Errorf("plan:\n%s\nwant:\n%s", out, want)
	}
	if strings.Contains(out, vars["DPSD_DEV1_KEY"]) {
		t.Error("the plan printed a key")
	}
	before := s.writes.Load()
	if res := p.Apply(ctx, s.t, nil); res.Updated != 2 || res.Unchanged != 5 || len(res.Failures) != 0 {
		t.Fatalf("apply: %v %v", res, res.Failures)
	}
	if n := s.writes.Load() - before; n != 2 {
		t.Errorf("%d writes, want 2", n)
	}
	after, _ := s.store.Enrollment(ctx, "dev-2")
	if after.ProvisioningStatus != dps.ProvisioningEnabled || after.Attestation.SymmetricKey.PrimaryKey != dev2.Attestation.SymmetricKey.PrimaryKey || after.ETag == dev2.ETag {
		t.Errorf("dev-2 after the update: %+v", after)
	}
	if e, _ := s.store.Enrollment(ctx, "dev-1"); string(e.Attestation.SymmetricKey.PrimaryKey) != vars["DPSD_DEV1_KEY"] {
		t.Error("dev-1's key was not changed")
	}
}

// TestApplyLostRace: an object changed between plan and apply is planned
// again (the write with the old ETag is refused with 412) and written.
func TestApplyLostRace(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	doc := "enrollments: [{registrationId: r-1, attestation: {type: symmetricKey}, provisioningStatus: disabled}]"
	apply(t, s, parse(t, "enrollments: [{registrationId: r-1, attestation: {type: symmetricKey}}]", nil), false)
	p := plan(t, s, parse(t, doc, nil), false)
	// Someone else writes r-1 in between (a new ETag).
	e, _ := s.t.Service.Enrollment(ctx, "r-1")
	e.IoTHubs = []string{testHub}
	if _, err := s.t.Service.PutEnrollment(ctx, e, e.ETag); err != nil {
		t.Fatal(err)
	}
	if res := p.Apply(ctx, s.t, nil); res.Updated != 1 || len(res.Failures) != 0 {
		t.Fatalf("apply: %v %v", res, res.Failures)
	}
	got, _ := s.store.Enrollment(ctx, "r-1")
	if got.ProvisioningStatus != dps.ProvisioningDisabled || len(got.IoTHubs) != 1 {
		t.Errorf("r-1: %+v", got)
	}
	// Created in between: the create's conflict becomes an update.
	p = plan(t, s, parse(t, "enrollments: [{registrationId: r-2, attestation: {type: symmetricKey}, provisioningStatus: disabled}]", nil), false)
	if _, err := s.t.Service.PutEnrollment(ctx, e2("r-2"), ""); err != nil {
		t.Fatal(err)
	}
	if res := p.Apply(ctx, s.t, nil); res.Updated != 1 || len(res.Failures) != 0 {
		t.Fatalf("apply after a concurrent create: %v %v", res, res.Failures)
	}
}

// TestPrune: --prune deletes what the file no longer names, of the kinds
// it manages only, never a hub device a registration assigned; without
// it nothing is deleted.
func TestPrune(t *testing.T) {
	s := newService(t)
	vars := fleetEnv(t)
	apply(t, s, parse(t, fleet, vars), false)
	ctx := context.Background()
	hub := s.t.Hubs[testHub]
	for _, id := range []string{"extra-1"} {
		if _, _, err := hub.HubCall(ctx, "PUT", "/devices/"+id, nil, []byte(`{"deviceId":"`+id+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	// (Hub devices that registrations assigned are kept: cmd/dpsctl's
	// TestApplyEndToEnd registers one.)

	smaller := `
enrollments:
  - registrationId: dev-1
    attestation: {type: symmetricKey}
hubDevices:
  hub.test:
    - deviceId: sensor-1
`
	if p := plan(t, s, parse(t, smaller, nil), false); p.Changes() {
		t.Errorf("without prune:\n%s", written(p))
	}
	p := plan(t, s, parse(t, smaller, nil), true)
	want := "- hubDevice hub.test/extra-1\n- enrollment dev-2\n- enrollment dev-3\n0 to create, 0 to update, 3 to delete, 2 unchanged\n"
	if got := written(p); got != want {
		t.Errorf("prune plan:\n%s\nwant:\n%s", got, want)
	}
	if res := p.Apply(ctx, s.t, nil); res.Deleted != 3 || len(res.Failures) != 0 {
		t.Fatalf("prune: %v %v", res, res.Failures)
	}
	if _, err := s.store.Enrollment(ctx, "dev-2"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("dev-2: %v", err)
	}
	for id, kept := range map[string]bool{"extra-1": false, "sensor-1": true} {
		_, _, err := hub.HubCall(ctx, "GET", "/devices/"+id, nil, nil)
		if (err == nil) != kept {
			t.Errorf("%s: %v", id, err)
		}
	}
	// Groups and certificates are not the file's kinds: kept.
	if _, err := s.store.Group(ctx, "line-2"); err != nil {
		t.Errorf("line-2: %v", err)
	}
}

// TestApplyReportsEachFailure: an object the service refuses fails with
// its message; the others are applied.
func TestApplyReportsEachFailure(t *testing.T) {
	s := newService(t)
	doc := `
enrollments:
  - registrationId: ok-1
    attestation: {type: symmetricKey}
  - registrationId: bad-1
    attestation: {type: symmetricKey}
    iotHubs: [nowhere.example.net]
hubDevices:
  other.test:
    - deviceId: d
`
	p, res := apply(t, s, parse(t, doc, nil), false)
	if res.Created != 1 || len(res.Failures) != 2 {
		t.Fatalf("%v %v", res, res.Failures)
	}
	if got := res.Failures[0].String(); !strings.Contains(got, "create enrollment bad-1") || !strings.Contains(got, `"nowhere.example.net" is not a linked IoT hub`) || !strings.Contains(got, "HTTP 400") {
		t.Errorf("failure: %s", got)
	}
	if got := written(p); !strings.Contains(got, "! hubDevice other.test/d: read: no connection string for hub other.test") {
		t.Errorf("plan:\n%s", got)
	}
}

func e2(id string) wire.IndividualEnrollment {
	return wire.IndividualEnrollment{RegistrationID: id, Attestation: &wire.AttestationMechanism{Type: "symmetricKey"}}
}
