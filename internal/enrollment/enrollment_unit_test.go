package enrollment_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/enrollment"
)

// memStore is an in-memory enrollment.Store (CA certificates included) with the
// stores' If-Match rules: "" creates, "*" creates or replaces, anything
// else must equal the stored ETag. beforePut, when set, runs before each
// conditional write (to simulate a concurrent writer).
type memStore struct {
	mu          sync.Mutex
	n           int
	enrollments map[string]dps.Enrollment
	groups      map[string]dps.Group
	cas         map[string]dps.CACertificate
	regs        map[string]dps.Registration
	puts        []string // the If-Match of every write, in order
	beforePut   func()
}

func newMemStore() *memStore {
	return &memStore{enrollments: map[string]dps.Enrollment{}, groups: map[string]dps.Group{}, cas: map[string]dps.CACertificate{}, regs: map[string]dps.Registration{}}
}

func (m *memStore) etag() string { m.n++; return fmt.Sprintf(`"%d"`, m.n) }

// cond applies the If-Match rules to the stored ETag (exists false: absent).
func cond(ifMatch, stored string, exists bool) error {
	switch {
	case ifMatch == "*":
		return nil
	case ifMatch == "" && exists:
		return &dps.Error{Kind: dps.KindConflict, Code: 409201, Message: "exists"}
	case ifMatch == "":
		return nil
	case !exists:
		return &dps.Error{Kind: dps.KindNotFound, Message: "not found"}
	case ifMatch != stored:
		return &dps.Error{Kind: dps.KindPrecondition, Code: 412002, Message: "etag mismatch"}
	}
	return nil
}

func notFound() error { return &dps.Error{Kind: dps.KindNotFound, Message: "not found"} }

func (m *memStore) Enrollment(_ context.Context, id string) (dps.Enrollment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.enrollments[strings.ToLower(id)]
	if !ok {
		return e, notFound()
	}
	return e, nil
}

func (m *memStore) PutEnrollment(_ context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error) {
	if m.beforePut != nil {
		m.beforePut()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts = append(m.puts, ifMatch)
	old, ok := m.enrollments[strings.ToLower(e.RegistrationID)]
	if err := cond(ifMatch, old.ETag, ok); err != nil {
		return e, err
	}
	e.ETag = m.etag()
	m.enrollments[strings.ToLower(e.RegistrationID)] = e
	return e, nil
}

func (m *memStore) DeleteEnrollment(_ context.Context, id, ifMatch string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.enrollments[strings.ToLower(id)]
	if !ok {
		return notFound()
	}
	if ifMatch != "" && ifMatch != "*" && ifMatch != old.ETag {
		return &dps.Error{Kind: dps.KindPrecondition, Message: "etag mismatch"}
	}
	delete(m.enrollments, strings.ToLower(id))
	return nil
}

func (m *memStore) Enrollments(context.Context, string, int) ([]dps.Enrollment, string, error) {
	return nil, "", nil
}

func (m *memStore) Group(_ context.Context, id string) (dps.Group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.groups[strings.ToLower(id)]
	if !ok {
		return g, notFound()
	}
	return g, nil
}

func (m *memStore) PutGroup(_ context.Context, g dps.Group, ifMatch string) (dps.Group, error) {
	if m.beforePut != nil {
		m.beforePut()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts = append(m.puts, ifMatch)
	old, ok := m.groups[strings.ToLower(g.ID)]
	if err := cond(ifMatch, old.ETag, ok); err != nil {
		return g, err
	}
	g.ETag = m.etag()
	m.groups[strings.ToLower(g.ID)] = g
	return g, nil
}

func (m *memStore) DeleteGroup(_ context.Context, id, ifMatch string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.groups[strings.ToLower(id)]; !ok {
		return notFound()
	}
	delete(m.groups, strings.ToLower(id))
	return nil
}

func (m *memStore) GroupsPage(context.Context, string, int) ([]dps.Group, string, error) {
	return nil, "", nil
}

func (m *memStore) Registration(_ context.Context, id string) (dps.Registration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.regs[strings.ToLower(id)]
	if !ok {
		return r, notFound()
	}
	return r, nil
}

func (m *memStore) DeleteRegistration(_ context.Context, id, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.regs[strings.ToLower(id)]; !ok {
		return notFound()
	}
	delete(m.regs, strings.ToLower(id))
	return nil
}

func (m *memStore) Registrations(context.Context, string, string, int) ([]dps.Registration, string, error) {
	return nil, "", nil
}

func (m *memStore) CACertificate(_ context.Context, name string) (dps.CACertificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.cas[strings.ToLower(name)]
	if !ok {
		return c, notFound()
	}
	return c, nil
}

func (m *memStore) CACertificates(context.Context) ([]dps.CACertificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dps.CACertificate
	for _, c := range m.cas {
		out = append(out, c)
	}
	return out, nil
}

func (m *memStore) PutCACertificate(_ context.Context, c dps.CACertificate, ifMatch string) (dps.CACertificate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.cas[strings.ToLower(c.Name)]
	if err := cond(ifMatch, old.ETag, ok); err != nil {
		return c, err
	}
	c.ETag = m.etag()
	m.cas[strings.ToLower(c.Name)] = c
	return c, nil
}

func (m *memStore) DeleteCACertificate(_ context.Context, name, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.cas[strings.ToLower(name)]; !ok {
		return notFound()
	}
	delete(m.cas, strings.ToLower(name))
	return nil
}

var linked = []dps.LinkedHub{{HostName: "hub-a.example.net"}, {HostName: "hub-b.example.net"}}

func newService(st enrollment.Store, allowHTTP bool) *enrollment.Service {
	return enrollment.New(enrollment.Options{Store: st, LinkedHubs: linked, AllowHTTPWebhooks: allowHTTP})
}

// keyOf returns a base64 key of n random bytes.
func keyOf(n int) dps.Key {
	b := make([]byte, n)
	rand.Read(b)
	return dps.Key(base64.StdEncoding.EncodeToString(b))
}

func symSettings(primary, secondary dps.Key) dps.Settings {
	return dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationSymmetricKey,
		SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: primary, SecondaryKey: secondary}}}
}

