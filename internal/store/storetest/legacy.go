package storetest

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// Stamp is what a store generated when the legacy fixture was written: an
// ETag and, for enrollments, groups and CA certificates, the times.
type Stamp struct {
	ETag             string
	Created, Updated time.Time
}

// Stamps are a fixture's generated values, by record: "enrollment/<id>",
// "group/<id>", "ca/<name>" and "registration/<id>" (IDs folded). The
// fixture's README lists them as the generator printed them.
type Stamps map[string]Stamp

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// The values the legacy fixture generator wrote
// (storetest/testdata/legacyfixture), as the previous release read them
// back: raw JSON compacted, nil raw JSON as null.
const (
	fxCertA = "-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafPrimary<&>==\n-----END CERTIFICATE-----\n"
	fxCertB = "-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafSecondary==\n-----END CERTIFICATE-----\n"
	fxCertC = "-----BEGIN CERTIFICATE-----\nMIIBfixtureIntermediate==\n-----END CERTIFICATE-----\n"
	fxCertD = "TUlJQmZpeHR1cmVSb290Q0E="
	fxEK    = "ARoAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2gUScTk1UjuioeTlfGYZrrimExB+bScH75adUMRIi2UOMxG1kw4y+9RW/IVoMl4e620VxZad0ARX2gUqVjYO7KPVt3dyKhZS3dkcvfBisBhP1XH9B33VqHG9SHnbnQXdBUaCgKAfxome8UmBKfe+naTsE5fkvjb/do3/dD6l4sGBwFCnKRdln4XpM03zLpoHFao8zOwt8l/uP3qUIxmCYv9A7m69Ms+5/pCkTu/rK4mRDsfhZ0QLfbzVI6zQFOKF/rwsfBtFeWlWtcuJMKlXdD8TXWElTzgh7JS4qhFzreL0c1mI0GCj+Aws0usZh7dLIVPnlgZcBhgy1SSDQMQ=="
	fxSRK   = "ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8cSeg3Y6Z+JoIDgovYwRk1kB6Hvz8DGoXkkwFcUsTcHKdIMXC5RvcdPm4ESOAXy3kLcQsbvW/9YBvb3uDqVR9QJNR8XKqgBXA1u/SCj4pH/v8kDEAl6YNefvqXFTgOzILwLUdvPZyAjOqAwHEohAnb0Xbc6W9Gh+p0gs/jhyIGGlt17bfQ/jZp/KG+3/4Mq8F+GwI2n7YOg+ypLdHy4HQS+2xlqNLdDlzpAAr0mvy3+rVTKbdabs7S/BUSY3rKTT8Ww8vUqfBcA6LvZBJnLsDVq+HEvYBmLuU7TmyqYpAEBs0HnaVq6SYpHQ=="
	fxBlob  = "AAFjcmVkZW50aWFsLWJsb2ItZm9yLXRoZS1maXh0dXJl"
)

