package docs_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/docs"
)

var update = flag.Bool("update", false, "rewrite the current-format golden documents in testdata/ from the expected values")

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

const (
	leafPEM = "-----BEGIN CERTIFICATE-----\nMIIBleaf<&>==\n-----END CERTIFICATE-----\n"
	rootPEM = "-----BEGIN CERTIFICATE-----\nMIIBroot==\n-----END CERTIFICATE-----\n"
	ek      = "ARoAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2"
	srk     = "ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8c"
)

var (
	leafInfo = dps.CertificateInfo{SubjectName: "CN=dev-x", SHA1Thumbprint: "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678",
		SHA256Thumbprint: "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF", IssuerName: "CN=Intermediate",
		NotBefore: at("2025-01-01T00:00:00Z"), NotAfter: at("2026-01-01T00:00:00.5Z"), SerialNumber: "1F2E3D", Version: 3}
	signingInfo = dps.CertificateInfo{SubjectName: "CN=Intermediate", SHA1Thumbprint: "FFEEDDCCBBAA99887766554433221100FFEEDDCC",
		SHA256Thumbprint: "FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100", IssuerName: "CN=Root",
		NotBefore: at("2024-01-01T00:00:00Z"), NotAfter: at("2034-01-01T00:00:00Z"), SerialNumber: "02", Version: 3}
)

// golden is one golden document: its file, its kind, and the domain value
// it holds, written here by hand (not derived from the code under test).
type golden struct {
	file string
	kind docs.Kind
	want any
}