func x509Settings(x dps.X509Attestation) dps.Settings {
	return dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationX509, X509: &x}}
}

// wantInvalid checks err is a 400004 KindInvalid whose message says what.
func wantInvalid(t *testing.T, err error, what string) {
	t.Helper()
	e := dps.AsError(err)
	if err == nil || e.Kind != dps.KindInvalid || e.Code != 400004 || !strings.Contains(e.Message, what) {
		t.Fatalf("err = %v (kind %v, code %d), want invalid 400004 saying %q", err, e.Kind, e.Code, what)
	}
}

// TestValidation runs every enrollment rule on a fresh create, for an
// individual enrollment or a group.
func TestValidation(t *testing.T) {
	root := dpstest.NewRoot(t, "Validation Root")
	leaf := root.Leaf(t, "dev-x")
	ek, srk := dpstest.SoftwareTPMKeys(t)
	custom := func(url, api string) dps.Settings {
		s := symSettings("", "")
		s.AllocationPolicy = dps.AllocationCustom
		s.CustomAllocation = &dps.CustomAllocation{WebhookURL: url, APIVersion: api}
		return s
	}
	with := func(s dps.Settings, f func(*dps.Settings)) dps.Settings { f(&s); return s }
	tpm := func(ek, srk string) dps.Settings {
		return dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationTPM, TPM: &dps.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}}}
	}
	tests := []struct {
		name      string
		group     bool
		allowHTTP bool
		set       dps.Settings
		want      string // "" valid, else part of the error message
	}{
		{"ok/sym-keys-16-bytes", false, false, symSettings(keyOf(16), keyOf(16)), ""},
		{"ok/sym-keys-64-bytes", true, false, symSettings(keyOf(64), keyOf(64)), ""},
		{"fail/primary-15-bytes", false, false, symSettings(keyOf(15), ""), "primaryKey must be base64 of 16 to 64 bytes"},
		{"fail/secondary-65-bytes", true, false, symSettings("", keyOf(65)), "secondaryKey must be base64 of 16 to 64 bytes"},
		{"fail/primary-not-base64", false, false, symSettings("not base64!", ""), "primaryKey"},

		{"ok/x509-client-certificate", false, false, x509Settings(dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: leaf.PEM()}}), ""},
		{"ok/x509-client-certificate-der", false, false, x509Settings(dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: base64.StdEncoding.EncodeToString(leaf.Cert.Raw)}}), ""},
		{"ok/x509-group-signing-certificate", true, false, x509Settings(dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: root.PEM()}}), ""},
		{"ok/x509-group-ca-reference", true, false, x509Settings(dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "known-ca"}}), ""},
		{"fail/x509-group-client-certificate", true, false, x509Settings(dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: leaf.PEM()}}), "clientCertificates is for individual enrollments"},
		{"fail/x509-enrollment-ca-reference", false, false, x509Settings(dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "known-ca"}}), "caReferences is for enrollment groups"},
		{"fail/x509-unknown-ca-reference", true, false, x509Settings(dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "known-ca", Secondary: "no-such-ca"}}), `no CA certificate named "no-such-ca"`},
		{"fail/x509-nothing", false, false, x509Settings(dps.X509Attestation{}), "needs a certificate"},
		{"fail/x509-empty-members", true, false, x509Settings(dps.X509Attestation{SigningCertificates: &dps.X509Certificates{}, CAReferences: &dps.X509CAReferences{}}), "needs a certificate"},
		{"fail/x509-bad-primary", false, false, x509Settings(dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: "garbage"}}), "clientCertificates.primary"},
		{"fail/x509-bad-secondary", true, false, x509Settings(dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: root.PEM(), Secondary: "garbage"}}), "signingCertificates.secondary"},

		{"ok/tpm", false, false, tpm(ek, srk), ""},
		{"ok/tpm-without-srk", false, false, tpm(ek, ""), ""},
		{"fail/tpm-group", true, false, tpm(ek, srk), "enrollment groups do not support TPM"},
		{"fail/tpm-bad-ek", false, false, tpm(base64.StdEncoding.EncodeToString([]byte("short")), ""), "attestation.tpm.endorsementKey"},
		{"fail/tpm-srk-not-base64", false, false, tpm(ek, "not base64!"), "storageRootKey must be base64"},

		{"ok/linked-hubs-any-case", false, false, with(symSettings("", ""), func(s *dps.Settings) { s.IoTHubs = []string{"HUB-A.example.net", "hub-b.example.net"} }), ""},
		{"fail/unlinked-hub", false, false, with(symSettings("", ""), func(s *dps.Settings) { s.IoTHubs = []string{"hub-a.example.net", "hub-z.example.net"} }), `iotHubs: "hub-z.example.net"`},
		{"fail/unlinked-legacy-hub", true, false, with(symSettings("", ""), func(s *dps.Settings) { s.IoTHubHostName = "hub-z.example.net" }), `iotHubHostName: "hub-z.example.net"`},

		{"ok/static-one-hub", false, false, with(symSettings("", ""), func(s *dps.Settings) {
			s.AllocationPolicy, s.IoTHubs = dps.AllocationStatic, []string{"hub-a.example.net"}
		}), ""},
		{"ok/static-legacy-hub", false, false, with(symSettings("", ""), func(s *dps.Settings) {
			s.AllocationPolicy, s.IoTHubHostName = dps.AllocationStatic, "hub-b.example.net"
		}), ""},
		{"fail/static-no-hub", false, false, with(symSettings("", ""), func(s *dps.Settings) { s.AllocationPolicy = dps.AllocationStatic }), "exactly one hub"},
		{"fail/static-two-hubs", true, false, with(symSettings("", ""), func(s *dps.Settings) {
			s.AllocationPolicy, s.IoTHubs = dps.AllocationStatic, []string{"hub-a.example.net", "hub-b.example.net"}
		}), "exactly one hub"},

		{"ok/custom-https", false, false, custom("https://hook.example/api/alloc?code=k", "2021-10-01"), ""},
		{"ok/custom-http-allowed", false, true, custom("http://127.0.0.1:8080/alloc", "2021-10-01"), ""},
		{"ok/custom-scheme-case", false, false, custom("HTTPS://hook.example/alloc", "2021-10-01"), ""},
		{"fail/custom-no-definition", false, false, with(symSettings("", ""), func(s *dps.Settings) { s.AllocationPolicy = dps.AllocationCustom }), "requires customAllocationDefinition"},
		{"fail/custom-no-url", true, false, custom("", "2021-10-01"), "requires customAllocationDefinition"},
		{"fail/custom-no-api-version", false, false, custom("https://hook.example/alloc", ""), "requires customAllocationDefinition"},
		{"fail/custom-relative-url", false, false, custom("/alloc", "2021-10-01"), "must be an absolute URL"},
		{"fail/custom-no-host", false, false, custom("https:///alloc", "2021-10-01"), "must be an absolute URL"},
		{"fail/custom-unparsable", false, false, custom("https://hook example/%zz", "2021-10-01"), "must be an absolute URL"},
		{"fail/custom-user-info", false, false, custom("https://user:pass@hook.example/alloc", "2021-10-01"), "must not contain user information"},
		{"fail/custom-http", false, false, custom("http://hook.example/alloc", "2021-10-01"), "http is allowed only when the instance enables it"},
		{"fail/custom-ftp", false, true, custom("ftp://hook.example/alloc", "2021-10-01"), "must use https"},

		{"ok/initial-twin", false, false, with(symSettings("", ""), func(s *dps.Settings) {
			s.InitialTwin = json.RawMessage(`{"tags":{"a":1},"properties":{"desired":{"b":2}}}`)
		}), ""},
		{"ok/initial-twin-tags-only", true, false, with(symSettings("", ""), func(s *dps.Settings) { s.InitialTwin = json.RawMessage(`{"tags":{}}`) }), ""},
		{"fail/initial-twin-array", false, false, with(symSettings("", ""), func(s *dps.Settings) { s.InitialTwin = json.RawMessage(`[1]`) }), "initialTwin must be an object"},
		{"fail/initial-twin-properties-not-object", false, false, with(symSettings("", ""), func(s *dps.Settings) {
			s.InitialTwin = json.RawMessage(`{"properties":"x"}`)
		}), "initialTwin must be an object"},
		{"fail/initial-twin-not-json", true, false, with(symSettings("", ""), func(s *dps.Settings) { s.InitialTwin = json.RawMessage(`{`) }), "initialTwin must be an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			st := newMemStore()
			st.cas["known-ca"] = dps.CACertificate{Name: "known-ca", Certificate: root.PEM(), Verified: true, ETag: `"ca"`}
			s := newService(st, tt.allowHTTP)
			var err error
			if tt.group {
				_, err = s.PutGroup(ctx, dps.Group{ID: "grp-1", Settings: tt.set}, "")
			} else {
				_, err = s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-x", Settings: tt.set}, "")
			}
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Put = %v, want valid", err)
				}
				return
			}
			wantInvalid(t, err, tt.want)
			if len(st.puts) != 0 {
				t.Errorf("an invalid enrollment was written")
			}
		})
	}
}

