package docs

import (
	"encoding/json"
	"time"

	"github.com/opendps/dps"
)

// The documents of the releases before Version 1, frozen: those releases
// stored json.Marshal of the dps structs themselves, so their JSON names
// are the Go field names the domain had then (embedded Settings inlined).
// These copies keep those names whatever the domain is called now. Never
// change them: they are how an existing database is read and migrated.

type legacySettings struct {
	Attestation        legacyAttestation
	IoTEdge            bool
	IoTHubHostName     string
	IoTHubs            []string
	InitialTwin        json.RawMessage
	ProvisioningStatus string
	ReprovisionPolicy  *struct{ UpdateHubAssignment, MigrateDeviceData bool }
	AllocationPolicy   string
	CustomAllocation   *struct{ WebhookURL, APIVersion, SigningSecret string }
	Extra              map[string]json.RawMessage
	ETag               string
	Created            time.Time
	Updated            time.Time
}

type legacyAttestation struct {
	Type         string
	SymmetricKey *struct{ PrimaryKey, SecondaryKey string }
	X509         *struct {
		ClientCertificates  *struct{ Primary, Secondary string }
		SigningCertificates *struct{ Primary, Secondary string }
		CAReferences        *struct{ Primary, Secondary string }
	}
	TPM *struct{ EndorsementKey, StorageRootKey string }
}

type legacyEnrollment struct {
	RegistrationID            string
	DeviceID                  string
	OptionalDeviceInformation json.RawMessage
	legacySettings
}

type legacyGroup struct {
	ID string
	legacySettings
}

type legacyCertificateInfo struct {
	SubjectName      string
	SHA1Thumbprint   string
	SHA256Thumbprint string
	IssuerName       string
	NotBefore        time.Time
	NotAfter         time.Time
	SerialNumber     string
	Version          int
}

type legacyX509Proof struct {
	Certificate legacyCertificateInfo
	Signing     *legacyCertificateInfo
}

type legacyRegistration struct {
	RegistrationID       string
	DeviceID             string
	AssignedHub          string
	InitialHub           string
	Status               string
	Substatus            string
	ErrorCode            int
	ErrorMessage         string
	Payload              json.RawMessage
	EnrollmentGroupID    string
	Attestation          string
	X509                 *legacyX509Proof
	TPMAuthenticationKey string
	Created              time.Time
	Updated              time.Time
	ETag                 string
}

type legacyOperation struct {
	ID                string
	RegistrationID    string
	EnrollmentGroupID string
	Attestation       string
	X509              *legacyX509Proof
	TPMKey            string
	TPMStorageRootKey string
	Status            string
	Payload           json.RawMessage
	Result            *legacyRegistration
	Created           time.Time
	Updated           time.Time
}

type legacyHubDevice struct {
	Hub            string
	DeviceID       string
	AuthKind       string
	PrimaryKey     string
	SecondaryKey   string
	X509Thumbprint string
	X509CASigned   bool
	IoTEdge        bool
	Twin           json.RawMessage
	Updated        time.Time
}

type legacyCACertificate struct {
	Name             string
	Certificate      string
	Verified         bool
	VerificationCode string
	ETag             string
	Created          time.Time
	Updated          time.Time
}

type legacyChallenge struct {
	RegistrationID string
	Key            string
	StorageRootKey string
	Created        time.Time
	Expires        time.Time
}

func (l legacySettings) domain() dps.Settings {
	s := dps.Settings{
		Attestation:        l.Attestation.domain(),
		IoTEdge:            l.IoTEdge,
		IoTHubHostName:     l.IoTHubHostName,
		IoTHubs:            l.IoTHubs,
		InitialTwin:        raw(l.InitialTwin),
		ProvisioningStatus: dps.ProvisioningStatus(l.ProvisioningStatus),
		AllocationPolicy:   dps.AllocationPolicy(l.AllocationPolicy),
		Extra:              l.Extra,
		ETag:               l.ETag,
		Created:            l.Created,
		Updated:            l.Updated,
	}
	if p := l.ReprovisionPolicy; p != nil {
		s.ReprovisionPolicy = &dps.ReprovisionPolicy{UpdateHubAssignment: p.UpdateHubAssignment, MigrateDeviceData: p.MigrateDeviceData}
	}
	if c := l.CustomAllocation; c != nil {
		s.CustomAllocation = &dps.CustomAllocation{WebhookURL: c.WebhookURL, APIVersion: c.APIVersion, SigningSecret: dps.Key(c.SigningSecret)}
	}
	liftIssuance(&s)
	return s
}