func goldens() []golden {
	t0 := at("2025-06-01T10:00:00.123456789Z")
	t1 := at("2025-06-02T11:30:00.5Z")
	return []golden{
		{"enrollment.json", docs.KindEnrollment, dps.Enrollment{
			RegistrationID:            "Sym-Device-01",
			DeviceID:                  "sym-device-01-on-hub",
			OptionalDeviceInformation: json.RawMessage(`{"vendor":"A&B <Ltd>","serial":"Ä-1"}`),
			Settings: dps.Settings{
				Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeQ==", SecondaryKey: "c2Vjb25kYXJ5"}},
				IoTEdge:            true,
				IoTHubHostName:     "hub-a.example.net",
				IoTHubs:            []string{"hub-a.example.net", "hub-b.example.net"},
				InitialTwin:        json.RawMessage(`{"tags":{"site":"a&b<c>"},"properties":{"desired":{"interval":30}}}`),
				ProvisioningStatus: dps.ProvisioningEnabled,
				ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false},
				AllocationPolicy:   dps.AllocationCustom,
				CustomAllocation:   &dps.CustomAllocation{WebhookURL: "https://hooks.example.net/a?code=x&y=<1>", APIVersion: "2021-10-01", SigningSecret: "c2lnbmluZw=="},
				// The legacy document holds credentialPolicyName in its extra members.
				CertificatePolicyName: "policy-1",
				Extra:                 map[string]json.RawMessage{"deviceTypeRefs": json.RawMessage(`["t1","t2"]`)},
				ETag:                  `"726GNCYDXVGX3IIZT7DZPTFXGG"`,
				Created:               t0,
				Updated:               t1,
			},
		}},
		{"enrollment-x509.json", docs.KindEnrollment, dps.Enrollment{
			RegistrationID: "x509-device-01",
			Settings: dps.Settings{
				Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: leafPEM, Secondary: "TUlJQmxlYWY="}}},
				IoTHubs:            []string{}, // empty, not absent: kept as it was
				InitialTwin:        json.RawMessage(`null`),
				ProvisioningStatus: dps.ProvisioningDisabled,
				ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: true},
				AllocationPolicy:   dps.AllocationStatic,
				ETag:               `"UMXTJT3XGR4DTLBLCKDV2OBPJG"`,
				Created:            t0,
				Updated:            t0,
			},
			OptionalDeviceInformation: json.RawMessage(`null`),
		}},
		{"enrollment-tpm.json", docs.KindEnrollment, dps.Enrollment{
			RegistrationID:            "tpm-device-01",
			OptionalDeviceInformation: json.RawMessage(`null`),
			Settings: dps.Settings{
				Attestation:      dps.Attestation{Type: dps.AttestationTPM, TPM: &dps.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}},
				InitialTwin:      json.RawMessage(`null`),
				AllocationPolicy: dps.AllocationHashed,
				ETag:             `"DWTYZNSZ2U3DJDJOR3B6N4N5NB"`,
				Created:          t0,
				Updated:          t1,
			},
		}},
		{"group.json", docs.KindGroup, dps.Group{ID: "X509-CA", Settings: dps.Settings{
			Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "Root-CA", Secondary: "root-ca-2"}}},
			IoTEdge:            true,
			IoTHubHostName:     "hub-a.example.net",
			IoTHubs:            []string{"hub-b.example.net"},
			InitialTwin:        json.RawMessage(`{"tags":{"line":1}}`),
			ProvisioningStatus: dps.ProvisioningEnabled,
			ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true},
			AllocationPolicy:   dps.AllocationGeoLatency,
			CustomAllocation:   &dps.CustomAllocation{WebhookURL: "https://hooks.example.net/group", APIVersion: "2019-03-31"},
			Extra:              map[string]json.RawMessage{"namespaceName": json.RawMessage(`"ns-1"`)},
			ETag:               `"VC5TVUTZJRMPXXHDBLUQTHRVA6"`,
			Created:            t0,
			Updated:            t1,
		}}},
		{"group-signing.json", docs.KindGroup, dps.Group{ID: "x509-signed", Settings: dps.Settings{
			Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: rootPEM}}},
			InitialTwin:        json.RawMessage(`null`),
			ProvisioningStatus: dps.ProvisioningDisabled,
			ETag:               `"P6LAW4Y2JZM27JRZLZIDGS47PZ"`,
			Created:            t0,
			Updated:            t0,
		}}},
		{"group-symmetrickey.json", docs.KindGroup, dps.Group{ID: "factory-line-1", Settings: dps.Settings{
			Attestation: dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "Z3JvdXAtcHJpbWFyeQ==", SecondaryKey: "Z3JvdXAtc2Vjb25kYXJ5"}},
			InitialTwin: json.RawMessage(`null`),
			ETag:        `"OC3D7GQ7OMBZMM4CBMDCNTAJTF"`,
			Created:     t0,
			Updated:     t0,
		}}},
		{"registration.json", docs.KindRegistration, dps.Registration{
			RegistrationID: "CA-Dev-01", DeviceID: "CA-Dev-01", AssignedHub: "hub-a.example.net", InitialHub: "hub-b.example.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusReprovisionedToInitialAssignment,
			Payload:           json.RawMessage(`{"greeting":"hi <there> & welcome","n":1.50}`),
			EnrollmentGroupID: "X509-CA", Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leafInfo, Signing: &signingInfo}},
			Created: t0, Updated: t1, ETag: "Ik1LUUlRSzIzQzRZMlNDNjMyUjROSlEyMkZWIg==",
		}},
		{"registration-tpm.json", docs.KindRegistration, dps.Registration{
			RegistrationID: "tpm-device-01", DeviceID: "tpm-device-01", AssignedHub: "hub-b.example.net", InitialHub: "hub-b.example.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment, Payload: json.RawMessage(`null`),
			Proof:   dps.Proof{Type: dps.AttestationTPM, TPM: &dps.TPMProof{AuthenticationKey: "AAFjcmVkZW50aWFsLWJsb2I="}},
			Created: t0, Updated: t1, ETag: "IkJPR0NTVURWU0xNRFRQTEs1S1lKTlhXVU5ZIg==",
		}},
		{"registration-failed.json", docs.KindRegistration, dps.Registration{
			RegistrationID: "Failed-Dev", Status: dps.StatusFailed, ErrorCode: 400207, ErrorMessage: `Custom allocation failed: "no hub" <&>`,
			Payload: json.RawMessage(`null`), EnrollmentGroupID: "factory-line-1", Proof: dps.Proof{Type: dps.AttestationSymmetricKey},
			Created: t0, Updated: t1, ETag: "IkxHMkY3TjdRN1JJNUpVRVdNVUFTRDc2RFNJIg==",
		}},
		{"operation.json", docs.KindOperation, dps.Operation{
			ID: "4.0a1b2c3d4e5f6071.11111111-2222-3333-4444-555555555555", RegistrationID: "CA-Dev-01", EnrollmentGroupID: "X509-CA",
			Proof:  dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leafInfo, Signing: &signingInfo}},
			Status: dps.StatusAssigned, Payload: json.RawMessage(`null`),
			Result: &dps.Registration{RegistrationID: "CA-Dev-01", DeviceID: "CA-Dev-01", AssignedHub: "hub-a.example.net", InitialHub: "hub-a.example.net",
				Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment, Payload: json.RawMessage(`{"a":"<b>&"}`),
				EnrollmentGroupID: "X509-CA", Proof: dps.Proof{Type: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leafInfo, Signing: &signingInfo}},
				Created: t0, Updated: t1, ETag: "Ik1LUUlRSzIzQzRZMlNDNjMyUjROSlEyMkZWIg=="},
			Created: t0, Updated: t1,
		}},
		{"operation-pending.json", docs.KindOperation, dps.Operation{
			ID: "4.0a1b2c3d4e5f6071.44444444-2222-3333-4444-555555555555", RegistrationID: "tpm-device-01",
			Proof:  dps.Proof{Type: dps.AttestationTPM, TPM: &dps.TPMProof{Key: "SzEtY2hhbGxlbmdl", StorageRootKey: srk}},
			Status: dps.StatusAssigning, Payload: json.RawMessage(`{"model":"t<1>","price":"5&6"}`),
			Created: t0, Updated: t0,
		}},
		{"hubdevice.json", docs.KindHubDevice, dps.HubDevice{
			Hub: "hub-b.example.net", DeviceID: "Group-Dev-01",
			Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: "ZGV2aWNlLXByaW1hcnk=", SecondaryKey: "ZGV2aWNlLXNlY29uZGFyeQ=="}, IoTEdge: true,
			Twin: json.RawMessage(`{"tags":{"note":"<&>"},"properties":{"desired":{"interval":30}}}`), Updated: t1,
		}},
		{"hubdevice-x509.json", docs.KindHubDevice, dps.HubDevice{
			Hub: "hub-a.example.net", DeviceID: "CA-Dev-01",
			Auth: dps.HubAuth{Type: dps.HubAuthCA, PrimaryThumbprint: "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"},
			Twin: json.RawMessage(`null`), Updated: t1,
		}},
		{"cacertificate.json", docs.KindCACertificate, dps.CACertificate{
			Name: "Root-CA", Certificate: rootPEM, Verified: true, VerificationCode: "0A1B2C3D4E5F",
			ETag: `"LNEHJD3RHQ45UVWFDVOTGBLHQN"`, Created: t0, Updated: t1,
		}},
		{"challenge.json", docs.KindChallenge, dps.Challenge{
			RegistrationID: "TPM-Device-02", Key: "SzEtY2hhbGxlbmdlLTAy", StorageRootKey: srk, Created: t0, Expires: t1,
		}},
		// Seq 1: the first message of a hub's log, as a store appends it.
		{"message.json", docs.KindMessage, dps.Message{
			Hub: "Hub-A.example.net", DeviceID: "Sensor-01", ModuleID: "thermo<&>", Seq: 1, Enqueued: t0,
			MessageID: "msg-0001", CorrelationID: "corr-<7>", UserID: "user&1", ContentType: "application/json", ContentEncoding: "utf-8",
			Properties: map[string]string{"alert": "<high> & rising", "level": "3"},
			System: map[string]string{
				"iothub-connection-device-id":   "Sensor-01",
				"iothub-connection-auth-method": `{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}`,
				"dt-dataschema":                 "dtmi:com:example:Thermostat;1",
				"$.to":                          "/devices/Sensor-01/messages/events",
			},
			Body: []byte("{\"temperature\":21.5,\"raw\":\"\x00\xff<&>\"}"),
		}},
		// Seq 1: the first event of the feed, as a store appends it.
		{"registrationevent.json", docs.KindRegistrationEvent, dps.RegistrationEvent{
			Seq: 1, Time: t0, Kind: dps.EventAccepted, RegistrationID: "Sensor-01", EnrollmentGroup: "Group-A",
			OperationID: "1.a1b2c3d4e5f60718.5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a5b", Attestation: dps.AttestationSymmetricKey,
			Transport: "mqttws", Source: "[2001:db8::7]:50123", TrackingID: "5e6f7a8b-1c2d-4e3f-8a9b-0c1d2e3f4a5c",
			Payload: json.RawMessage(`{"model":"<thermo&>","fw":"1.2"}`), Node: "node-1",
		}},
		{"registrationevent-webhook.json", docs.KindRegistrationEvent, dps.RegistrationEvent{
			Seq: 1, Time: t1, Kind: dps.EventWebhook, RegistrationID: "Sensor-02", OperationID: "1.00000000000000aa.00000000-0000-4000-8000-000000000001",
			Attestation: dps.AttestationX509, Webhook: &dps.WebhookCall{URL: "https://alloc.example.net/api/allocate", Status: 503, Latency: 1500 * time.Millisecond, Error: "answered 503"},
			Node: "node-2",
		}},
		{"registrationevent-refused.json", docs.KindRegistrationEvent, dps.RegistrationEvent{
			Seq: 1, Time: t1, Kind: dps.EventRefused, RegistrationID: "Sensor-03", Transport: "https", Source: "192.0.2.10:443",
			TrackingID: "t-1", Code: dps.CodeUnauthorized, Reason: "the token's signature does not match <&>", Cause: dps.CauseAuthentication,
			PayloadTruncated: true, Node: "node-1",
		}},
	}
}