func TestIDs(t *testing.T) {
	ctx := context.Background()
	s := newService(newMemStore(), false)
	for _, tt := range []struct {
		name, regID, deviceID, want string
	}{
		{"ok", "dev-1", "", ""},
		{"ok/device-id", "dev-1", "device.one", ""},
		{"fail/empty-registration-id", "", "", "registration ID must be 1-128 characters"},
		{"fail/long-registration-id", strings.Repeat("a", 129), "", "registration ID must be 1-128 characters"},
		{"fail/registration-id-characters", "dev 1", "", "registration ID"},
		{"fail/device-id", "dev-1", "-bad", "deviceId: device ID must start and end"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: tt.regID, DeviceID: tt.deviceID, Settings: symSettings("", "")}, "*")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantInvalid(t, err, tt.want)
		})
	}
	for _, tt := range []struct{ name, id, want string }{
		{"fail/empty-group-id", "", "enrollment group ID must be 1-128"},
		{"fail/group-id-characters", "grp/1", "enrollment group ID"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.PutGroup(ctx, dps.Group{ID: tt.id, Settings: symSettings("", "")}, "*")
			wantInvalid(t, err, tt.want)
		})
	}
	if _, _, err := s.Registrations(ctx, "grp/1", "", 10); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("Registrations(bad group ID) = %v, want invalid", err)
	}
}