// CheckLegacyFixture checks a store opened on the legacy fixture (a
// database written by the previous release, migrated on open) serves every
// record of it, field by field, and takes writes over it.
func CheckLegacyFixture(t *testing.T, s Store, stamps Stamps) {
	t.Helper()
	stamp := func(key string) Stamp {
		st, ok := stamps[key]
		if !ok {
			t.Fatalf("no stamp %q", key)
		}
		return st
	}
	null := json.RawMessage(`null`)
	t0 := at("2025-06-01T10:00:00.123456789Z")
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	leaf := dps.CertificateInfo{SubjectName: "CN=x509-device-01", SHA1Thumbprint: "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678", SHA256Thumbprint: "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF", IssuerName: "CN=Intermediate", NotBefore: at("2025-01-01T00:00:00Z"), NotAfter: at("2026-01-01T00:00:00Z"), SerialNumber: "1F2E3D", Version: 3}
	signing := dps.CertificateInfo{SubjectName: "CN=Intermediate", SHA1Thumbprint: "FFEEDDCCBBAA99887766554433221100FFEEDDCC", SHA256Thumbprint: "FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100", IssuerName: "CN=Root CA", NotBefore: at("2024-01-01T00:00:00Z"), NotAfter: at("2034-01-01T00:00:00Z"), SerialNumber: "02", Version: 3}
	same := func(what string, got, want any, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s\n%#v\nwant\n%#v", what, got, want)
		}
	}

	for key, want := range map[string]string{"idScope": "0ne00F1XTUR", "owner.primaryKey": "b3duZXItcHJpbWFyeS1rZXktZml4dHVyZQ=="} {
		got, err := s.Meta(ctx(), key, "not-the-stored-value")
		same("meta "+key, got, want, err)
	}

	// Enrollments.
	sym, x5, tpm := stamp("enrollment/sym-device-01"), stamp("enrollment/x509-device-01"), stamp("enrollment/tpm-device-01")
	enrollments := []dps.Enrollment{{
		RegistrationID:            "Sym-Device-01",
		DeviceID:                  "sym-device-01-on-hub",
		OptionalDeviceInformation: json.RawMessage(`{"vendor":"A&B <Ltd>","serial":"Ä-123"}`),
		Settings: dps.Settings{
			Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeS1lbnJvbGxtZW50LWtleQ==", SecondaryKey: "c2Vjb25kYXJ5LWVucm9sbG1lbnQta2V5"}},
			IoTEdge:            true,
			IoTHubHostName:     "hub-a.example.net",
			IoTHubs:            []string{"hub-a.example.net", "hub-b.example.net"},
			InitialTwin:        json.RawMessage(`{"tags":{"site":"a&b<c>"},"properties":{"desired":{"interval":30}}}`),
			ProvisioningStatus: dps.ProvisioningEnabled,
			ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false},
			AllocationPolicy:   dps.AllocationCustom,
			CustomAllocation:   &dps.CustomAllocation{WebhookURL: "https://hooks.example.net/allocate?code=x&y=<1>", APIVersion: "2021-10-01", SigningSecret: "d2ViaG9vay1zaWduaW5nLXNlY3JldA=="},
			// The credentialPolicyName the fixture kept in its extra members
			// reads back as the credential policy.
			Extra: map[string]json.RawMessage{"deviceTypeRefs": json.RawMessage(`["t1","t2"]`)},
			ETag:  sym.ETag, Created: sym.Created, Updated: sym.Updated, CertificatePolicyName: "policy-1",
		},
	}, {
		RegistrationID: "tpm-device-01", OptionalDeviceInformation: null,
		Settings: dps.Settings{
			Attestation:      dps.Attestation{Type: dps.AttestationTPM, TPM: &dps.TPMAttestation{EndorsementKey: fxEK, StorageRootKey: fxSRK}},
			IoTHubHostName:   "hub-b.example.net",
			InitialTwin:      null,
			AllocationPolicy: dps.AllocationHashed,
			ETag:             tpm.ETag, Created: tpm.Created, Updated: tpm.Updated,
		},
	}, {
		RegistrationID: "x509-device-01", OptionalDeviceInformation: null,
		Settings: dps.Settings{
			Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: fxCertA, Secondary: fxCertB}}},
			IoTHubs:            []string{},
			InitialTwin:        null,
			ProvisioningStatus: dps.ProvisioningDisabled,
			ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: true},
			AllocationPolicy:   dps.AllocationStatic,
			ETag:               x5.ETag, Created: x5.Created, Updated: x5.Updated,
		},
	}}
	for _, want := range enrollments {
		got, err := s.Enrollment(ctx(), dps.FoldID(want.RegistrationID))
		same("enrollment "+want.RegistrationID, got, want, err)
	}
	page, next, err := s.Enrollments(ctx(), "", 0)
	same("enrollments", page, enrollments, err)
	if next != "" {
		t.Errorf("enrollments: next page %q, want none", next)
	}

	// Groups.
	fl, xc, xs := stamp("group/factory-line-1"), stamp("group/x509-ca"), stamp("group/x509-signed")
	groups := []dps.Group{{ID: "Factory-Line-1", Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "Z3JvdXAtcHJpbWFyeS1rZXk=", SecondaryKey: "Z3JvdXAtc2Vjb25kYXJ5LWtleQ=="}},
		IoTEdge:            true,
		IoTHubs:            []string{"hub-b.example.net"},
		InitialTwin:        json.RawMessage(`{"tags":{"line":1}}`),
		ProvisioningStatus: dps.ProvisioningEnabled,
		ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true},
		AllocationPolicy:   dps.AllocationGeoLatency,
		Extra:              map[string]json.RawMessage{"namespaceName": json.RawMessage(`"ns-1"`)},
		ETag:               fl.ETag, Created: fl.Created, Updated: fl.Updated,
	}}, {ID: "x509-ca", Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "Root-CA", Secondary: "root-ca-2"}}},
		IoTHubHostName:     "hub-a.example.net",
		InitialTwin:        null,
		ProvisioningStatus: dps.ProvisioningDisabled,
		ETag:               xc.ETag, Created: xc.Created, Updated: xc.Updated,
	}}, {ID: "x509-signed", Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: fxCertC, Secondary: fxCertD}}},
		InitialTwin:        null,
		ProvisioningStatus: dps.ProvisioningEnabled,
		AllocationPolicy:   dps.AllocationCustom,
		CustomAllocation:   &dps.CustomAllocation{WebhookURL: "https://hooks.example.net/group", APIVersion: "2019-03-31"},
		ETag:               xs.ETag, Created: xs.Created, Updated: xs.Updated,
	}}}
	for _, want := range groups {
		got, err := s.Group(ctx(), dps.FoldID(want.ID))
		same("group "+want.ID, got, want, err)
	}
	all, err := s.Groups(ctx(), "")
	same("groups", all, groups, err)
	x509Groups, err := s.Groups(ctx(), dps.AttestationX509)
	same("X.509 groups", x509Groups, groups[1:], err)
	gpage, _, err := s.GroupsPage(ctx(), "", 2)
	same("groups page", gpage, groups[:2], err)

	// CA certificates.
	ca1, ca2 := stamp("ca/root-ca"), stamp("ca/root-ca-2")
	cas := []dps.CACertificate{
		{Name: "Root-CA", Certificate: fxCertC, Verified: true, VerificationCode: "0A1B2C3D4E5F", ETag: ca1.ETag, Created: ca1.Created, Updated: ca1.Updated},
		{Name: "root-ca-2", Certificate: fxCertA, VerificationCode: "F00DFACE", ETag: ca2.ETag, Created: ca2.Created, Updated: ca2.Updated},
	}
	gotCA, err := s.CACertificate(ctx(), "ROOT-CA")
	same("CA certificate Root-CA", gotCA, cas[0], err)
	allCA, err := s.CACertificates(ctx())
	same("CA certificates", allCA, cas, err)

	// Registration records.
	regs := map[string]dps.Registration{
		"group-dev-01": {RegistrationID: "Group-Dev-01", DeviceID: "Group-Dev-01", AssignedHub: "hub-b.example.net", InitialHub: "hub-a.example.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusDeviceDataMigrated, Payload: json.RawMessage(`{"greeting":"hi <there> & welcome","n":1.50}`),
			EnrollmentGroupID: "Factory-Line-1", Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Created: sec(0), Updated: sec(1), ETag: stamp("registration/group-dev-01").ETag},
		"failed-dev": {RegistrationID: "Failed-Dev", Status: dps.StatusFailed, ErrorCode: dps.CodeCustomAllocationFailed, ErrorMessage: "Custom allocation failed: \"no hub\" <&>",
			Payload: null, EnrollmentGroupID: "x509-signed", Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}},
			Created: sec(2), Updated: sec(3), ETag: stamp("registration/failed-dev").ETag},
		"tpm-device-01": {RegistrationID: "tpm-device-01", DeviceID: "tpm-device-01", AssignedHub: "hub-b.example.net", InitialHub: "hub-b.example.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment, Payload: null, Proof: dps.Proof{Type: dps.AttestationTPM, TPM: &dps.TPMProof{AuthenticationKey: fxBlob}},
			Created: sec(5), Updated: sec(6), ETag: stamp("registration/tpm-device-01").ETag},
		"ca-dev-01": {RegistrationID: "CA-Dev-01", DeviceID: "CA-Dev-01", AssignedHub: "hub-a.example.net", InitialHub: "hub-b.example.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusReprovisionedToInitialAssignment, Payload: null, EnrollmentGroupID: "x509-ca", Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}}, Created: sec(7), Updated: sec(8), ETag: stamp("registration/ca-dev-01").ETag},
	}
	for id, want := range regs {
		got, err := s.Registration(ctx(), id)
		same("registration "+id, got, want, err)
	}
	for group, id := range map[string]string{"FACTORY-LINE-1": "group-dev-01", "x509-signed": "failed-dev", "x509-ca": "ca-dev-01"} {
		got, _, err := s.Registrations(ctx(), group, "", 10)
		same("registrations of "+group, got, []dps.Registration{regs[id]}, err)
	}

	// Operations: final and unfinished.
	ptr := func(r dps.Registration) *dps.Registration { return &r }
	pending := []dps.Operation{{
		ID: "4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555", RegistrationID: "Group-Dev-02", EnrollmentGroupID: "Factory-Line-1",
		Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Status: dps.StatusAssigning, Payload: json.RawMessage(`{"model":"t<1>","price":"5&6"}`),
		Created: sec(9), Updated: sec(9),
	}, {
		ID: "4.0a1b2c3d4e5f6071.77777777-2222-3333-4444-555555555555", RegistrationID: "x509-device-01",
		Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf}}, Status: dps.StatusAssigning, Payload: null,
		Created: sec(10), Updated: sec(10),
	}}
	ops := append([]dps.Operation{{
		ID: "4.0a1b2c3d4e5f6071.11111111-2222-3333-4444-555555555555", RegistrationID: "Group-Dev-01", EnrollmentGroupID: "Factory-Line-1",
		Proof: dps.Proof{Type: dps.AttestationSymmetricKey}, Status: dps.StatusAssigned, Payload: null, Result: ptr(regs["group-dev-01"]), Created: sec(0), Updated: sec(1),
	}, {
		ID: "4.0a1b2c3d4e5f6071.22222222-2222-3333-4444-555555555555", RegistrationID: "Failed-Dev", EnrollmentGroupID: "x509-signed",
		Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}}, Status: dps.StatusFailed, Payload: null,
		Result: ptr(regs["failed-dev"]), Created: sec(2), Updated: sec(3),
	}, {
		ID: "4.0a1b2c3d4e5f6071.33333333-2222-3333-4444-555555555555", RegistrationID: "x509-device-01",
		Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf}}, Status: dps.StatusDisabled, Payload: null,
		Result:  &dps.Registration{RegistrationID: "x509-device-01", Status: dps.StatusDisabled, Proof: dps.Proof{Type: dps.AttestationX509}, Payload: null, Updated: sec(4)},
		Created: sec(4), Updated: sec(4),
	}, {
		ID: "4.0a1b2c3d4e5f6071.44444444-2222-3333-4444-555555555555", RegistrationID: "tpm-device-01",
		Proof:  dps.Proof{Type: dps.AttestationTPM, TPM: &dps.TPMProof{Key: "SzEtY2hhbGxlbmdlLWtleS0xMjM0NTY3OA==", StorageRootKey: fxSRK}},
		Status: dps.StatusAssigned, Payload: null, Result: ptr(regs["tpm-device-01"]), Created: sec(5), Updated: sec(6),
	}, {
		ID: "4.0a1b2c3d4e5f6071.55555555-2222-3333-4444-555555555555", RegistrationID: "CA-Dev-01", EnrollmentGroupID: "x509-ca",
		Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}}, Status: dps.StatusAssigned, Payload: null,
		Result: ptr(regs["ca-dev-01"]), Created: sec(7), Updated: sec(8),
	}}, pending...)
	for _, want := range ops {
		got, err := s.Operation(ctx(), want.ID)
		same("operation "+want.ID, got, want, err)
	}
	gotPending, err := s.PendingOperations(ctx())
	same("pending operations", gotPending, pending, err)

	// Hub devices.
	for _, want := range []dps.HubDevice{
		{Hub: "hub-b.example.net", DeviceID: "Group-Dev-01", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "ZGV2aWNlLXByaW1hcnkta2V5", SecondaryKey: "ZGV2aWNlLXNlY29uZGFyeS1rZXk="}, IoTEdge: true,
			Twin: json.RawMessage(`{"tags":{"line":1,"note":"<&>"},"properties":{"desired":{"interval":30}}}`), Updated: sec(1)},
		{Hub: "hub-a.example.net", DeviceID: "x509-device-01", Auth: dps.HubAuth{Type: dps.HubAuthSelfSigned, PrimaryThumbprint: "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"}, Twin: null, Updated: sec(4)},
		{Hub: "hub-a.example.net", DeviceID: "CA-Dev-01", Auth: dps.HubAuth{Type: dps.HubAuthCA}, Twin: json.RawMessage(`{}`), Updated: sec(8)},
		{Hub: "hub-b.example.net", DeviceID: "tpm-device-01", Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "dHBtLWh1Yi1rZXk="}, Twin: null, Updated: sec(6)},
	} {
		got, err := s.HubDevice(ctx(), want.Hub, dps.FoldID(want.DeviceID))
		same("hub device "+want.Hub+"/"+want.DeviceID, got, want, err)
	}

	// TPM challenges.
	c2 := dps.Challenge{RegistrationID: "TPM-Device-02", Key: "SzEtY2hhbGxlbmdlLWtleS1kZXZpY2UtMDI=", StorageRootKey: fxSRK, Created: sec(11), Expires: sec(71)}
	c3 := dps.Challenge{RegistrationID: "tpm-device-03", Key: "SzEtY2hhbGxlbmdlLWtleS1kZXZpY2UtMDM=", Created: sec(12), Expires: sec(72)}
	got2, err := s.Challenge(ctx(), "tpm-device-02")
	same("challenge tpm-device-02", got2, c2, err)
	got3, err := s.Challenge(ctx(), "TPM-DEVICE-03")
	same("challenge tpm-device-03", got3, c3, err)

}