func (l legacyAttestation) domain() dps.Attestation {
	a := dps.Attestation{Type: dps.AttestationType(l.Type)}
	if k := l.SymmetricKey; k != nil {
		a.SymmetricKey = &dps.SymmetricKeyAttestation{PrimaryKey: dps.Key(k.PrimaryKey), SecondaryKey: dps.Key(k.SecondaryKey)}
	}
	if x := l.X509; x != nil {
		a.X509 = &dps.X509Attestation{}
		if c := x.ClientCertificates; c != nil {
			a.X509.ClientCertificates = &dps.X509Certificates{Primary: c.Primary, Secondary: c.Secondary}
		}
		if c := x.SigningCertificates; c != nil {
			a.X509.SigningCertificates = &dps.X509Certificates{Primary: c.Primary, Secondary: c.Secondary}
		}
		if r := x.CAReferences; r != nil {
			a.X509.CAReferences = &dps.X509CAReferences{Primary: r.Primary, Secondary: r.Secondary}
		}
	}
	if t := l.TPM; t != nil {
		a.TPM = &dps.TPMAttestation{EndorsementKey: t.EndorsementKey, StorageRootKey: t.StorageRootKey}
	}
	return a
}

func (l legacyEnrollment) domain() dps.Enrollment {
	return dps.Enrollment{RegistrationID: l.RegistrationID, DeviceID: l.DeviceID, OptionalDeviceInformation: raw(l.OptionalDeviceInformation), Settings: l.legacySettings.domain()}
}

func (l legacyGroup) domain() dps.Group {
	return dps.Group{ID: l.ID, Settings: l.legacySettings.domain()}
}

func (l legacyCertificateInfo) domain() dps.CertificateInfo {
	return dps.CertificateInfo{SubjectName: l.SubjectName, SHA1Thumbprint: l.SHA1Thumbprint, SHA256Thumbprint: l.SHA256Thumbprint, IssuerName: l.IssuerName,
		NotBefore: l.NotBefore, NotAfter: l.NotAfter, SerialNumber: l.SerialNumber, Version: l.Version}
}

func (l *legacyX509Proof) domain() *dps.X509Proof {
	if l == nil {
		return nil
	}
	p := &dps.X509Proof{Certificate: l.Certificate.domain()}
	if l.Signing != nil {
		s := l.Signing.domain()
		p.Signing = &s
	}
	return p
}

func (l legacyRegistration) domain() dps.Registration {
	return dps.Registration{
		RegistrationID: l.RegistrationID, DeviceID: l.DeviceID, AssignedHub: l.AssignedHub, InitialHub: l.InitialHub,
		Status: dps.Status(l.Status), Substatus: dps.Substatus(l.Substatus), ErrorCode: l.ErrorCode, ErrorMessage: l.ErrorMessage,
		Payload: raw(l.Payload), EnrollmentGroupID: l.EnrollmentGroupID, Proof: proof(l.Attestation, l.X509.domain(), dps.TPMProof{AuthenticationKey: l.TPMAuthenticationKey}),
		Created: l.Created, Updated: l.Updated, ETag: l.ETag,
	}
}

func (l legacyOperation) domain() dps.Operation {
	op := dps.Operation{
		ID: l.ID, RegistrationID: l.RegistrationID, EnrollmentGroupID: l.EnrollmentGroupID,
		Proof:   proof(l.Attestation, l.X509.domain(), dps.TPMProof{Key: dps.Key(l.TPMKey), StorageRootKey: l.TPMStorageRootKey}),
		Status:  dps.Status(l.Status),
		Payload: raw(l.Payload), Created: l.Created, Updated: l.Updated,
	}
	if l.Result != nil {
		r := l.Result.domain()
		op.Result = &r
	}
	return op
}

func (l legacyHubDevice) domain() dps.HubDevice {
	// The same rules as a document of this format without authType.
	return HubDevice{
		Hub: l.Hub, DeviceID: l.DeviceID, AuthKind: l.AuthKind, PrimaryKey: Secret(l.PrimaryKey), SecondaryKey: Secret(l.SecondaryKey),
		X509Thumbprint: l.X509Thumbprint, X509CASigned: l.X509CASigned, IoTEdge: l.IoTEdge, Twin: l.Twin, Updated: l.Updated,
	}.Domain()
}

func (l legacyCACertificate) domain() dps.CACertificate {
	return dps.CACertificate{Name: l.Name, Certificate: l.Certificate, Verified: l.Verified, VerificationCode: l.VerificationCode, ETag: l.ETag, Created: l.Created, Updated: l.Updated}
}

func (l legacyChallenge) domain() dps.Challenge {
	return dps.Challenge{RegistrationID: l.RegistrationID, Key: dps.Key(l.Key), StorageRootKey: l.StorageRootKey, Created: l.Created, Expires: l.Expires}
}