// noLegacy are the kinds that have no previous format (their tables were
// created in format 1): no legacy golden file, and a document of theirs
// without a version is refused rather than read in the previous shape.
var noLegacy = map[docs.Kind]bool{docs.KindMessage: true, docs.KindRegistrationEvent: true}

// encode and decode dispatch on the kind, as the stores do by table.
func encode(t *testing.T, v any) []byte {
	t.Helper()
	var b []byte
	var err error
	switch v := v.(type) {
	case dps.Enrollment:
		b, err = docs.EncodeEnrollment(v)
	case dps.Group:
		b, err = docs.EncodeGroup(v)
	case dps.Registration:
		b, err = docs.EncodeRegistration(v)
	case dps.Operation:
		b, err = docs.EncodeOperation(v)
	case dps.HubDevice:
		b, err = docs.EncodeHubDevice(v)
	case dps.CACertificate:
		b, err = docs.EncodeCACertificate(v)
	case dps.Challenge:
		b, err = docs.EncodeChallenge(v)
	case dps.Message:
		b, err = docs.EncodeMessage(v)
	case dps.RegistrationEvent:
		b, err = docs.EncodeRegistrationEvent(v)
	default:
		t.Fatalf("no encoder for %T", v)
	}
	if err != nil {
		t.Fatalf("encode %T: %v", v, err)
	}
	return b
}

