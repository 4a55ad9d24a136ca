package manifest

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
)

// seed fills a service with the fleet, a verified CA certificate and a
// TPM enrollment; it returns the environment the fleet was parsed with.
func seed(t *testing.T, s *testService) map[string]string {
	t.Helper()
	ctx := context.Background()
	root := dpstest.NewRoot(t, "Factory Root")
	vars := fleetEnv(t)
	vars["DPS_CA"] = root.PEM()
	ek, _ := dpstest.SoftwareTPMKeys(t)
	vars["DPSD_EK"] = ek
	doc := strings.Replace(fleet, "hubDevices:", `  - registrationId: tpm-1
    attestation: {type: tpm, tpm: {endorsementKey: "${DPSD_EK}"}}
  - registrationId: dev-4
    attestation: {type: symmetricKey}
    credentialPolicyName: p1
  - registrationId: dev-5
    attestation: {type: symmetricKey}
hubDevices:`, 1)
	if _, res := apply(t, s, parse(t, doc, vars), false); len(res.Failures) != 0 || res.Created != 10 {
		t.Fatalf("seed: %v %v", res, res.Failures)
	}
	code, err := s.t.Service.GenerateVerificationCode(ctx, "factory")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.t.Service.VerifyCA(ctx, "factory", root.Leaf(t, code.VerificationCode).PEM()); err != nil {
		t.Fatal(err)
	}
	return vars
}