func decodedLen(t *testing.T, k dps.Key) int {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(string(k))
	if err != nil {
		t.Fatalf("key %q is not base64", k)
	}
	return len(b)
}

// TestKeyMerge: missing keys are generated on create and kept from the
// stored version on update, so get → modify → put never rotates a key.
func TestKeyMerge(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	s := newService(st, false)

	created, err := s.PutGroup(ctx, dps.Group{ID: "grp-1", Settings: symSettings("", "")}, "")
	if err != nil {
		t.Fatal(err)
	}
	sk := *created.Attestation.SymmetricKey
	if decodedLen(t, sk.PrimaryKey) != 64 || decodedLen(t, sk.SecondaryKey) != 64 || sk.PrimaryKey == sk.SecondaryKey {
		t.Fatalf("generated keys = %+v, want two different 64-byte keys", sk)
	}

	// An update without keys keeps both.
	upd := dps.Group{ID: "grp-1", Settings: symSettings("", "")}
	upd.IoTHubs = []string{"hub-a.example.net"}
	got, err := s.PutGroup(ctx, upd, created.ETag)
	if err != nil {
		t.Fatal(err)
	}
	if *got.Attestation.SymmetricKey != sk {
		t.Fatalf("keys after an update without keys = %+v, want %+v", *got.Attestation.SymmetricKey, sk)
	}
	if upd.Attestation.SymmetricKey.PrimaryKey != "" {
		t.Error("PutGroup filled in the caller's attestation (it must work on a copy)")
	}

	// A new primary replaces only the primary.
	newPrimary := keyOf(32)
	got, err = s.PutGroup(ctx, dps.Group{ID: "grp-1", Settings: symSettings(newPrimary, "")}, "*")
	if err != nil {
		t.Fatal(err)
	}
	if k := got.Attestation.SymmetricKey; k.PrimaryKey != newPrimary || k.SecondaryKey != sk.SecondaryKey {
		t.Fatalf("keys = %+v, want the new primary and the old secondary", k)
	}

	// An enrollment that was X.509 gets fresh keys when it becomes symmetric-key.
	root := dpstest.NewRoot(t, "Merge Root")
	if _, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: x509Settings(dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: root.Leaf(t, "dev-1").PEM()}})}, ""); err != nil {
		t.Fatal(err)
	}
	e, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: symSettings("", "")}, "*")
	if err != nil {
		t.Fatal(err)
	}
	if k := e.Attestation.SymmetricKey; decodedLen(t, k.PrimaryKey) != 64 || decodedLen(t, k.SecondaryKey) != 64 {
		t.Fatalf("keys = %+v, want generated ones", k)
	}
}