func decode(k docs.Kind, b []byte) (any, error) {
	switch k {
	case docs.KindEnrollment:
		return docs.DecodeEnrollment(b)
	case docs.KindGroup:
		return docs.DecodeGroup(b)
	case docs.KindRegistration:
		return docs.DecodeRegistration(b)
	case docs.KindOperation:
		return docs.DecodeOperation(b)
	case docs.KindHubDevice:
		return docs.DecodeHubDevice(b)
	case docs.KindCACertificate:
		return docs.DecodeCACertificate(b)
	case docs.KindChallenge:
		return docs.DecodeChallenge(b)
	case docs.KindMessage:
		return docs.DecodeMessage(b)
	case docs.KindRegistrationEvent:
		return docs.DecodeRegistrationEvent(b)
	}
	return nil, fmt.Errorf("no decoder for %q", k)
}

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b, []byte("\n"))
}

// TestGolden: each golden document decodes to the value written above, and
// that value encodes to the golden bytes. A domain field renamed, dropped
// or no longer mapped fails one or the other; a tag changed by mistake
// fails the second. go test -update rewrites the golden files (review the
// diff: a changed golden file is a changed storage format).
func TestGolden(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.file, func(t *testing.T) {
			enc := encode(t, g.want)
			if *update {
				if err := os.WriteFile(filepath.Join("testdata", g.file), append(enc, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b := read(t, g.file)
			if !bytes.Equal(enc, b) {
				t.Errorf("encoded\n%s\nwant (testdata/%s)\n%s", enc, g.file, b)
			}
			if !bytes.HasPrefix(b, []byte(`{"v":1,`)) {
				t.Errorf("golden %s does not start with its format version: %.20s", g.file, b)
			}
			got, err := decode(g.kind, b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, g.want) {
				t.Errorf("decoded\n%#v\nwant\n%#v", got, g.want)
			}
		})
	}
}

// TestLegacyGolden: the documents of the previous format (testdata/legacy,
// written by the previous release's encoding of the same values, never
// regenerated) decode to the same values, and Upgrade turns each into the
// current golden document byte for byte.
//
// The kinds of noLegacy have no such file (checked): a document of theirs
// without a version is refused instead.
func TestLegacyGolden(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.file, func(t *testing.T) {
			if noLegacy[g.kind] {
				if _, err := os.Stat(filepath.Join("testdata", "legacy", g.file)); !os.IsNotExist(err) {
					t.Fatalf("testdata/legacy/%s exists for a kind with no previous format (%v)", g.file, err)
				}
				cur := read(t, g.file)
				unversioned := append([]byte("{"), bytes.TrimPrefix(cur, []byte(`{"v":1,`))...)
				if v, err := decode(g.kind, unversioned); err == nil || !strings.Contains(err.Error(), "no format version") {
					t.Errorf("a %s document without a version decoded: %#v, %v", g.kind, v, err)
				}
				if _, _, err := docs.Upgrade(g.kind, unversioned); err == nil {
					t.Errorf("Upgrade of a %s document without a version succeeded", g.kind)
				}
				if up, changed, err := docs.Upgrade(g.kind, cur); err != nil || changed || !bytes.Equal(up, cur) {
					t.Errorf("Upgrade of a current document = %s, changed %v, %v; want it unchanged", up, changed, err)
				}
				return
			}
			old := read(t, filepath.Join("legacy", g.file))
			got, err := decode(g.kind, old)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, g.want) {
				t.Errorf("decoded\n%#v\nwant\n%#v", got, g.want)
			}
			up, changed, err := docs.Upgrade(g.kind, old)
			if err != nil || !changed {
				t.Fatalf("Upgrade = changed %v, %v", changed, err)
			}
			if cur := read(t, g.file); !bytes.Equal(up, cur) {
				t.Errorf("upgraded\n%s\nwant (testdata/%s)\n%s", up, g.file, cur)
			}
			if again, changed, err := docs.Upgrade(g.kind, up); err != nil || changed || !bytes.Equal(again, up) {
				t.Errorf("Upgrade of a current document = %s, changed %v, %v; want it unchanged", again, changed, err)
			}
		})
	}
}

