package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/wire"
)

var (
	ownerKey  = dpstest.Key(32)
	readerKey = dpstest.Key(32)
)

const policiesYAML = `accessPolicies:
  - { name: provisioningserviceowner, primaryKey: "%s", rights: [ServiceConfig, EnrollmentRead, EnrollmentWrite, RegistrationStatusRead, RegistrationStatusWrite] }
  - { name: reader, primaryKey: "%s", rights: [EnrollmentRead, RegistrationStatusRead] }
`

func serviceClient(t *testing.T, s *server, hc *http.Client, name, key string) *client.Client {
	t.Helper()
	c, err := client.FromConnectionString(fmt.Sprintf("HostName=localhost;SharedAccessKeyName=%s;SharedAccessKey=%s", name, key))
	if err != nil {
		t.Fatal(err)
	}
	c.Endpoint, c.HTTP = s.endpoint(), hc
	return c
}

func symmetric() *wire.AttestationMechanism {
	return &wire.AttestationMechanism{Type: "symmetricKey", SymmetricKey: &wire.SymmetricKeyAttestation{}}
}

func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	if got := client.StatusOf(err); got != status {
		t.Fatalf("err = %v (status %d), want status %d", err, got, status)
	}
	if status >= 300 {
		e := err.(*client.Error)
		if e.Body.ErrorCode/1000 != status || e.Body.TrackingID == "" || e.Body.Message == "" || e.Body.TimestampUtc == "" {
			t.Fatalf("error body = %+v", e.Body)
		}
	}
}

func TestServiceEnrollmentLifecycle(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey))
	ctx := context.Background()
	c := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)

	created, err := c.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "svc-dev", Attestation: symmetric(),
		InitialTwin: json.RawMessage(`{"tags":{"a":"b"},"properties":{"desired":{"x":1}}}`),
		Extra:       map[string]json.RawMessage{"namespaceName": json.RawMessage(`"ns-1"`)}}, "")
	if err != nil {
		t.Fatal(err)
	}
	pk := created.Attestation.SymmetricKey.PrimaryKey
	if raw, _ := base64.StdEncoding.DecodeString(pk); len(raw) != 64 || created.Attestation.SymmetricKey.SecondaryKey == "" {
		t.Fatalf("generated keys = %+v", created.Attestation.SymmetricKey)
	}
	if created.ETag == "" || created.CreatedDateTimeUtc == "" || created.ProvisioningStatus != "enabled" || string(created.Extra["namespaceName"]) != `"ns-1"` {
		t.Errorf("created = %+v", created)
	}

	got, err := c.Enrollment(ctx, "SVC-DEV")
	if err != nil {
		t.Fatal(err)
	}
	if got.Attestation.SymmetricKey == nil || got.Attestation.SymmetricKey.PrimaryKey != "" {
		t.Errorf("GET returned keys: %+v", got.Attestation.SymmetricKey)
	}
	att, err := c.EnrollmentAttestation(ctx, "svc-dev")
	if err != nil || att.SymmetricKey.PrimaryKey != pk {
		t.Fatalf("attestationmechanism = %+v, %v", att, err)
	}

	// ETag rules.
	got.DeviceID = "svc-device-id"
	_, err = c.PutEnrollment(ctx, got, "")
	wantStatus(t, err, 409)
	_, err = c.PutEnrollment(ctx, got, `"not-the-etag"`)
	wantStatus(t, err, 412)
	updated, err := c.PutEnrollment(ctx, got, got.ETag) // GET → modify → PUT
	if err != nil {
		t.Fatal(err)
	}
	if updated.Attestation.SymmetricKey.PrimaryKey != pk || updated.DeviceID != "svc-device-id" || updated.ETag == got.ETag {
		t.Errorf("update rotated keys or lost fields: %+v", updated)
	}
	unquoted := strings.Trim(updated.ETag, `"`)
	if updated, err = c.PutEnrollment(ctx, updated, unquoted); err != nil {
		t.Fatalf("unquoted If-Match: %v", err)
	}
	if updated, err = c.PutEnrollment(ctx, updated, "*"); err != nil {
		t.Fatalf("If-Match *: %v", err)
	}

	// A device registers with the enrollment's key.
	res, err := s.client(hc).Register(ctx, "svc-dev", device.SymmetricKey(pk), nil)
	if err != nil || res.Status != "assigned" || res.RegistrationState.DeviceID != "svc-device-id" {
		t.Fatalf("register = %+v, %v", res, err)
	}
	got, _ = c.Enrollment(ctx, "svc-dev")
	if got.RegistrationState == nil || got.RegistrationState.Status != "assigned" {
		t.Errorf("enrollment registrationState = %+v", got.RegistrationState)
	}
	reg, err := c.Registration(ctx, "svc-dev")
	if err != nil || reg.AssignedHub == "" || reg.ETag == "" {
		t.Fatalf("registration = %+v, %v", reg, err)
	}
	wantStatus(t, c.DeleteRegistration(ctx, "svc-dev", `"wrong"`), 412)
	if err := c.DeleteRegistration(ctx, "svc-dev", reg.ETag); err != nil {
		t.Fatal(err)
	}
	_, err = c.Registration(ctx, "svc-dev")
	wantStatus(t, err, 404)

	// Delete.
	wantStatus(t, c.DeleteEnrollment(ctx, "svc-dev", `"wrong"`), 412)
	if err := c.DeleteEnrollment(ctx, "svc-dev", ""); err != nil {
		t.Fatal(err)
	}
	_, err = c.Enrollment(ctx, "svc-dev")
	wantStatus(t, err, 404)
	wantStatus(t, c.DeleteEnrollment(ctx, "svc-dev", ""), 404)
	_, err = c.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "svc-new", Attestation: symmetric()}, `"etag"`)
	wantStatus(t, err, 412)
}