// TestWebhookSecretKept: the signing secret is never returned, so an update
// that omits it keeps the stored one; one that sets it replaces it.
func TestWebhookSecretKept(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	s := newService(st, false)
	set := symSettings("", "")
	set.AllocationPolicy = dps.AllocationCustom
	set.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/a", APIVersion: "2021-10-01", SigningSecret: "s3cret"}
	if _, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: set}, ""); err != nil {
		t.Fatal(err)
	}
	upd := set
	upd.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/b", APIVersion: "2021-10-01"}
	got, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: upd}, "*")
	if err != nil {
		t.Fatal(err)
	}
	if ca := got.CustomAllocation; ca.SigningSecret != "s3cret" || ca.WebhookURL != "https://hook.example/b" {
		t.Fatalf("custom allocation = %+v, want the new URL with the stored secret", ca)
	}
	if upd.CustomAllocation.SigningSecret != "" {
		t.Error("PutEnrollment changed the caller's custom allocation")
	}
	upd.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/b", APIVersion: "2021-10-01", SigningSecret: "n3w"}
	if got, err = s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: upd}, "*"); err != nil || got.CustomAllocation.SigningSecret != "n3w" {
		t.Fatalf("secret after setting a new one = %+v, %v", got.CustomAllocation, err)
	}
}

// TestReprovisionPolicyKept: the reprovision policy is stored as given
// (nil means Azure's default: re-assign and migrate).
func TestReprovisionPolicyKept(t *testing.T) {
	ctx := context.Background()
	s := newService(newMemStore(), false)
	never := &dps.ReprovisionPolicy{}
	set := symSettings("", "")
	set.ReprovisionPolicy = never
	got, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: set}, "")
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Reprovision(); p.UpdateHubAssignment || p.MigrateDeviceData {
		t.Errorf("reprovision policy = %+v, want never re-provision", p)
	}
	got, err = s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: symSettings("", "")}, "*")
	if err != nil {
		t.Fatal(err)
	}
	if p := got.Reprovision(); p != dps.DefaultReprovisionPolicy {
		t.Errorf("reprovision policy without one = %+v, want the default %+v", p, dps.DefaultReprovisionPolicy)
	}
}

func TestETagRules(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	s := newService(st, false)
	first, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: symSettings("", "")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: symSettings("", "")}, ""); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("create over an existing enrollment = %v, want conflict", err)
	}
	if _, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: symSettings("", "")}, `"stale"`); dps.KindOf(err) != dps.KindPrecondition {
		t.Errorf("update with a stale ETag = %v, want precondition failed", err)
	}
	second, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: symSettings("", "")}, first.ETag)
	if err != nil || second.ETag == first.ETag {
		t.Fatalf("update with the current ETag = %q, %v", second.ETag, err)
	}
	// "*" is sent to the store as the ETag just read, so a write in
	// between is detected.
	st.puts = nil
	if _, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: symSettings("", "")}, "*"); err != nil {
		t.Fatal(err)
	}
	if len(st.puts) != 1 || st.puts[0] != second.ETag {
		t.Errorf("If-Match sent to the store for * = %q, want [%q]", st.puts, second.ETag)
	}
	// "*" on an absent enrollment creates it.
	if _, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-2", Settings: symSettings("", "")}, "*"); err != nil {
		t.Errorf("create with *: %v", err)
	}
}