// TestAbsentAndEmpty: what a round trip gives for absent and empty members
// is what the previous format gave (the stores' answers, and so the wire,
// depend on it): nil raw JSON comes back as null, nil and empty slices and
// maps stay nil and empty, nil pointers nil and empty structs empty.
func TestAbsentAndEmpty(t *testing.T) {
	null := json.RawMessage(`null`)
	for _, tt := range []struct {
		name       string
		in, want   any
		kind       docs.Kind
		legacyJSON string // the previous release's document of in
	}{
		{"enrollment/zero", dps.Enrollment{}, dps.Enrollment{OptionalDeviceInformation: null, Settings: dps.Settings{InitialTwin: null}}, docs.KindEnrollment,
			`{"RegistrationID":"","DeviceID":"","OptionalDeviceInformation":null,"Attestation":{"Type":"","SymmetricKey":null,"X509":null,"TPM":null},"IoTEdge":false,"IoTHubHostName":"","IoTHubs":null,"InitialTwin":null,"ProvisioningStatus":"","ReprovisionPolicy":null,"AllocationPolicy":"","CustomAllocation":null,"Extra":null,"ETag":"","Created":"0001-01-01T00:00:00Z","Updated":"0001-01-01T00:00:00Z"}`},
		{"enrollment/empty", dps.Enrollment{Settings: dps.Settings{IoTHubs: []string{}, Extra: map[string]json.RawMessage{},
			Attestation:       dps.Attestation{SymmetricKey: &dps.SymmetricKeyAttestation{}, X509: &dps.X509Attestation{ClientCertificates: &dps.X509Certificates{}}},
			ReprovisionPolicy: &dps.ReprovisionPolicy{}, CustomAllocation: &dps.CustomAllocation{}}},
			dps.Enrollment{OptionalDeviceInformation: null, Settings: dps.Settings{IoTHubs: []string{}, Extra: map[string]json.RawMessage{}, InitialTwin: null,
				Attestation:       dps.Attestation{SymmetricKey: &dps.SymmetricKeyAttestation{}, X509: &dps.X509Attestation{ClientCertificates: &dps.X509Certificates{}}},
				ReprovisionPolicy: &dps.ReprovisionPolicy{}, CustomAllocation: &dps.CustomAllocation{}}}, docs.KindEnrollment,
			`{"RegistrationID":"","DeviceID":"","OptionalDeviceInformation":null,"Attestation":{"Type":"","SymmetricKey":{"PrimaryKey":"","SecondaryKey":""},"X509":{"ClientCertificates":{"Primary":"","Secondary":""},"SigningCertificates":null,"CAReferences":null},"TPM":null},"IoTEdge":false,"IoTHubHostName":"","IoTHubs":[],"InitialTwin":null,"ProvisioningStatus":"","ReprovisionPolicy":{"UpdateHubAssignment":false,"MigrateDeviceData":false},"AllocationPolicy":"","CustomAllocation":{"WebhookURL":"","APIVersion":"","SigningSecret":""},"Extra":{},"ETag":"","Created":"0001-01-01T00:00:00Z","Updated":"0001-01-01T00:00:00Z"}`},
		{"operation/zero", dps.Operation{}, dps.Operation{Payload: null}, docs.KindOperation,
			`{"ID":"","RegistrationID":"","EnrollmentGroupID":"","Attestation":"","X509":null,"TPMKey":"","TPMStorageRootKey":"","Status":"","Payload":null,"Result":null,"Created":"0001-01-01T00:00:00Z","Updated":"0001-01-01T00:00:00Z"}`},
		{"operation/empty-result", dps.Operation{Result: &dps.Registration{}, Proof: dps.Proof{X509: &dps.X509Proof{}}}, dps.Operation{Payload: null, Result: &dps.Registration{Payload: null}, Proof: dps.Proof{X509: &dps.X509Proof{}}}, docs.KindOperation,
			`{"ID":"","RegistrationID":"","EnrollmentGroupID":"","Attestation":"","X509":{"Certificate":{"SubjectName":"","SHA1Thumbprint":"","SHA256Thumbprint":"","IssuerName":"","NotBefore":"0001-01-01T00:00:00Z","NotAfter":"0001-01-01T00:00:00Z","SerialNumber":"","Version":0},"Signing":null},"TPMKey":"","TPMStorageRootKey":"","Status":"","Payload":null,"Result":{"RegistrationID":"","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"","Substatus":"","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"","X509":null,"TPMAuthenticationKey":"","Created":"0001-01-01T00:00:00Z","Updated":"0001-01-01T00:00:00Z","ETag":""},"Created":"0001-01-01T00:00:00Z","Updated":"0001-01-01T00:00:00Z"}`},
		{"hubdevice/zero", dps.HubDevice{}, dps.HubDevice{Twin: null}, docs.KindHubDevice,
			`{"Hub":"","DeviceID":"","AuthKind":"","PrimaryKey":"","SecondaryKey":"","X509Thumbprint":"","X509CASigned":false,"IoTEdge":false,"Twin":null,"Updated":"0001-01-01T00:00:00Z"}`},
		{"registration/zero", dps.Registration{}, dps.Registration{Payload: null}, docs.KindRegistration,
			`{"RegistrationID":"","DeviceID":"","AssignedHub":"","InitialHub":"","Status":"","Substatus":"","ErrorCode":0,"ErrorMessage":"","Payload":null,"EnrollmentGroupID":"","Attestation":"","X509":null,"TPMAuthenticationKey":"","Created":"0001-01-01T00:00:00Z","Updated":"0001-01-01T00:00:00Z","ETag":""}`},
		{"challenge/zero", dps.Challenge{}, dps.Challenge{}, docs.KindChallenge,
			`{"RegistrationID":"","Key":"","StorageRootKey":"","Created":"0001-01-01T00:00:00Z","Expires":"0001-01-01T00:00:00Z"}`},
		{"ca/zero", dps.CACertificate{}, dps.CACertificate{}, docs.KindCACertificate,
			`{"Name":"","Certificate":"","Verified":false,"VerificationCode":"","ETag":"","Created":"0001-01-01T00:00:00Z","Updated":"0001-01-01T00:00:00Z"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decode(tt.kind, encode(t, tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("round trip\n%#v\nwant\n%#v", got, tt.want)
			}
			old, err := decode(tt.kind, []byte(tt.legacyJSON))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(old, tt.want) {
				t.Errorf("previous format\n%#v\nwant\n%#v", old, tt.want)
			}
		})
	}
}

// TestMessageEmptyAndNil: a message's nil body and nil property maps come
// back nil, empty ones empty (a device may send an empty message: it is
// not a message without a body).
func TestMessageEmptyAndNil(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   dps.Message
		doc  string
	}{
		{"nil", dps.Message{Hub: "h", DeviceID: "d", Seq: 2}, `{"v":1,"hub":"h","deviceId":"d","seq":2,"body":null}`},
		{"empty", dps.Message{Hub: "h", DeviceID: "d", Seq: 2, Body: []byte{}, Properties: map[string]string{}, System: map[string]string{}},
			`{"v":1,"hub":"h","deviceId":"d","seq":2,"properties":{},"system":{},"body":""}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := encode(t, tt.in)
			if string(b) != tt.doc {
				t.Errorf("encoded %s, want %s", b, tt.doc)
			}
			got, err := docs.DecodeMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.in) || (got.Body == nil) != (tt.in.Body == nil) {
				t.Errorf("round trip\n%#v\nwant\n%#v", got, tt.in)
			}
		})
	}
	// A document without the body member reads as a nil body.
	if m, err := docs.DecodeMessage([]byte(`{"v":1,"hub":"h","deviceId":"d","seq":1}`)); err != nil || m.Body != nil {
		t.Errorf("document without a body = %#v, %v", m, err)
	}
}