// sameObjects compares what two services hold: every enrollment and group
// with its keys, and the CA certificates.
func sameObjects(t *testing.T, a, b *testService) {
	t.Helper()
	ctx := context.Background()
	for _, kind := range []Kind{Certificate, Group, Enrollment} {
		as, err := a.t.all(ctx, kind, "")
		if err != nil {
			t.Fatal(err)
		}
		bs, err := b.t.all(ctx, kind, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(as) != len(bs) {
			t.Errorf("%ss: %d and %d", kind, len(as), len(bs))
			continue
		}
		for i := range as {
			id := idOf(kind, as[i])
			if kind != Certificate && symmetric(as[i]) {
				ka, _ := a.t.keys(ctx, kind, id)
				kb, _ := b.t.keys(ctx, kind, id)
				as[i]["attestation"], bs[i]["attestation"] = ka, kb
			}
			if d := Diff(kind, as[i], bs[i], nil); len(d) != 0 || id != idOf(kind, bs[i]) {
				t.Errorf("%s %s differs: %v", kind, id, d)
			}
		}
	}
}

// TestCopyResumes: a copy stopped after --limit objects goes on from the
// state file, skipping what it copied; the copy has every object with its
// keys; the report says what was not copied whole; a copy run again
// changes nothing.
func TestCopyResumes(t *testing.T) {
	src, dst := newService(t), newService(t)
	seed(t, src)
	state := filepath.Join(t.TempDir(), "copy.state.json")
	ctx := context.Background()
	var seen []string
	o := CopyOptions{StateFile: state, Limit: 4, Progress: func(k Kind, done, total int) {
		seen = append(seen, string(k)+":"+itoa(done)+"/"+itoa(total))
	}}
	source := &Target{Service: src.t.Service, PageSize: 2}
	rep, err := Copy(ctx, source, dst.t, o)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Stopped || rep.Resumed || rep.Created != 4 {
		t.Fatalf("first run: %+v", rep)
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("no state file after a stop: %v", err)
	}
	// Totals are known at each kind's last page (-1 before): the source
	// is not read ahead.
	if want := []string{"certificate:0/-1", "certificate:1/1", "group:0/-1", "group:1/2", "group:2/2", "enrollment:0/-1", "enrollment:1/-1"}; !slices.Equal(seen, want) {
		t.Errorf("progress %v, want %v", seen, want)
	}
	writes := dst.writes.Load()

	o.Limit, seen = 0, nil
	rep, err = Copy(ctx, source, dst.t, o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Stopped || !rep.Resumed || rep.Created != 9 || len(rep.Failures) != 0 {
		t.Fatalf("second run: %+v", rep)
	}
	// Only what was left was written: 5 enrollments.
	if n := dst.writes.Load() - writes; n != 5 {
		t.Errorf("the resumed copy wrote %d times, want 5", n)
	}
	if want := []string{"enrollment:1/-1", "enrollment:2/-1", "enrollment:3/-1", "enrollment:4/-1", "enrollment:5/6", "enrollment:6/6"}; !slices.Equal(seen, want) {
		t.Errorf("resumed progress: %v", seen)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the state file was kept after the copy completed: %v", err)
	}
	sameObjects(t, src, dst)
	notes := strings.Join(rep.Notes, "\n")
	for _, want := range []string{
		noteUnverified + ": factory",
		noteCARef + ": line-1 (factory)",
		noteTPM + ": tpm-1",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("the report lacks %q:\n%s", want, notes)
		}
	}
	// credentialPolicyName (an Azure Device Registry policy the target
	// does not have) is a known member: copied as is (sameObjects), with
	// no unknown-member note.
	if strings.Contains(notes, noteUnknownPrefix) {
		t.Errorf("the report has an unknown-member note:\n%s", notes)
	}
	if e, err := dst.t.Service.Enrollment(ctx, "dev-4"); err != nil || e.CredentialPolicyName != "p1" {
		t.Errorf("dev-4 at the target: %+v, %v", e.IssuanceNames, err)
	}
	ca, _ := dst.t.Service.CA(ctx, "factory")
	if ca.IsVerified {
		t.Error("the copied CA certificate is verified")
	}

	writes = dst.writes.Load()
	rep, err = Copy(ctx, source, dst.t, CopyOptions{StateFile: state})
	if err != nil || rep.Unchanged != 9 || rep.Created+rep.Updated != 0 || rep.Resumed {
		t.Fatalf("third run: %v %+v", err, rep)
	}
	if n := dst.writes.Load() - writes; n != 0 {
		t.Errorf("a copy of what is there wrote %d times", n)
	}
}

// TestCopyReportsRefusals: what the target refuses is reported with its
// message, and the copy goes on; --map-hub rewrites hub names.
func TestCopyReportsRefusals(t *testing.T) {
	src, dst := newService(t), newService(t)
	ctx := context.Background()
	// The source links a hub the target does not.
	if _, err := src.t.Service.PutEnrollment(ctx, e2("a-1"), ""); err != nil {
		t.Fatal(err)
	}
	e := e2("a-2")
	e.IoTHubs = []string{testHub}
	if _, err := src.t.Service.PutEnrollment(ctx, e, ""); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "s.json")
	// dst's enrollment manager links hub.test too; map it to a hub it does not know.
	rep, err := Copy(ctx, &Target{Service: src.t.Service}, dst.t, CopyOptions{StateFile: state, MapHubs: map[string]string{"HUB.test": "gone.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Created != 1 || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], `enrollment a-2: iotHubs: "gone.example.net" is not a linked IoT hub`) {
		t.Errorf("report: %+v", rep)
	}
	if _, err := dst.store.Enrollment(ctx, "a-2"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("a-2: %v", err)
	}
}

// TestExportImport: an export read back into another service gives the
// same objects, keys and hub devices (with their twins) included; an
// import of it again changes nothing.
func TestExportImport(t *testing.T) {
	a, b := newService(t), newService(t)
	vars := seed(t, a)
	ctx := context.Background()
	var out bytes.Buffer
	counts, err := Export(ctx, a.t, &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := counts.Objects; c[Certificate] != 1 || c[Group] != 2 || c[Enrollment] != 6 || c[HubDevice] != 1 {
		t.Errorf("counts: %v", c)
	}
	for i, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !strings.HasPrefix(l, `{"kind":"`) || !json.Valid([]byte(l)) {
			t.Errorf("line %d: %s", i+1, l)
		}
	}
	if !strings.Contains(out.String(), vars["DPSD_DEV1_KEY"]) || !strings.Contains(out.String(), vars["DPSD_SENSOR_KEY"]) {
		t.Error("the export lacks keys")
	}
	m, err := Parse("export.jsonl", out.Bytes(), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, res := apply(t, b, m, false); res.Created != 10 || len(res.Failures) != 0 {
		t.Fatalf("import: %v %v", res, res.Failures)
	}
	sameObjects(t, a, b)
	dev, _, _ := b.t.Hubs[testHub].HubCall(ctx, "GET", "/devices/sensor-1", nil, nil)
	tw, _, _ := b.t.Hubs[testHub].HubCall(ctx, "GET", "/twins/sensor-1", nil, nil)
	if !strings.Contains(string(dev), vars["DPSD_SENSOR_KEY"]) || !strings.Contains(string(tw), `"interval":30`) {
		t.Errorf("sensor-1 on b: %s %s", dev, tw)
	}
	if p := plan(t, b, m, false); p.Changes() {
		t.Errorf("a second import:\n%s", written(p))
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestCopyStopsOnTargetErrors: an error that is not the target's refusal
// of the object — 5xx, 401, 403, no answer, an interruption — stops the
// copy before the object is recorded: it is not a failure in the report,
// the state file is kept, and the next run copies it.
func TestCopyStopsOnTargetErrors(t *testing.T) {
	src := newService(t)
	ctx := context.Background()
	for _, id := range []string{"a-1", "a-2", "a-3"} {
		if _, err := src.t.Service.PutEnrollment(ctx, e2(id), ""); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(status int) func(http.ResponseWriter, *http.Request, context.CancelFunc) {
		return func(w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write([]byte(`{"errorCode":` + itoa(status*1000+1) + `,"message":"not now"}`))
		}
	}
	tests := map[string]func(http.ResponseWriter, *http.Request, context.CancelFunc){
		"500": answer(http.StatusInternalServerError),
		"401": answer(http.StatusUnauthorized),
		"403": answer(http.StatusForbidden),
		"no answer": func(w http.ResponseWriter, _ *http.Request, _ context.CancelFunc) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		},
		"interrupted": func(w http.ResponseWriter, _ *http.Request, cancel context.CancelFunc) {
			cancel()
			answer(http.StatusServiceUnavailable)(w, nil, nil)
		},
	}
	for name, fail := range tests {
		t.Run(name, func(t *testing.T) {
			dst := newService(t)
			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			dst.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
				if r.Method == http.MethodPut && r.URL.Path == "/enrollments/a-2" {
					fail(w, r, cancel)
					return
				}
				next.ServeHTTP(w, r)
			})
			state := filepath.Join(t.TempDir(), "s.json")
			source := &Target{Service: src.t.Service}
			rep, err := Copy(runCtx, source, dst.t, CopyOptions{StateFile: state})
			if err == nil || len(rep.Failures) != 0 || rep.Created != 1 {
				t.Fatalf("first run: %v %+v", err, rep)
			}
			if _, err := os.Stat(state); err != nil {
				t.Fatalf("the state file was not kept: %v", err)
			}
			dst.setHook(nil)
			rep, err = Copy(ctx, source, dst.t, CopyOptions{StateFile: state})
			if err != nil || !rep.Resumed || rep.Created != 3 || len(rep.Failures) != 0 {
				t.Fatalf("second run: %v %+v", err, rep)
			}
			if _, err := dst.store.Enrollment(ctx, "a-2"); err != nil {
				t.Errorf("a-2 was not copied by the resumed run: %v", err)
			}
		})
	}
}

// TestCopyX509WithoutCertificate: an X.509 enrollment the source gives
// without its certificate (Azure DPS may answer only its info) is named by
// a note of the report, and fails on the target; the copy goes on.
func TestCopyX509WithoutCertificate(t *testing.T) {
	src, dst := newService(t), newService(t)
	ctx := context.Background()
	leaf := dpstest.NewRoot(t, "Device Root").Leaf(t, "x-1").PEM()
	doc := "enrollments:\n  - {registrationId: x-1, attestation: {type: x509, x509: {clientCertificates: {primary: {certificate: \"${DPSD_CERT}\"}}}}}\n  - {registrationId: s-1, attestation: {type: symmetricKey}}\n"
	if _, res := apply(t, src, parse(t, doc, map[string]string{"DPSD_CERT": leaf}), false); res.Created != 2 {
		t.Fatalf("seed: %v %v", res, res.Failures)
	}
	// The source answers as Azure DPS may: the certificate's info only.
	src.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := bytes.ReplaceAll(rec.Body.Bytes(), []byte(`"certificate":`), []byte(`"x-certificate":`))
		maps.Copy(w.Header(), rec.Header())
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
	rep, err := Copy(ctx, &Target{Service: src.t.Service}, dst.t, CopyOptions{StateFile: filepath.Join(t.TempDir(), "s.json")})
	if err != nil {
		t.Fatal(err)
	}
	if notes := strings.Join(rep.Notes, "\n"); !strings.Contains(notes, noteNoX509Cert+": enrollment x-1") {
		t.Errorf("the report lacks the note:\n%s", notes)
	}
	if rep.Created != 1 || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], "enrollment x-1") {
		t.Errorf("report: %+v", rep)
	}
}

// TestCopyGoesOnPastARefusedRead: the target refusing its read of one
// object (400) is that object's failure, reported, and the copy goes on
// (the status survives planning's wrapping).
func TestCopyGoesOnPastARefusedRead(t *testing.T) {
	src, dst := newService(t), newService(t)
	ctx := context.Background()
	for _, id := range []string{"a-1", "a-2", "a-3"} {
		if _, err := src.t.Service.PutEnrollment(ctx, e2(id), ""); err != nil {
			t.Fatal(err)
		}
	}
	dst.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if r.Method == http.MethodGet && r.URL.Path == "/enrollments/a-2" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"errorCode":400004,"message":"bad id"}`))
			return
		}
		next.ServeHTTP(w, r)
	})
	rep, err := Copy(ctx, &Target{Service: src.t.Service}, dst.t, CopyOptions{StateFile: filepath.Join(t.TempDir(), "s.json")})
	if err != nil || rep.Created != 2 || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], "a-2") {
		t.Fatalf("copy: %v %+v", err, rep)
	}
}

// TestDryRunReadsNoKeys: planning an update whose file leaves the keys
// out reads no keys (a dry run needs read rights only); applying it does,
// and keeps them.
func TestDryRunReadsNoKeys(t *testing.T) {
	s := newService(t)
	ctx := context.Background()
	before, err := s.t.Service.PutEnrollment(ctx, e2("k-1"), "")
	if err != nil {
		t.Fatal(err)
	}
	var keyReads atomic.Int32
	s.setHook(func(w http.ResponseWriter, r *http.Request, next http.Handler) {
		if strings.HasSuffix(r.URL.Path, "/attestationmechanism") {
			keyReads.Add(1)
		}
		next.ServeHTTP(w, r)
	})
	m := parse(t, "enrollments:\n  - registrationId: k-1\n    attestation: {type: symmetricKey}\n    provisioningStatus: disabled\n", nil)
	p := plan(t, s, m, false)
	if n := keyReads.Load(); n != 0 || len(p.Steps) != 1 || p.Steps[0].Action != Update {
		t.Fatalf("plan: %d key reads, steps %+v", n, p.Steps)
	}
	if res := p.Apply(ctx, s.t, nil); len(res.Failures) != 0 || res.Updated != 1 {
		t.Fatalf("apply: %+v", res)
	}
	if keyReads.Load() == 0 {
		t.Error("the update read no keys")
	}
	after, err := s.t.Service.Enrollment(ctx, "k-1")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.t.Service.EnrollmentAttestation(ctx, "k-1")
	if err != nil {
		t.Fatal(err)
	}
	if after.ProvisioningStatus != "disabled" || keys.SymmetricKey == nil || before.Attestation.SymmetricKey == nil ||
		keys.SymmetricKey.PrimaryKey != before.Attestation.SymmetricKey.PrimaryKey || keys.SymmetricKey.SecondaryKey != before.Attestation.SymmetricKey.SecondaryKey {
		t.Errorf("keys changed or status not applied (status %q)", after.ProvisioningStatus)
	}
}