// TestConcurrentWriteRedoesMerge: with If-Match "*", a write that lands
// between the read and the write makes the service read again and merge
// the keys of the newer version; one that keeps landing ends in 409001.
func TestConcurrentWriteRedoesMerge(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	s := newService(st, false)
	if _, err := s.PutGroup(ctx, dps.Group{ID: "grp-1", Settings: symSettings(keyOf(32), keyOf(32))}, ""); err != nil {
		t.Fatal(err)
	}
	rotated := keyOf(32)
	races := 1
	st.beforePut = func() {
		if races == 0 {
			return
		}
		races--
		st.mu.Lock()
		g := st.groups["grp-1"]
		k := *g.Attestation.SymmetricKey
		k.SecondaryKey = rotated
		g.Attestation.SymmetricKey, g.ETag = &k, st.etag()
		st.groups["grp-1"] = g
		st.mu.Unlock()
	}
	got, err := s.PutGroup(ctx, dps.Group{ID: "grp-1", Settings: symSettings("", "")}, "*")
	if err != nil {
		t.Fatalf("PutGroup after one concurrent write: %v", err)
	}
	if got.Attestation.SymmetricKey.SecondaryKey != rotated {
		t.Errorf("secondary key = %q, want the concurrently written %q (merge redone)", got.Attestation.SymmetricKey.SecondaryKey, rotated)
	}

	races = 100
	_, err = s.PutGroup(ctx, dps.Group{ID: "grp-1", Settings: symSettings("", "")}, "*")
	if e := dps.AsError(err); err == nil || e.Kind != dps.KindConflict || e.Code != 409001 {
		t.Fatalf("PutGroup under constant concurrent writes = %v, want conflict 409001", err)
	}
	// A precondition failure with an explicit ETag is the caller's, not retried.
	races, st.puts = 1, nil
	g, _ := st.Group(ctx, "grp-1")
	if _, err := s.PutGroup(ctx, dps.Group{ID: "grp-1", Settings: symSettings("", "")}, g.ETag); dps.KindOf(err) != dps.KindPrecondition || len(st.puts) != 1 {
		t.Fatalf("PutGroup with an explicit ETag raced = %v after %d writes, want one precondition failure", err, len(st.puts))
	}
}

func TestNotFoundCodes(t *testing.T) {
	ctx := context.Background()
	s := newService(newMemStore(), false)
	code := func(err error) int {
		if dps.KindOf(err) != dps.KindNotFound {
			return -1
		}
		return dps.AsError(err).Code
	}
	_, e1 := s.Enrollment(ctx, "nobody")
	_, e2 := s.Group(ctx, "nobody")
	_, e3 := s.Registration(ctx, "nobody")
	_, e4 := s.CA(ctx, "nobody")
	_, e5 := s.GenerateVerificationCode(ctx, "nobody")
	_, e6 := s.VerifyCA(ctx, "nobody", "", time.Now())
	for name, got := range map[string]struct {
		err  error
		want int
	}{
		"Enrollment":               {e1, 404201},
		"DeleteEnrollment":         {s.DeleteEnrollment(ctx, "nobody", ""), 404201},
		"Group":                    {e2, 404202},
		"DeleteGroup":              {s.DeleteGroup(ctx, "nobody", ""), 404202},
		"Registration":             {e3, 404203},
		"DeleteRegistration":       {s.DeleteRegistration(ctx, "nobody", ""), 404203},
		"CA":                       {e4, 404204},
		"DeleteCA":                 {s.DeleteCA(ctx, "nobody", ""), 404204},
		"GenerateVerificationCode": {e5, 404204},
		"VerifyCA":                 {e6, 404204},
	} {
		if c := code(got.err); c != got.want {
			t.Errorf("%s: %v (code %d), want not found %d", name, got.err, c, got.want)
		}
	}
}