// TestTables: the tables flagged Legacy are those of the kinds with a
// previous format, every kind of golden document has a table, and the
// upgrade knows every table's kind.
func TestTables(t *testing.T) {
	kinds := map[docs.Kind]bool{}
	for _, g := range goldens() {
		kinds[g.kind] = true
	}
	uncovered := maps.Clone(kinds) // a kind may be kept in several tables
	for _, tb := range docs.Tables() {
		if tb.Legacy == noLegacy[tb.Kind] {
			t.Errorf("table %s: Legacy = %v, but its kind %s has a previous format: %v", tb.Name, tb.Legacy, tb.Kind, !noLegacy[tb.Kind])
		}
		if !kinds[tb.Kind] {
			t.Errorf("table %s: no golden document of kind %s", tb.Name, tb.Kind)
		}
		delete(uncovered, tb.Kind)
		if _, _, err := docs.Upgrade(tb.Kind, []byte(`{"v":2}`)); err == nil || strings.Contains(err.Error(), "unknown document kind") {
			t.Errorf("Upgrade of table %s's kind: %v", tb.Name, err)
		}
	}
	if len(uncovered) != 0 {
		t.Errorf("kinds of golden documents without a table: %v", uncovered)
	}
}

// fill sets every field of v, recursively, to a non-zero value.
func fill(t *testing.T, v reflect.Value, path string) {
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, 5, len(path), time.UTC)))
		return
	case v.Type() == reflect.TypeFor[json.RawMessage]():
		v.SetBytes([]byte(fmt.Sprintf(`{"at":%q,"html":"<&>"}`, path)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(path + " <&>")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(len(path)))
	case reflect.Uint8:
		v.SetUint(uint64(len(path)))
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0), path+"[0]")
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		e := reflect.New(v.Type().Elem()).Elem()
		fill(t, e, path+"[k]")
		m.SetMapIndex(reflect.ValueOf("k").Convert(v.Type().Key()), e)
		v.Set(m)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				fill(t, v.Field(i), path+"."+f.Name)
			}
		}
	default:
		t.Fatalf("%s: cannot fill a %s", path, v.Kind())
	}
}