func TestServiceValidation(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey))
	ctx := context.Background()
	c := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	key16 := dpstest.Key(16)
	tests := []struct {
		name string
		e    wire.IndividualEnrollment
		ok   bool
	}{
		{"ok/given-equal-keys", wire.IndividualEnrollment{RegistrationID: "v1", Attestation: &wire.AttestationMechanism{Type: "SymmetricKey", SymmetricKey: &wire.SymmetricKeyAttestation{PrimaryKey: key16, SecondaryKey: key16}}}, true},
		{"ok/policy-any-case", wire.IndividualEnrollment{RegistrationID: "v2", Attestation: symmetric(), AllocationPolicy: "GEOLATENCY"}, true},
		{"ok/static-linked", wire.IndividualEnrollment{RegistrationID: "v3", Attestation: symmetric(), AllocationPolicy: "static", IoTHubs: []string{"hub-b.example.net"}}, true},
		{"fail/key-too-short", wire.IndividualEnrollment{RegistrationID: "v4", Attestation: &wire.AttestationMechanism{Type: "symmetricKey", SymmetricKey: &wire.SymmetricKeyAttestation{PrimaryKey: dpstest.Key(8)}}}, false},
		{"fail/key-not-base64", wire.IndividualEnrollment{RegistrationID: "v5", Attestation: &wire.AttestationMechanism{Type: "symmetricKey", SymmetricKey: &wire.SymmetricKeyAttestation{PrimaryKey: "!!!"}}}, false},
		{"fail/unlinked-hub", wire.IndividualEnrollment{RegistrationID: "v6", Attestation: symmetric(), IoTHubs: []string{"elsewhere.example.net"}}, false},
		{"fail/policy", wire.IndividualEnrollment{RegistrationID: "v7", Attestation: symmetric(), AllocationPolicy: "random"}, false},
		{"fail/custom-without-webhook", wire.IndividualEnrollment{RegistrationID: "v8", Attestation: symmetric(), AllocationPolicy: "custom"}, false},
		{"fail/custom-http", wire.IndividualEnrollment{RegistrationID: "v9", Attestation: symmetric(), AllocationPolicy: "custom", CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: "http://x.example.net/", APIVersion: "2021-10-01"}}, false},
		{"ok/custom-https", wire.IndividualEnrollment{RegistrationID: "v10", Attestation: symmetric(), AllocationPolicy: "custom", CustomAllocationDefinition: &wire.CustomAllocationDefinition{WebhookURL: "https://fn.example.net/api/x?code=abc", APIVersion: "2021-10-01"}}, true},
		{"fail/no-attestation", wire.IndividualEnrollment{RegistrationID: "v11"}, false},
		{"fail/bad-type", wire.IndividualEnrollment{RegistrationID: "v12", Attestation: &wire.AttestationMechanism{Type: "password"}}, false},
		{"fail/bad-status", wire.IndividualEnrollment{RegistrationID: "v13", Attestation: symmetric(), ProvisioningStatus: "paused"}, false},
		{"fail/bad-twin", wire.IndividualEnrollment{RegistrationID: "v14", Attestation: symmetric(), InitialTwin: json.RawMessage(`[1]`)}, false},
		{"fail/bad-id", wire.IndividualEnrollment{RegistrationID: "bad id!", Attestation: symmetric()}, false},
		{"fail/static-two-hubs", wire.IndividualEnrollment{RegistrationID: "v15", Attestation: symmetric(), AllocationPolicy: "static", IoTHubs: []string{"hub-a.example.net", "hub-b.example.net"}}, false},
		{"fail/tpm-garbage", wire.IndividualEnrollment{RegistrationID: "v16", Attestation: &wire.AttestationMechanism{Type: "tpm", TPM: &wire.TPMAttestation{EndorsementKey: "AAAA"}}}, false},
		{"ok/tpm", wire.IndividualEnrollment{RegistrationID: "v17", Attestation: &wire.AttestationMechanism{Type: "tpm", TPM: &wire.TPMAttestation{EndorsementKey: testEK()}}}, true},
		{"fail/x509-garbage", wire.IndividualEnrollment{RegistrationID: "v18", Attestation: &wire.AttestationMechanism{Type: "x509", X509: &wire.X509Attestation{ClientCertificates: &wire.X509Certificates{Primary: &wire.X509CertificateWithInfo{Certificate: "not a cert"}}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.PutEnrollment(ctx, tt.e, "")
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantStatus(t, err, 400)
		})
	}

	// X.509 certificates as PEM and as base64 DER; info is computed.
	pemCert, derB64 := testCert(t, "x509-dev")
	for i, cert := range []string{pemCert, derB64} {
		id := fmt.Sprintf("x509-dev-%d", i)
		out, err := c.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: id, Attestation: &wire.AttestationMechanism{Type: "x509",
			X509: &wire.X509Attestation{ClientCertificates: &wire.X509Certificates{Primary: &wire.X509CertificateWithInfo{Certificate: cert}}}}}, "")
		if err != nil {
			t.Fatal(err)
		}
		info := out.Attestation.X509.ClientCertificates.Primary.Info
		if info == nil || info.SubjectName != "CN=x509-dev" || len(info.SHA256Thumbprint) != 64 || info.Version != 3 {
			t.Errorf("info = %+v", info)
		}
	}

	// Unknown fields are ignored; a malformed body is a 400.
	req, _ := http.NewRequest("PUT", s.endpoint()+"/enrollments/v20?api-version=2021-10-01", strings.NewReader(`{"registrationId":"v20","attestation":{"type":"symmetricKey"},"futureField":{"x":1}}`))
	req.Header.Set("Authorization", sas.New("localhost", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour)))
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("unknown field: %v %v", resp.StatusCode, err)
	}
	req, _ = http.NewRequest("PUT", s.endpoint()+"/enrollments/v21", strings.NewReader(`{"registrationId":`))
	req.Header.Set("Authorization", sas.New("localhost", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour)))
	if resp, err := hc.Do(req); err != nil || resp.StatusCode != 400 {
		t.Fatalf("malformed: %v %v", resp.StatusCode, err)
	}
}