// CheckLegacyFixtureWrites checks writes over the records of the legacy
// fixture: the stored ETags still match, a challenge's key is still found,
// the status columns still hold, a group write is seen through the decoded
// groups. It changes the store.
func CheckLegacyFixtureWrites(t *testing.T, s Store, stamps Stamps) {
	t.Helper()
	sym, ok := stamps["enrollment/sym-device-01"]
	if !ok {
		t.Fatal("no stamp enrollment/sym-device-01")
	}
	e, err := s.Enrollment(ctx(), "sym-device-01")
	if err != nil {
		t.Fatal(err)
	}
	e.IoTEdge = false
	if _, err := s.PutEnrollment(ctx(), e, sym.ETag); err != nil {
		t.Errorf("update with the stored etag: %v", err)
	}
	if ok, err := s.ConsumeChallenge(ctx(), "tpm-device-02", "c29tZS1vdGhlci1rZXk="); err != nil || ok {
		t.Errorf("ConsumeChallenge with another key = %v, %v", ok, err)
	}
	if ok, err := s.ConsumeChallenge(ctx(), "tpm-device-02", "SzEtY2hhbGxlbmdlLWtleS1kZXZpY2UtMDI="); err != nil || !ok {
		t.Errorf("ConsumeChallenge with the stored key = %v, %v", ok, err)
	}
	if n, err := s.DeleteOperationsBefore(ctx(), time.Now()); err != nil || n != 5 {
		t.Errorf("pruned %d, %v; want the 5 final operations", n, err)
	}
	if left, err := s.PendingOperations(ctx()); err != nil || len(left) != 2 {
		t.Errorf("after pruning: %d unfinished operations, %v; want 2", len(left), err)
	}

	// A group write moves the groups version (the migration that added it
	// ran on a database that already held groups), so the groups the store
	// keeps decoded, loaded here first, are read again.
	xc, ok := stamps["group/x509-ca"]
	if !ok {
		t.Fatal("no stamp group/x509-ca")
	}
	g, err := s.Group(ctx(), "x509-ca")
	if err != nil {
		t.Fatal(err)
	}
	v0, err := s.GroupsVersion(ctx())
	if err != nil {
		t.Fatal(err)
	}
	g.IoTHubHostName = "hub-b.example.net"
	if _, err := s.PutGroup(ctx(), g, xc.ETag); err != nil {
		t.Fatalf("group update with the stored etag: %v", err)
	}
	if v1, err := s.GroupsVersion(ctx()); err != nil || v1 == v0 {
		t.Errorf("groups version after a group write = %d, %v; want it moved from %d", v1, err, v0)
	}
	if got, err := s.Group(ctx(), "X509-CA"); err != nil || got.IoTHubHostName != "hub-b.example.net" {
		t.Errorf("group after the write: hub %q, %v; want hub-b.example.net", got.IoTHubHostName, err)
	}
}
