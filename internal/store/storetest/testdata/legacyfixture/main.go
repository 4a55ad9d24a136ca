// Command legacyfixture wrote the fixtures of the migration tests
// (internal/store/sqlite/testdata/legacy*.db and
// internal/store/postgres/testdata/legacy*.sql): one database per store,
// populated through the stores' own API with every record type and every
// field set, by a release before the document format changed (commits
// c723902 and 0c4f88f). It is kept as the record of how they were made
// (README.md). It builds against later releases too, but would then write
// their format: run it at one of those commits, from a copy of it
// (cmd/legacyfixture there):
//
//	go run ./cmd/legacyfixture -sqlite /tmp/legacy.db -pgdump /tmp/legacy.sql
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/pgtest"
	"github.com/opendps/dps/internal/store/postgres"
	"github.com/opendps/dps/internal/store/sqlite"
)

type store interface {
	Meta(ctx context.Context, key, value string) (string, error)
	PutEnrollment(ctx context.Context, e dps.Enrollment, ifMatch string) (dps.Enrollment, error)
	PutGroup(ctx context.Context, g dps.Group, ifMatch string) (dps.Group, error)
	CreateOperation(ctx context.Context, op dps.Operation) (dps.Operation, error)
	CompleteOperation(ctx context.Context, op dps.Operation) (dps.Operation, error)
	ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error)
	PutHubDevice(ctx context.Context, d dps.HubDevice) error
	PutCACertificate(ctx context.Context, c dps.CACertificate, ifMatch string) (dps.CACertificate, error)
	PutChallenge(ctx context.Context, c dps.Challenge) error
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

const (
	certA = "-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafPrimary<&>==\n-----END CERTIFICATE-----\n"
	certB = "-----BEGIN CERTIFICATE-----\nMIIBfixtureLeafSecondary==\n-----END CERTIFICATE-----\n"
	certC = "-----BEGIN CERTIFICATE-----\nMIIBfixtureIntermediate==\n-----END CERTIFICATE-----\n"
	certD = "TUlJQmZpeHR1cmVSb290Q0E=" // base64 DER, as uploaded
	ek    = "ARoAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAxsj2gUScTk1UjuioeTlfGYZrrimExB+bScH75adUMRIi2UOMxG1kw4y+9RW/IVoMl4e620VxZad0ARX2gUqVjYO7KPVt3dyKhZS3dkcvfBisBhP1XH9B33VqHG9SHnbnQXdBUaCgKAfxome8UmBKfe+naTsE5fkvjb/do3/dD6l4sGBwFCnKRdln4XpM03zLpoHFao8zOwt8l/uP3qUIxmCYv9A7m69Ms+5/pCkTu/rK4mRDsfhZ0QLfbzVI6zQFOKF/rwsfBtFeWlWtcuJMKlXdD8TXWElTzgh7JS4qhFzreL0c1mI0GCj+Aws0usZh7dLIVPnlgZcBhgy1SSDQMQ=="
	srk   = "ARYAAQALAAMAcgAAAAYAgABDABAIAAAAAAABAMsrkUYXvhqcDc3/N0DRzKiu8abmLWcNUUXo2ogGlLQ+lH8cSeg3Y6Z+JoIDgovYwRk1kB6Hvz8DGoXkkwFcUsTcHKdIMXC5RvcdPm4ESOAXy3kLcQsbvW/9YBvb3uDqVR9QJNR8XKqgBXA1u/SCj4pH/v8kDEAl6YNefvqXFTgOzILwLUdvPZyAjOqAwHEohAnb0Xbc6W9Gh+p0gs/jhyIGGlt17bfQ/jZp/KG+3/4Mq8F+GwI2n7YOg+ypLdHy4HQS+2xlqNLdDlzpAAr0mvy3+rVTKbdabs7S/BUSY3rKTT8Ww8vUqfBcA6LvZBJnLsDVq+HEvYBmLuU7TmyqYpAEBs0HnaVq6SYpHQ=="
	blob  = "AAFjcmVkZW50aWFsLWJsb2ItZm9yLXRoZS1maXh0dXJl"
)