func TestServiceQueryPagingAndBulk(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey))
	ctx := context.Background()
	c := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	for i := range 25 {
		if _, err := c.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: fmt.Sprintf("page-%02d", i), Attestation: symmetric()}, ""); err != nil {
			t.Fatal(err)
		}
	}
	var all []string
	cont, pages := "", 0
	for {
		items, page, err := c.QueryEnrollments(ctx, 10, cont)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if page.ItemType != "Enrollment" {
			t.Errorf("x-ms-item-type = %q", page.ItemType)
		}
		for _, it := range items {
			if it.Attestation.SymmetricKey.PrimaryKey != "" {
				t.Errorf("query returned keys")
			}
			all = append(all, it.RegistrationID)
		}
		if page.Continuation == "" {
			break
		}
		cont = page.Continuation
	}
	if pages != 3 || len(all) != 25 || all[0] != "page-00" || all[24] != "page-24" {
		t.Errorf("pages = %d, items = %d (%v)", pages, len(all), all)
	}

	// Query texts.
	for _, q := range []struct {
		text   string
		status int
	}{{"*", 200}, {"SELECT *", 200}, {"select * from ENROLLMENTS", 200}, {"SELECT * FROM enrollmentGroups", 400}, {"SELECT * FROM enrollments WHERE x=1", 400}} {
		req, _ := http.NewRequest("POST", s.endpoint()+"/enrollments/query", strings.NewReader(`{"query":"`+q.text+`"}`))
		req.Header.Set("Authorization", sas.New("localhost", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour)))
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != q.status {
			t.Errorf("query %q = %v %v, want %d", q.text, resp.StatusCode, err, q.status)
		}
	}

	// Bulk with mixed per-item failures.
	res, err := c.BulkEnrollments(ctx, "create", []wire.IndividualEnrollment{
		{RegistrationID: "bulk-1", Attestation: symmetric()},
		{RegistrationID: "page-00", Attestation: symmetric()}, // exists
		{RegistrationID: "bulk-2", Attestation: &wire.AttestationMechanism{Type: "symmetricKey", SymmetricKey: &wire.SymmetricKeyAttestation{PrimaryKey: "x"}}}, // bad key
		{RegistrationID: "bulk-3", Attestation: &wire.AttestationMechanism{Type: "nonsense"}},                                                                   // bad type
	})
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]int{}
	for _, e := range res.Errors {
		codes[e.RegistrationID] = e.ErrorCode
	}
	if res.IsSuccessful || len(res.Errors) != 3 || codes["page-00"]/1000 != 409 || codes["bulk-2"]/1000 != 400 || codes["bulk-3"]/1000 != 400 {
		t.Errorf("bulk = %+v", res)
	}
	if _, err := c.Enrollment(ctx, "bulk-1"); err != nil {
		t.Errorf("bulk-1 not created: %v", err)
	}
	res, err = c.BulkEnrollments(ctx, "delete", []wire.IndividualEnrollment{{RegistrationID: "bulk-1"}, {RegistrationID: "never-was"}})
	if err != nil || res.IsSuccessful || len(res.Errors) != 1 || res.Errors[0].RegistrationID != "never-was" {
		t.Errorf("bulk delete = %+v, %v", res, err)
	}
	many := make([]wire.IndividualEnrollment, 11)
	for i := range many {
		many[i] = wire.IndividualEnrollment{RegistrationID: fmt.Sprintf("many-%d", i), Attestation: symmetric()}
	}
	_, err = c.BulkEnrollments(ctx, "create", many)
	wantStatus(t, err, 400)
	_, err = c.BulkEnrollments(ctx, "upsert", many[:1])
	wantStatus(t, err, 400)

	// Groups: create, bulk, registrations query by group.
	g, err := c.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "grp", Attestation: symmetric()}, "")
	if err != nil {
		t.Fatal(err)
	}
	if g.Attestation.SymmetricKey.PrimaryKey == "" {
		t.Fatal("group create returned no keys")
	}
	got, _ := c.Group(ctx, "grp")
	if got.Attestation.SymmetricKey.PrimaryKey != "" {
		t.Error("group GET returned keys")
	}
	ga, err := c.GroupAttestation(ctx, "grp")
	if err != nil || ga.SymmetricKey.PrimaryKey != g.Attestation.SymmetricKey.PrimaryKey {
		t.Fatalf("group attestation = %+v, %v", ga, err)
	}
	_, err = c.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "grp", Attestation: symmetric()}, "")
	wantStatus(t, err, 409)
	gres, err := c.BulkGroups(ctx, "update", []wire.EnrollmentGroup{{EnrollmentGroupID: "grp2", Attestation: symmetric()}, {EnrollmentGroupID: "grp3", Attestation: &wire.AttestationMechanism{Type: "tpm", TPM: &wire.TPMAttestation{EndorsementKey: testEK()}}}})
	if err != nil || gres.IsSuccessful || len(gres.Errors) != 1 || gres.Errors[0].EnrollmentGroupID != "grp3" {
		t.Errorf("bulk groups = %+v, %v", gres, err)
	}
	groupsSeen, gpage, err := c.QueryGroups(ctx, 0, "")
	if err != nil || len(groupsSeen) != 2 || gpage.ItemType != "EnrollmentGroup" {
		t.Errorf("groups query = %d items, %+v, %v", len(groupsSeen), gpage, err)
	}
	for i := range 3 {
		id := fmt.Sprintf("grp-dev-%d", i)
		k, _ := device.DeriveKey(g.Attestation.SymmetricKey.PrimaryKey, id)
		if res, err := s.client(hc).Register(ctx, id, device.SymmetricKey(k), nil); err != nil || res.Status != "assigned" {
			t.Fatalf("register %s = %+v, %v", id, res, err)
		}
	}
	regs, rpage, err := c.QueryRegistrations(ctx, "grp", 2, "")
	if err != nil || len(regs) != 2 || rpage.Continuation == "" || rpage.ItemType != "DeviceRegistration" {
		t.Fatalf("registrations query = %d, %+v, %v", len(regs), rpage, err)
	}
	regs2, rpage, err := c.QueryRegistrations(ctx, "grp", 2, rpage.Continuation)
	if err != nil || len(regs2) != 1 || rpage.Continuation != "" {
		t.Fatalf("registrations page 2 = %d, %+v, %v", len(regs2), rpage, err)
	}
}