func TestBulk(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct{ in, want string }{{"create", "create"}, {"UPDATE", "update"}, {"updateifmatchetag", "updateIfMatchETag"}, {"Delete", "delete"}} {
		if m, err := enrollment.ParseBulkMode(tt.in); err != nil || string(m) != tt.want {
			t.Errorf("ParseBulkMode(%q) = %q, %v", tt.in, m, err)
		}
	}
	if _, err := enrollment.ParseBulkMode("upsert"); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("ParseBulkMode(upsert) = %v, want invalid", err)
	}

	st := newMemStore()
	s := newService(st, false)
	items := func(n int) []dps.Enrollment {
		var out []dps.Enrollment
		for i := range n {
			out = append(out, dps.Enrollment{RegistrationID: fmt.Sprintf("bulk-%d", i), Settings: symSettings("", "")})
		}
		return out
	}
	if _, err := s.BulkEnrollments(ctx, enrollment.BulkCreate, nil); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("empty bulk = %v, want invalid", err)
	}
	if _, err := s.BulkEnrollments(ctx, enrollment.BulkCreate, items(enrollment.MaxBulk+1)); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("bulk of %d = %v, want invalid", enrollment.MaxBulk+1, err)
	}
	if _, err := s.BulkGroups(ctx, enrollment.BulkCreate, make([]dps.Group, enrollment.MaxBulk+1)); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("group bulk of %d = %v, want invalid", enrollment.MaxBulk+1, err)
	}

	// create: a bad item and an existing one fail; the others are written.
	if _, err := s.PutEnrollment(ctx, items(1)[0], ""); err != nil {
		t.Fatal(err)
	}
	batch := items(enrollment.MaxBulk)
	batch[3].Attestation.SymmetricKey.PrimaryKey = "bad"
	errs, err := s.BulkEnrollments(ctx, enrollment.BulkCreate, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 2 || errs[0].ID != "bulk-0" || dps.KindOf(errs[0].Err) != dps.KindConflict || errs[1].ID != "bulk-3" || dps.KindOf(errs[1].Err) != dps.KindInvalid {
		t.Fatalf("bulk create errors = %+v, want bulk-0 conflict and bulk-3 invalid", errs)
	}
	if len(st.enrollments) != enrollment.MaxBulk-1 {
		t.Fatalf("%d enrollments stored, want %d", len(st.enrollments), enrollment.MaxBulk-1)
	}

	// update sends "*"; updateIfMatchETag sends each item's ETag ("" creates).
	st.puts = nil
	cur, _ := st.Enrollment(ctx, "bulk-1")
	upd := []dps.Enrollment{{RegistrationID: "bulk-1", Settings: symSettings("", "")}}
	if errs, err := s.BulkEnrollments(ctx, enrollment.BulkUpdate, upd); err != nil || len(errs) != 0 {
		t.Fatalf("bulk update = %+v, %v", errs, err)
	}
	if len(st.puts) != 1 || st.puts[0] != cur.ETag {
		t.Errorf("bulk update wrote with If-Match %q, want the ETag read (%q)", st.puts, cur.ETag)
	}
	stale := upd[0]
	stale.ETag = cur.ETag // no longer current
	errs, err = s.BulkEnrollments(ctx, enrollment.BulkUpdateIfMatchETag, []dps.Enrollment{stale, {RegistrationID: "bulk-new", Settings: symSettings("", "")}})
	if err != nil || len(errs) != 1 || errs[0].ID != "bulk-1" || dps.KindOf(errs[0].Err) != dps.KindPrecondition {
		t.Fatalf("bulk updateIfMatchETag = %+v, %v; want bulk-1 precondition failed", errs, err)
	}
	if _, err := st.Enrollment(ctx, "bulk-new"); err != nil {
		t.Errorf("updateIfMatchETag without an ETag did not create: %v", err)
	}

	// delete: a missing item fails with its not-found code.
	errs, err = s.BulkEnrollments(ctx, enrollment.BulkDelete, []dps.Enrollment{{RegistrationID: "bulk-2"}, {RegistrationID: "nobody"}})
	if err != nil || len(errs) != 1 || errs[0].ID != "nobody" || dps.AsError(errs[0].Err).Code != 404201 {
		t.Fatalf("bulk delete = %+v, %v", errs, err)
	}
	if _, err := st.Enrollment(ctx, "bulk-2"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("bulk-2 not deleted: %v", err)
	}

	gerrs, err := s.BulkGroups(ctx, enrollment.BulkCreate, []dps.Group{{ID: "g-1", Settings: symSettings("", "")}, {ID: "bad id", Settings: symSettings("", "")}})
	if err != nil || len(gerrs) != 1 || gerrs[0].ID != "bad id" || dps.KindOf(gerrs[0].Err) != dps.KindInvalid {
		t.Fatalf("bulk groups = %+v, %v", gerrs, err)
	}
}