func populate(ctx context.Context, s store) (stamps []string, err error) {
	must := func(err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	stamp := func(what, etag string, created, updated time.Time) {
		stamps = append(stamps, fmt.Sprintf("%s etag=%s created=%s updated=%s", what, etag, created.Format(time.RFC3339Nano), updated.Format(time.RFC3339Nano)))
	}
	_, err = s.Meta(ctx, "idScope", "0ne00F1XTUR")
	must(err)
	_, err = s.Meta(ctx, "owner.primaryKey", "b3duZXItcHJpbWFyeS1rZXktZml4dHVyZQ==")
	must(err)

	// Individual enrollments: the three attestation types.
	e, err := s.PutEnrollment(ctx, dps.Enrollment{
		RegistrationID:            "Sym-Device-01",
		DeviceID:                  "sym-device-01-on-hub",
		OptionalDeviceInformation: json.RawMessage(`{"vendor":"A&B <Ltd>","serial":"Ä-123"}`),
		Settings: dps.Settings{
			Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "cHJpbWFyeS1lbnJvbGxtZW50LWtleQ==", SecondaryKey: "c2Vjb25kYXJ5LWVucm9sbG1lbnQta2V5"}},
			IoTEdge:            true,
			IoTHubHostName:     "hub-a.example.net",
			IoTHubs:            []string{"hub-a.example.net", "hub-b.example.net"},
			InitialTwin:        json.RawMessage(`{ "tags" : { "site" : "a&b<c>" }, "properties":{"desired":{"interval":30}}}`),
			ProvisioningStatus: dps.ProvisioningEnabled,
			ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: false},
			AllocationPolicy:   dps.AllocationCustom,
			CustomAllocation:   &dps.CustomAllocation{WebhookURL: "https://hooks.example.net/allocate?code=x&y=<1>", APIVersion: "2021-10-01", SigningSecret: "d2ViaG9vay1zaWduaW5nLXNlY3JldA=="},
			Extra:              map[string]json.RawMessage{"credentialPolicyName": json.RawMessage(`"policy-1"`), "deviceTypeRefs": json.RawMessage(`["t1","t2"]`)},
		},
	}, "")
	must(err)
	stamp("enrollment sym-device-01", e.ETag, e.Created, e.Updated)
	e, err = s.PutEnrollment(ctx, dps.Enrollment{
		RegistrationID: "x509-device-01",
		Settings: dps.Settings{
			Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{ClientCertificates: &dps.X509Certificates{Primary: certA, Secondary: certB}}},
			IoTHubs:            []string{},
			ProvisioningStatus: dps.ProvisioningDisabled,
			ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: true},
			AllocationPolicy:   dps.AllocationStatic,
		},
	}, "")
	must(err)
	stamp("enrollment x509-device-01", e.ETag, e.Created, e.Updated)
	e, err = s.PutEnrollment(ctx, dps.Enrollment{
		RegistrationID: "tpm-device-01",
		Settings: dps.Settings{
			Attestation:      dps.Attestation{Type: dps.AttestationTPM, TPM: &dps.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}},
			AllocationPolicy: dps.AllocationHashed,
		},
	}, "")
	must(err)
	stamp("enrollment tpm-device-01", e.ETag, e.Created, e.Updated)
	// Replaced once: Created stays, Updated and ETag move.
	e.IoTHubHostName = "hub-b.example.net"
	e, err = s.PutEnrollment(ctx, e, e.ETag)
	must(err)
	stamp("enrollment tpm-device-01 (replaced)", e.ETag, e.Created, e.Updated)

	// Enrollment groups: symmetric key, X.509 with a signing certificate,
	// X.509 with CA references.
	g, err := s.PutGroup(ctx, dps.Group{ID: "Factory-Line-1", Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationSymmetricKey, SymmetricKey: &dps.SymmetricKeyAttestation{PrimaryKey: "Z3JvdXAtcHJpbWFyeS1rZXk=", SecondaryKey: "Z3JvdXAtc2Vjb25kYXJ5LWtleQ=="}},
		IoTEdge:            true,
		IoTHubs:            []string{"hub-b.example.net"},
		InitialTwin:        json.RawMessage(`{"tags":{"line":1}}`),
		ProvisioningStatus: dps.ProvisioningEnabled,
		ReprovisionPolicy:  &dps.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true},
		AllocationPolicy:   dps.AllocationGeoLatency,
		Extra:              map[string]json.RawMessage{"namespaceName": json.RawMessage(`"ns-1"`)},
	}}, "")
	must(err)
	stamp("group factory-line-1", g.ETag, g.Created, g.Updated)
	g, err = s.PutGroup(ctx, dps.Group{ID: "x509-signed", Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: certC, Secondary: certD}}},
		ProvisioningStatus: dps.ProvisioningEnabled,
		AllocationPolicy:   dps.AllocationCustom,
		CustomAllocation:   &dps.CustomAllocation{WebhookURL: "https://hooks.example.net/group", APIVersion: "2019-03-31"},
	}}, "")
	must(err)
	stamp("group x509-signed", g.ETag, g.Created, g.Updated)
	g, err = s.PutGroup(ctx, dps.Group{ID: "x509-ca", Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "Root-CA", Secondary: "root-ca-2"}}},
		IoTHubHostName:     "hub-a.example.net",
		ProvisioningStatus: dps.ProvisioningDisabled,
	}}, "")
	must(err)
	stamp("group x509-ca", g.ETag, g.Created, g.Updated)

	// CA certificates: verified and unverified.
	c, err := s.PutCACertificate(ctx, dps.CACertificate{Name: "Root-CA", Certificate: certC, Verified: true, VerificationCode: "0A1B2C3D4E5F"}, "")
	must(err)
	stamp("ca root-ca", c.ETag, c.Created, c.Updated)
	c, err = s.PutCACertificate(ctx, dps.CACertificate{Name: "root-ca-2", Certificate: certA, VerificationCode: "F00DFACE"}, "")
	must(err)
	stamp("ca root-ca-2", c.ETag, c.Created, c.Updated)

	leaf := dps.CertificateInfo{SubjectName: "CN=x509-device-01", SHA1Thumbprint: "A1B2C3D4E5F60718293A4B5C6D7E8F9012345678", SHA256Thumbprint: "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF", IssuerName: "CN=Intermediate", NotBefore: at("2025-01-01T00:00:00Z"), NotAfter: at("2026-01-01T00:00:00Z"), SerialNumber: "1F2E3D", Version: 3}
	signing := dps.CertificateInfo{SubjectName: "CN=Intermediate", SHA1Thumbprint: "FFEEDDCCBBAA99887766554433221100FFEEDDCC", SHA256Thumbprint: "FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100", IssuerName: "CN=Root CA", NotBefore: at("2024-01-01T00:00:00Z"), NotAfter: at("2034-01-01T00:00:00Z"), SerialNumber: "02", Version: 3}

	// Operations: final ones that wrote registrations, pending ones.
	t0 := at("2025-06-01T10:00:00.123456789Z")
	op, err := s.CreateOperation(ctx, dps.Operation{
		ID: "4.0a1b2c3d4e5f6071.11111111-2222-3333-4444-555555555555", RegistrationID: "Group-Dev-01", EnrollmentGroupID: "Factory-Line-1",
		Attestation: dps.AttestationSymmetricKey, Status: dps.StatusAssigned,
		Result: &dps.Registration{RegistrationID: "Group-Dev-01", DeviceID: "Group-Dev-01", AssignedHub: "hub-b.example.net", InitialHub: "hub-a.example.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusDeviceDataMigrated, Payload: json.RawMessage(`{"greeting":"hi <there> & welcome","n":1.50}`),
			EnrollmentGroupID: "Factory-Line-1", Attestation: dps.AttestationSymmetricKey, Created: t0, Updated: t0.Add(time.Second)},
		Created: t0, Updated: t0.Add(time.Second),
	})
	must(err)
	stamp("registration group-dev-01", op.Result.ETag, op.Result.Created, op.Result.Updated)
	op, err = s.CreateOperation(ctx, dps.Operation{
		ID: "4.0a1b2c3d4e5f6071.22222222-2222-3333-4444-555555555555", RegistrationID: "Failed-Dev", EnrollmentGroupID: "x509-signed",
		Attestation: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}, Status: dps.StatusFailed,
		Result: &dps.Registration{RegistrationID: "Failed-Dev", Status: dps.StatusFailed, ErrorCode: 400207, ErrorMessage: "Custom allocation failed: \"no hub\" <&>",
			EnrollmentGroupID: "x509-signed", Attestation: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}, Created: t0.Add(2 * time.Second), Updated: t0.Add(3 * time.Second)},
		Created: t0.Add(2 * time.Second), Updated: t0.Add(3 * time.Second),
	})
	must(err)
	stamp("registration failed-dev", op.Result.ETag, op.Result.Created, op.Result.Updated)
	op, err = s.CreateOperation(ctx, dps.Operation{
		ID: "4.0a1b2c3d4e5f6071.33333333-2222-3333-4444-555555555555", RegistrationID: "x509-device-01",
		Attestation: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf}, Status: dps.StatusDisabled,
		Result:  &dps.Registration{RegistrationID: "x509-device-01", Status: dps.StatusDisabled, Attestation: dps.AttestationX509, Updated: t0.Add(4 * time.Second)},
		Created: t0.Add(4 * time.Second), Updated: t0.Add(4 * time.Second),
	})
	must(err)
	// A TPM registration: accepted (assigning), then completed.
	tpmOp := dps.Operation{
		ID: "4.0a1b2c3d4e5f6071.44444444-2222-3333-4444-555555555555", RegistrationID: "tpm-device-01",
		Attestation: dps.AttestationTPM, TPMKey: "SzEtY2hhbGxlbmdlLWtleS0xMjM0NTY3OA==", TPMStorageRootKey: srk,
		Status: dps.StatusAssigning, Payload: json.RawMessage(`{"fw":"1.0"}`), Created: t0.Add(5 * time.Second), Updated: t0.Add(5 * time.Second),
	}
	_, err = s.CreateOperation(ctx, tpmOp)
	must(err)
	tpmOp.Status, tpmOp.Payload, tpmOp.Updated = dps.StatusAssigned, nil, t0.Add(6*time.Second)
	tpmOp.Result = &dps.Registration{RegistrationID: "tpm-device-01", DeviceID: "tpm-device-01", AssignedHub: "hub-b.example.net", InitialHub: "hub-b.example.net",
		Status: dps.StatusAssigned, Substatus: dps.SubstatusInitialAssignment, Attestation: dps.AttestationTPM, TPMAuthenticationKey: blob,
		Created: t0.Add(5 * time.Second), Updated: t0.Add(6 * time.Second)}
	op, err = s.CompleteOperation(ctx, tpmOp)
	must(err)
	stamp("registration tpm-device-01", op.Result.ETag, op.Result.Created, op.Result.Updated)
	// An X.509 group device: assigned with its proof.
	op, err = s.CreateOperation(ctx, dps.Operation{
		ID: "4.0a1b2c3d4e5f6071.55555555-2222-3333-4444-555555555555", RegistrationID: "CA-Dev-01", EnrollmentGroupID: "x509-ca",
		Attestation: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}, Status: dps.StatusAssigned,
		Result: &dps.Registration{RegistrationID: "CA-Dev-01", DeviceID: "CA-Dev-01", AssignedHub: "hub-a.example.net", InitialHub: "hub-b.example.net",
			Status: dps.StatusAssigned, Substatus: dps.SubstatusReprovisionedToInitialAssignment, EnrollmentGroupID: "x509-ca", Attestation: dps.AttestationX509,
			X509: &dps.X509Proof{Certificate: leaf, Signing: &signing}, Created: t0.Add(7 * time.Second), Updated: t0.Add(8 * time.Second)},
		Created: t0.Add(7 * time.Second), Updated: t0.Add(8 * time.Second),
	})
	must(err)
	stamp("registration ca-dev-01", op.Result.ETag, op.Result.Created, op.Result.Updated)
	// Pending: a symmetric-key group device with a payload (leased), and an
	// X.509 individual device.
	_, err = s.CreateOperation(ctx, dps.Operation{
		ID: "4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555", RegistrationID: "Group-Dev-02", EnrollmentGroupID: "Factory-Line-1",
		Attestation: dps.AttestationSymmetricKey, Status: dps.StatusAssigning, Payload: json.RawMessage(`{"model":"t<1>","price":"5&6"}`),
		Created: t0.Add(9 * time.Second), Updated: t0.Add(9 * time.Second),
	})
	must(err)
	ok, err := s.ClaimOperation(ctx, "4.0a1b2c3d4e5f6071.66666666-2222-3333-4444-555555555555", "node-a", t0.Add(40*time.Second))
	must(err)
	if !ok {
		log.Fatal("claim refused")
	}
	_, err = s.CreateOperation(ctx, dps.Operation{
		ID: "4.0a1b2c3d4e5f6071.77777777-2222-3333-4444-555555555555", RegistrationID: "x509-device-01",
		Attestation: dps.AttestationX509, X509: &dps.X509Proof{Certificate: leaf}, Status: dps.StatusAssigning,
		Created: t0.Add(10 * time.Second), Updated: t0.Add(10 * time.Second),
	})
	must(err)

	// Hub devices: symmetric key (edge, twin), X.509 thumbprint, X.509 CA-signed, TPM.
	must(s.PutHubDevice(ctx, dps.HubDevice{Hub: "hub-b.example.net", DeviceID: "Group-Dev-01", AuthKind: dps.AttestationSymmetricKey,
		PrimaryKey: "ZGV2aWNlLXByaW1hcnkta2V5", SecondaryKey: "ZGV2aWNlLXNlY29uZGFyeS1rZXk=", IoTEdge: true,
		Twin: json.RawMessage(`{"tags":{"line":1,"note":"<&>"},"properties":{"desired":{"interval":30}}}`), Updated: t0.Add(time.Second)}))
	must(s.PutHubDevice(ctx, dps.HubDevice{Hub: "hub-a.example.net", DeviceID: "x509-device-01", AuthKind: dps.AttestationX509,
		X509Thumbprint: "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF", Updated: t0.Add(4 * time.Second)}))
	must(s.PutHubDevice(ctx, dps.HubDevice{Hub: "hub-a.example.net", DeviceID: "CA-Dev-01", AuthKind: dps.AttestationX509, X509CASigned: true,
		Twin: json.RawMessage(`{}`), Updated: t0.Add(8 * time.Second)}))
	must(s.PutHubDevice(ctx, dps.HubDevice{Hub: "hub-b.example.net", DeviceID: "tpm-device-01", AuthKind: dps.AttestationTPM,
		PrimaryKey: "dHBtLWh1Yi1rZXk=", Updated: t0.Add(6 * time.Second)}))

	// TPM challenges.
	must(s.PutChallenge(ctx, dps.Challenge{RegistrationID: "TPM-Device-02", Key: "SzEtY2hhbGxlbmdlLWtleS1kZXZpY2UtMDI=", StorageRootKey: srk, Created: t0.Add(11 * time.Second), Expires: t0.Add(71 * time.Second)}))
	must(s.PutChallenge(ctx, dps.Challenge{RegistrationID: "tpm-device-03", Key: "SzEtY2hhbGxlbmdlLWtleS1kZXZpY2UtMDM=", Created: t0.Add(12 * time.Second), Expires: t0.Add(72 * time.Second)}))
	return stamps, nil
}