// TestEveryFieldSurvives: a value of each domain type with every field set
// (found by reflection, so a field added to the domain is included)
// survives encoding and decoding. A field the documents do not carry fails
// here.
func TestEveryFieldSurvives(t *testing.T) {
	for _, tt := range []struct {
		v    any
		kind docs.Kind
	}{
		{&dps.Enrollment{}, docs.KindEnrollment},
		{&dps.Group{}, docs.KindGroup},
		{&dps.Registration{}, docs.KindRegistration},
		{&dps.Operation{}, docs.KindOperation},
		{&dps.HubDevice{}, docs.KindHubDevice},
		{&dps.CACertificate{}, docs.KindCACertificate},
		{&dps.Challenge{}, docs.KindChallenge},
		{&dps.Message{}, docs.KindMessage},
		{&dps.RegistrationEvent{}, docs.KindRegistrationEvent},
	} {
		v := reflect.ValueOf(tt.v).Elem()
		t.Run(v.Type().Name(), func(t *testing.T) {
			fill(t, v, v.Type().Name())
			got, err := decode(tt.kind, encode(t, v.Interface()))
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := v.Addr().Interface().(*dps.HubDevice); ok {
				// A write's request fields, never stored.
				d.TwinWrite, d.Replaces = 0, ""
			}
			if !reflect.DeepEqual(got, v.Interface()) {
				t.Errorf("round trip lost data:\n%#v\nwant\n%#v", got, v.Interface())
			}
		})
	}
}

// TestNewerFormatRefused: a document of a format this release does not
// know is an error, not a value with its unknown members dropped.
func TestNewerFormatRefused(t *testing.T) {
	for _, k := range []docs.Kind{docs.KindEnrollment, docs.KindGroup, docs.KindRegistration, docs.KindOperation, docs.KindHubDevice, docs.KindCACertificate, docs.KindChallenge, docs.KindMessage, docs.KindRegistrationEvent} {
		if _, err := decode(k, []byte(`{"v":2,"registrationId":"x","id":"x"}`)); err == nil || !strings.Contains(err.Error(), "format 2") {
			t.Errorf("%s of format 2: %v, want an error naming the format", k, err)
		}
		if _, _, err := docs.Upgrade(k, []byte(`{"v":2}`)); err == nil {
			t.Errorf("Upgrade of a %s of format 2 succeeded", k)
		}
		if _, err := decode(k, []byte(`{"v":1,`)); err == nil {
			t.Errorf("%s: a truncated document decoded", k)
		}
	}
}