func TestServiceAuthorization(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey))
	ctx := context.Background()
	owner := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	reader := serviceClient(t, s, hc, "reader", readerKey)
	if _, err := owner.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "auth-dev", Attestation: symmetric()}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Enrollment(ctx, "auth-dev"); err != nil {
		t.Fatalf("reader GET: %v", err)
	}
	_, err := reader.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "auth-2", Attestation: symmetric()}, "")
	wantStatus(t, err, 403)
	if !strings.Contains(err.Error(), "EnrollmentWrite") {
		t.Errorf("403 does not name the missing right: %v", err)
	}
	_, err = reader.EnrollmentAttestation(ctx, "auth-dev")
	wantStatus(t, err, 403)
	wantStatus(t, reader.DeleteRegistration(ctx, "auth-dev", ""), 403)

	bad := []struct {
		name  string
		token string
	}{
		{"fail/wrong-key", sas.New("localhost", mustB64(t, readerKey), "provisioningserviceowner", time.Now().Add(time.Hour))},
		{"fail/unknown-policy", sas.New("localhost", mustB64(t, ownerKey), "nobody", time.Now().Add(time.Hour))},
		{"fail/expired", sas.New("localhost", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(-time.Hour))},
		{"fail/other-host", sas.New("evil.example.net", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour))},
		{"fail/other-path", sas.New("localhost/enrollmentGroups", mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour))},
		{"fail/none", ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", s.endpoint()+"/enrollments/auth-dev", nil)
			if tt.token != "" {
				req.Header.Set("Authorization", tt.token)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("status = %d, want 401", resp.StatusCode)
			}
		})
	}
	// Host with port and path prefix are accepted; the raw Host header is never used.
	for _, sr := range []string{"LOCALHOST:443", "localhost/enrollments", "localhost/enrollments/auth-dev"} {
		req, _ := http.NewRequest("GET", s.endpoint()+"/enrollments/auth-dev", nil)
		req.Header.Set("Authorization", sas.New(sr, mustB64(t, ownerKey), "provisioningserviceowner", time.Now().Add(time.Hour)))
		resp, err := hc.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("sr %q: %v %v", sr, resp.StatusCode, err)
		}
	}
}