func main() {
	sqlitePath := flag.String("sqlite", "", "write the SQLite fixture here")
	pgDump := flag.String("pgdump", "", "write the PostgreSQL fixture (a plain pg_dump) here")
	flag.Parse()
	ctx := context.Background()
	if *sqlitePath != "" {
		os.Remove(*sqlitePath)
		db, err := sqlite.Open(ctx, *sqlitePath)
		if err != nil {
			log.Fatal(err)
		}
		stamps, _ := populate(ctx, db)
		if err := db.Close(); err != nil {
			log.Fatal(err)
		}
		os.Remove(*sqlitePath + ".lock")
		fmt.Println("sqlite:")
		fmt.Println(strings.Join(stamps, "\n"))
	}
	if *pgDump != "" {
		c, err := pgtest.Start()
		if err != nil {
			log.Fatal(err)
		}
		defer c.Stop()
		db, err := postgres.Open(ctx, c.DSN, postgres.Options{})
		if err != nil {
			log.Fatal(err)
		}
		stamps, _ := populate(ctx, db)
		db.Close()
		fmt.Println("postgres:")
		fmt.Println(strings.Join(stamps, "\n"))
		bin, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
		out, err := exec.Command(bin[len(bin)-1], "--inserts", "--no-owner", "--no-privileges", "--dbname", c.DSN).Output()
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(*pgDump, out, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