// TestSecretsRedacted: documents print without their keys.
func TestSecretsRedacted(t *testing.T) {
	e := docs.FromEnrollment(dps.Enrollment{Settings: dps.Settings{
		Attestation:      dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeS1zZWNyZXQ=", SecondaryKey: "c2Vjb25kYXJ5LXNlY3JldA=="}},
		CustomAllocation: &dps.CustomAllocation{SigningSecret: "d2ViaG9vay1zZWNyZXQ="}}})
	op := docs.FromOperation(dps.Operation{Proof: dps.Proof{TPM: &dps.TPMProof{Key: "dHBtLXNlY3JldA=="}}})
	for _, s := range []string{fmt.Sprintf("%v %+v %#v", e, e, e), fmt.Sprintf("%v %+v %#v", *e.Attestation.SymmetricKey, *e.CustomAllocation, op)} {
		for _, secret := range []string{"cHJpbWFyeS1zZWNyZXQ=", "c2Vjb25kYXJ5LXNlY3JldA==", "d2ViaG9vay1zZWNyZXQ=", "dHBtLXNlY3JldA=="} {
			if strings.Contains(s, secret) {
				t.Errorf("printed document shows a secret: %s", s)
			}
		}
	}
}

// FuzzDecode: any bytes either fail to decode or decode to a value that
// encodes to a current document decoding to the same value again.
func FuzzDecode(f *testing.F) {
	for _, g := range goldens() {
		b, err := os.ReadFile(filepath.Join("testdata", g.file))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(g.kind), b)
		if b, err := os.ReadFile(filepath.Join("testdata", "legacy", g.file)); err == nil {
			f.Add(string(g.kind), b)
		}
	}
	f.Fuzz(func(t *testing.T, kind string, b []byte) {
		k := docs.Kind(kind)
		v, err := decode(k, b)
		if err != nil {
			return
		}
		enc := encode(t, v)
		again, err := decode(k, enc)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		if !reflect.DeepEqual(again, v) {
			t.Fatalf("round trip changed the value:\n%#v\n%#v", v, again)
		}
		up, _, err := docs.Upgrade(k, b)
		if err != nil {
			t.Fatalf("Upgrade of a decodable document: %v", err)
		}
		if upv, err := decode(k, up); err != nil || !reflect.DeepEqual(upv, v) {
			t.Fatalf("Upgrade changed the value: %v\n%#v\n%#v", err, v, upv)
		}
	})
}

// TestHubDeviceAuthKind: hub device documents of format 1 written before
// authType existed (testdata/authkind, as commit b1e2d82 wrote them, never
// regenerated) name the attestation type instead; they decode to the same
// identities, TPM devices' keys included.
func TestHubDeviceAuthKind(t *testing.T) {
	want := map[string]dps.HubDevice{}
	for _, g := range goldens() {
		if g.kind == docs.KindHubDevice {
			want[g.file] = g.want.(dps.HubDevice)
		}
	}
	for _, file := range []string{"hubdevice.json", "hubdevice-x509.json"} {
		got, err := docs.DecodeHubDevice(read(t, filepath.Join("authkind", file)))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want[file]) {
			t.Errorf("%s decoded\n%#v\nwant\n%#v", file, got, want[file])
		}
	}
	for _, tt := range []struct {
		doc  string
		want dps.HubAuthType
	}{
		{`{"v":1,"hub":"h","deviceId":"d","authKind":"tpm","primaryKey":"azI=","twin":null}`, dps.HubAuthSAS},
		{`{"v":1,"hub":"h","deviceId":"d","authKind":"symmetricKey","primaryKey":"azI=","twin":null}`, dps.HubAuthSAS},
		{`{"v":1,"hub":"h","deviceId":"d","authKind":"x509","x509Thumbprint":"AB","twin":null}`, dps.HubAuthSelfSigned},
		{`{"v":1,"hub":"h","deviceId":"d","authKind":"x509","x509CaSigned":true,"twin":null}`, dps.HubAuthCA},
		{`{"v":1,"hub":"h","deviceId":"d","authType":"selfSigned","authKind":"symmetricKey","twin":null}`, dps.HubAuthSelfSigned},
	} {
		got, err := docs.DecodeHubDevice([]byte(tt.doc))
		if err != nil {
			t.Fatal(err)
		}
		if got.Auth.Type != tt.want {
			t.Errorf("%s: auth type %q, want %q", tt.doc, got.Auth.Type, tt.want)
		}
		if strings.Contains(tt.doc, `"primaryKey":"azI="`) && got.Auth.PrimaryKey != "azI=" {
			t.Errorf("%s: primary key lost", tt.doc)
		}
	}
}