// TestCAProofOfPossession: a CA is unverified until a certificate it signed
// with the current verification code as CN, valid now, is presented.
func TestCAProofOfPossession(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	st := newMemStore()
	s := newService(st, false)
	ca := dpstest.NewRoot(t, "PoP Root")
	other := dpstest.NewRoot(t, "PoP Root") // same name, other key

	wantInvalid(t, func() error { _, err := s.PutCA(ctx, "bad name", ca.PEM(), ""); return err }(), "CA certificate name")
	wantInvalid(t, func() error { _, err := s.PutCA(ctx, "leaf", ca.Leaf(t, "not-a-ca").PEM(), ""); return err }(), "is not a CA certificate")
	if _, err := s.PutCA(ctx, "garbage", "garbage", ""); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("PutCA(garbage) = %v, want invalid", err)
	}
	if _, err := s.PutCA(ctx, "root", ca.PEM(), ""); err != nil {
		t.Fatal(err)
	}
	wantInvalid(t, func() error { _, err := s.VerifyCA(ctx, "root", ca.Leaf(t, "x").PEM(), now); return err }(), "generate one first")

	c, err := s.GenerateVerificationCode(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	code := c.VerificationCode
	if len(code) != 32 || strings.ToUpper(code) != code {
		t.Fatalf("verification code %q, want 32 upper-case hex digits", code)
	}
	if c2, _ := s.GenerateVerificationCode(ctx, "root"); c2.VerificationCode == code {
		t.Fatal("a new verification code equals the previous one")
	} else {
		code = c2.VerificationCode
	}

	for _, tt := range []struct {
		name  string
		proof string
		at    time.Time
		want  string
	}{
		{"other-signer", other.Leaf(t, code).PEM(), now, "is not signed by CA certificate"},
		{"wrong-cn", ca.Leaf(t, "not-the-code").PEM(), now, "CN must be the verification code"},
		{"cn-case", ca.Leaf(t, strings.ToLower(code)).PEM(), now, "CN must be the verification code"},
		{"expired", ca.Leaf(t, code, dpstest.Validity(now.Add(-2*time.Hour), now.Add(-time.Hour))).PEM(), now, "not within its validity period"},
		{"not-yet-valid", ca.Leaf(t, code).PEM(), now.Add(-2 * time.Hour), "not within its validity period"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.VerifyCA(ctx, "root", tt.proof, tt.at)
			wantInvalid(t, err, tt.want)
			if got, _ := st.CACertificate(ctx, "root"); got.Verified {
				t.Fatal("a failed proof verified the CA")
			}
		})
	}
	if _, err := s.VerifyCA(ctx, "root", "garbage", now); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("VerifyCA(garbage) = %v, want invalid", err)
	}
	got, err := s.VerifyCA(ctx, "root", ca.Leaf(t, code).PEM(), now)
	if err != nil || !got.Verified || got.VerificationCode != "" {
		t.Fatalf("VerifyCA = %+v, %v; want verified with the code cleared", got, err)
	}
	// The code is single-use.
	wantInvalid(t, func() error { _, err := s.VerifyCA(ctx, "root", ca.Leaf(t, code).PEM(), now); return err }(), "generate one first")

	// Uploading the same certificate again keeps the verification; another
	// certificate under the name is unverified.
	if again, err := s.PutCA(ctx, "root", base64.StdEncoding.EncodeToString(ca.Cert.Raw), "*"); err != nil || !again.Verified {
		t.Fatalf("re-upload of the same CA = %+v, %v; want still verified", again, err)
	}
	if changed, err := s.PutCA(ctx, "root", other.PEM(), "*"); err != nil || changed.Verified {
		t.Fatalf("upload of another CA under the name = %+v, %v; want unverified", changed, err)
	}
}

// TestIssuanceNamesKept: an enrollment or a group naming a credential
// policy and a CA this instance does not have (Azure Device Registry's,
// in an enrollment copied from Azure) is stored and read back with the
// names unchanged; they are checked only when a device sends a CSR.
func TestIssuanceNamesKept(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	s := newService(st, false)
	set := symSettings("", "")
	set.CertificatePolicyName, set.CertificateAuthorityName = "ADR-Policy-01", "adr-ca-eu"
	e, err := s.PutEnrollment(ctx, dps.Enrollment{RegistrationID: "dev-1", Settings: set}, "")
	if err != nil {
		t.Fatalf("enrollment naming Azure Device Registry policies: %v", err)
	}
	g, err := s.PutGroup(ctx, dps.Group{ID: "group-1", Settings: set}, "")
	if err != nil {
		t.Fatalf("group naming Azure Device Registry policies: %v", err)
	}
	stored, _ := st.Enrollment(ctx, "dev-1")
	for what, got := range map[string]dps.Settings{"enrollment": e.Settings, "group": g.Settings, "stored enrollment": stored.Settings} {
		if got.CertificatePolicyName != "ADR-Policy-01" || got.CertificateAuthorityName != "adr-ca-eu" {
			t.Errorf("%s: names %q, %q, want them unchanged", what, got.CertificatePolicyName, got.CertificateAuthorityName)
		}
	}
}