// testCert mints a self-signed device certificate and returns it as PEM and as base64 DER.
func testCert(t *testing.T, cn string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), base64.StdEncoding.EncodeToString(der)
}

// testEK builds a TPM2B_PUBLIC of an RSA-2048 endorsement key with the SDK template.
func testEK() string {
	var b []byte
	u16 := func(v uint16) { b = binary.BigEndian.AppendUint16(b, v) }
	u16(0x0001) // RSA
	u16(0x000B) // SHA-256
	b = binary.BigEndian.AppendUint32(b, 0x000300B2)
	policy, _ := base64.StdEncoding.DecodeString("g3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaao=")
	u16(uint16(len(policy)))
	b = append(b, policy...)
	u16(0x0006) // AES
	u16(128)
	u16(0x0043) // CFB
	u16(0x0010) // scheme NULL
	u16(2048)
	b = binary.BigEndian.AppendUint32(b, 0)
	mod := make([]byte, 256)
	rand.Read(mod)
	u16(256)
	b = append(b, mod...)
	out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	return base64.StdEncoding.EncodeToString(append(out, b...))
}

// TestServiceReadersSeeNoFunctionKey: a webhook URL's query holds the
// function key that calls it (Azure Functions' ?code=). A policy that may
// only read enrollments sees it masked (?****), on every read path: GET and
// query, of enrollments and of groups. A policy that may write them sees it
// whole (it could replace it anyway).
func TestServiceReadersSeeNoFunctionKey(t *testing.T) {
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey))
	ctx := context.Background()
	owner := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	reader := serviceClient(t, s, hc, "reader", readerKey)
	const hook = "https://fn.example.net/api/HttpTrigger1?code=Zm4ta2V5LXNlY3JldA==&clientId=default"
	const masked = "https://fn.example.net/api/HttpTrigger1?****"
	custom := func() *wire.CustomAllocationDefinition {
		return &wire.CustomAllocationDefinition{WebhookURL: hook, APIVersion: "2021-10-01"}
	}
	if _, err := owner.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "fn-dev", Attestation: symmetric(), AllocationPolicy: "custom", CustomAllocationDefinition: custom()}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "fn-grp", Attestation: symmetric(), AllocationPolicy: "custom", CustomAllocationDefinition: custom()}, ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cl   *client.Client
		want string
	}{{"reader", reader, masked}, {"owner", owner, hook}} {
		t.Run(c.name, func(t *testing.T) {
			seen := map[string]string{}
			e, err := c.cl.Enrollment(ctx, "fn-dev")
			if err != nil {
				t.Fatal(err)
			}
			seen["GET enrollment"] = e.CustomAllocationDefinition.WebhookURL
			g, err := c.cl.Group(ctx, "fn-grp")
			if err != nil {
				t.Fatal(err)
			}
			seen["GET group"] = g.CustomAllocationDefinition.WebhookURL
			es, _, err := c.cl.QueryEnrollments(ctx, 0, "")
			if err != nil || len(es) != 1 {
				t.Fatalf("query enrollments = %d, %v", len(es), err)
			}
			seen["query enrollments"] = es[0].CustomAllocationDefinition.WebhookURL
			gs, _, err := c.cl.QueryGroups(ctx, 0, "")
			if err != nil || len(gs) != 1 {
				t.Fatalf("query groups = %d, %v", len(gs), err)
			}
			seen["query groups"] = gs[0].CustomAllocationDefinition.WebhookURL
			for path, got := range seen {
				if got != c.want {
					t.Errorf("%s: webhookUrl = %q, want %q", path, got, c.want)
				}
			}
		})
	}
}
