package docs

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"time"

	"github.com/opendps/dps"
)

// The documents of format Version. Their JSON names are the storage
// format: never rename a tag (add a field, or a new Version with an
// upgrade). omitempty/omitzero mark members whose zero value means absent;
// decoding an absent member gives the same zero value back. Raw JSON
// members have neither: see the package documentation.

// Secret is a stored key. Like dps.Key it never prints or logs its value,
// but its encoding belongs to the documents, whatever dps.Key does.
type Secret string

// String redacts the secret.
func (Secret) String() string { return "REDACTED" }

// GoString redacts the secret in %#v.
func (Secret) GoString() string { return `docs.Secret("REDACTED")` }

// LogValue redacts the secret in structured logs.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Settings are the members individual enrollments and groups share,
// inlined in their documents.
type Settings struct {
	Attestation        Attestation                `json:"attestation"`
	IoTEdge            bool                       `json:"iotEdge,omitempty"`
	IoTHubHostName     string                     `json:"iotHubHostName,omitempty"`
	IoTHubs            []string                   `json:"iotHubs,omitzero"`
	InitialTwin        json.RawMessage            `json:"initialTwin"`
	ProvisioningStatus string                     `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy  *ReprovisionPolicy         `json:"reprovisionPolicy,omitempty"`
	AllocationPolicy   string                     `json:"allocationPolicy,omitempty"`
	CustomAllocation   *CustomAllocation          `json:"customAllocation,omitempty"`
	Extra              map[string]json.RawMessage `json:"extra,omitzero"`
	ETag               string                     `json:"etag,omitempty"`
	Created            time.Time                  `json:"created,omitzero"`
	Updated            time.Time                  `json:"updated,omitzero"`

	// The issuing CA and credential policy of certificate issuance.
	CertificateAuthorityName string `json:"certificateAuthorityName,omitempty"`
	CertificatePolicyName    string `json:"certificatePolicyName,omitempty"`
}

// Attestation is an enrollment's attestation mechanism.
type Attestation struct {
	Type         string           `json:"type,omitempty"`
	SymmetricKey *SymmetricKey    `json:"symmetricKey,omitempty"`
	X509         *X509Attestation `json:"x509,omitempty"`
	TPM          *TPMAttestation  `json:"tpm,omitempty"`
}

// SymmetricKey holds an enrollment's two keys.
type SymmetricKey struct {
	PrimaryKey   Secret `json:"primaryKey,omitempty"`
	SecondaryKey Secret `json:"secondaryKey,omitempty"`
}

// X509Attestation holds an enrollment's certificates or CA references.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// X509Certificates is a primary and a secondary certificate, as uploaded.
type X509Certificates struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// X509CAReferences names CA certificates held by the instance.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// TPMAttestation holds a TPM's public keys.
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey,omitempty"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// ReprovisionPolicy is an enrollment's explicit reprovision policy; both
// members are always written (false is a choice, not an absence).
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// CustomAllocation points at a custom allocation webhook.
type CustomAllocation struct {
	WebhookURL    string `json:"webhookUrl,omitempty"`
	APIVersion    string `json:"apiVersion,omitempty"`
	SigningSecret Secret `json:"signingSecret,omitempty"`
}

// Enrollment is the document of an individual enrollment.
type Enrollment struct {
	V                         int             `json:"v"`
	RegistrationID            string          `json:"registrationId"`
	DeviceID                  string          `json:"deviceId,omitempty"`
	OptionalDeviceInformation json.RawMessage `json:"optionalDeviceInformation"`
	Settings
}

// Group is the document of an enrollment group.
type Group struct {
	V  int    `json:"v"`
	ID string `json:"id"`
	Settings
}

// CertificateInfo describes an X.509 certificate a device presented.
type CertificateInfo struct {
	SubjectName      string    `json:"subjectName,omitempty"`
	SHA1Thumbprint   string    `json:"sha1Thumbprint,omitempty"`
	SHA256Thumbprint string    `json:"sha256Thumbprint,omitempty"`
	IssuerName       string    `json:"issuerName,omitempty"`
	NotBefore        time.Time `json:"notBefore,omitzero"`
	NotAfter         time.Time `json:"notAfter,omitzero"`
	SerialNumber     string    `json:"serialNumber,omitempty"`
	Version          int       `json:"version,omitempty"`
}

// X509Proof is what an X.509 device proved.
type X509Proof struct {
	Certificate CertificateInfo  `json:"certificate"`
	Signing     *CertificateInfo `json:"signing,omitempty"`
}

// Registration is the document of a registration record; an operation's
// result is one too, inlined in the operation's document (without "v").
type Registration struct {
	V                    int             `json:"v,omitempty"`
	RegistrationID       string          `json:"registrationId"`
	DeviceID             string          `json:"deviceId,omitempty"`
	AssignedHub          string          `json:"assignedHub,omitempty"`
	InitialHub           string          `json:"initialHub,omitempty"`
	Status               string          `json:"status,omitempty"`
	Substatus            string          `json:"substatus,omitempty"`
	ErrorCode            int             `json:"errorCode,omitempty"`
	ErrorMessage         string          `json:"errorMessage,omitempty"`
	Payload              json.RawMessage `json:"payload"`
	EnrollmentGroupID    string          `json:"enrollmentGroupId,omitempty"`
	Attestation          string          `json:"attestation,omitempty"`
	X509                 *X509Proof      `json:"x509,omitempty"`
	TPMAuthenticationKey string          `json:"tpmAuthenticationKey,omitempty"`
	TPMKey               Secret          `json:"tpmKey,omitempty"`            // not written by the engine
	TPMStorageRootKey    string          `json:"tpmStorageRootKey,omitempty"` // not written by the engine
	Created              time.Time       `json:"created,omitzero"`
	Updated              time.Time       `json:"updated,omitzero"`
	ETag                 string          `json:"etag,omitempty"`
}

// Operation is the document of a registration operation.
type Operation struct {
	V                 int        `json:"v"`
	ID                string     `json:"id"`
	RegistrationID    string     `json:"registrationId"`
	EnrollmentGroupID string     `json:"enrollmentGroupId,omitempty"`
	Attestation       string     `json:"attestation,omitempty"`
	X509              *X509Proof `json:"x509,omitempty"`
	TPMKey            Secret     `json:"tpmKey,omitempty"`
	TPMStorageRootKey string     `json:"tpmStorageRootKey,omitempty"`
	// TPMAuthenticationKey is not written by the engine (the result has it).
	TPMAuthenticationKey string          `json:"tpmAuthenticationKey,omitempty"`
	Status               string          `json:"status,omitempty"`
	Payload              json.RawMessage `json:"payload"`
	Result               *Registration   `json:"result,omitempty"`
	Created              time.Time       `json:"created,omitzero"`
	Updated              time.Time       `json:"updated,omitzero"`

	// CSR is the device's certificate signing request (DER, base64 in
	// JSON) until the operation is final; IssuedChain the certificate
	// chain issued for it.
	CSR         []byte   `json:"csr,omitempty"`
	IssuedChain [][]byte `json:"issuedCertificateChain,omitzero"`
}

// HubDevice is the document of a device identity a hub connector created.
//
// AuthType is the device's hub authentication type (dps.HubAuthType).
// Documents written before it existed have AuthKind instead, the
// attestation type of the registration that created the identity, and
// X509CASigned; Domain reads either. X509Thumbprint is the primary one.
type HubDevice struct {
	V                       int             `json:"v"`
	Hub                     string          `json:"hub"`
	DeviceID                string          `json:"deviceId"`
	AuthType                string          `json:"authType,omitempty"`
	AuthKind                string          `json:"authKind,omitempty"` // read only
	PrimaryKey              Secret          `json:"primaryKey,omitempty"`
	SecondaryKey            Secret          `json:"secondaryKey,omitempty"`
	X509Thumbprint          string          `json:"x509Thumbprint,omitempty"`
	X509SecondaryThumbprint string          `json:"x509SecondaryThumbprint,omitempty"`
	X509CASigned            bool            `json:"x509CaSigned,omitempty"` // read only
	IoTEdge                 bool            `json:"iotEdge,omitempty"`
	Twin                    json.RawMessage `json:"twin"`
	Status                  string          `json:"status,omitempty"` // "" reads as enabled
	StatusReason            string          `json:"statusReason,omitempty"`
	GenerationID            string          `json:"generationId,omitempty"`
	ETag                    string          `json:"etag,omitempty"`
	LiveTwin                json.RawMessage `json:"liveTwin,omitempty"` // a built-in hub's twin (internal/twin's stored form)
	Updated                 time.Time       `json:"updated,omitzero"`
}

// CACertificate is the document of a CA certificate held by the instance.
type CACertificate struct {
	V                int       `json:"v"`
	Name             string    `json:"name"`
	Certificate      string    `json:"certificate,omitempty"`
	Verified         bool      `json:"verified,omitempty"`
	VerificationCode string    `json:"verificationCode,omitempty"`
	ETag             string    `json:"etag,omitempty"`
	Created          time.Time `json:"created,omitzero"`
	Updated          time.Time `json:"updated,omitzero"`
}

// Challenge is the document of a pending TPM challenge. PostgreSQL's
// ConsumeChallenge matches on its "key" member.
type Challenge struct {
	V              int       `json:"v"`
	RegistrationID string    `json:"registrationId"`
	Key            Secret    `json:"key,omitempty"`
	StorageRootKey string    `json:"storageRootKey,omitempty"`
	Created        time.Time `json:"created,omitzero"`
	Expires        time.Time `json:"expires,omitzero"`
}

// Message is the document of a device-to-cloud message in a hub's event
// log. Body is base64 ([]byte in encoding/json): a nil body is stored as
// null and an empty one as "", and each reads back as it was. Nil
// property maps are absent and empty ones {}, read back the same way.
type Message struct {
	V               int               `json:"v"`
	Hub             string            `json:"hub"`
	DeviceID        string            `json:"deviceId"`
	ModuleID        string            `json:"moduleId,omitempty"`
	Seq             int64             `json:"seq"`
	Enqueued        time.Time         `json:"enqueued,omitzero"`
	MessageID       string            `json:"messageId,omitempty"`
	CorrelationID   string            `json:"correlationId,omitempty"`
	UserID          string            `json:"userId,omitempty"`
	ContentType     string            `json:"contentType,omitempty"`
	ContentEncoding string            `json:"contentEncoding,omitempty"`
	Properties      map[string]string `json:"properties,omitzero"`
	System          map[string]string `json:"system,omitzero"`
	Body            []byte            `json:"body"`
}

// raw is a raw JSON member as read: null when the document has none,
// exactly as when it holds null (the stores never write one without it).
func raw(b json.RawMessage) json.RawMessage {
	if b == nil {
		return json.RawMessage("null")
	}
	return b
}

// Conversions. Each From sets every member of the document from the
// domain value and each Domain every field of the domain value back: the
// tests check that a value with every field set survives the round trip.

func fromSettings(s dps.Settings) Settings {
	d := Settings{
		Attestation:        fromAttestation(s.Attestation),
		IoTEdge:            s.IoTEdge,
		IoTHubHostName:     s.IoTHubHostName,
		IoTHubs:            s.IoTHubs,
		InitialTwin:        s.InitialTwin,
		ProvisioningStatus: string(s.ProvisioningStatus),
		AllocationPolicy:   string(s.AllocationPolicy),
		Extra:              s.Extra,
		ETag:               s.ETag,
		Created:            s.Created,
		Updated:            s.Updated,
	}
	d.CertificateAuthorityName, d.CertificatePolicyName = s.CertificateAuthorityName, s.CertificatePolicyName
	if p := s.ReprovisionPolicy; p != nil {
		d.ReprovisionPolicy = &ReprovisionPolicy{UpdateHubAssignment: p.UpdateHubAssignment, MigrateDeviceData: p.MigrateDeviceData}
	}
	if c := s.CustomAllocation; c != nil {
		d.CustomAllocation = &CustomAllocation{WebhookURL: c.WebhookURL, APIVersion: c.APIVersion, SigningSecret: Secret(c.SigningSecret)}
	}
	return d
}

func (d Settings) domain() dps.Settings {
	s := dps.Settings{
		Attestation:        d.Attestation.domain(),
		IoTEdge:            d.IoTEdge,
		IoTHubHostName:     d.IoTHubHostName,
		IoTHubs:            d.IoTHubs,
		InitialTwin:        raw(d.InitialTwin),
		ProvisioningStatus: dps.ProvisioningStatus(d.ProvisioningStatus),
		AllocationPolicy:   dps.AllocationPolicy(d.AllocationPolicy),
		Extra:              d.Extra,
		ETag:               d.ETag,
		Created:            d.Created,
		Updated:            d.Updated,
	}
	s.CertificateAuthorityName, s.CertificatePolicyName = d.CertificateAuthorityName, d.CertificatePolicyName
	if p := d.ReprovisionPolicy; p != nil {
		s.ReprovisionPolicy = &dps.ReprovisionPolicy{UpdateHubAssignment: p.UpdateHubAssignment, MigrateDeviceData: p.MigrateDeviceData}
	}
	if c := d.CustomAllocation; c != nil {
		s.CustomAllocation = &dps.CustomAllocation{WebhookURL: c.WebhookURL, APIVersion: c.APIVersion, SigningSecret: dps.Key(c.SigningSecret)}
	}
	liftIssuance(&s)
	return s
}

// issuanceExtras are the members of certificate issuance that releases
// before it kept, uninterpreted, in Extra: a credential policy named
// either way, and the issuing CA.
var issuanceExtras = [...]string{"certificateAuthorityName", "certificatePolicyName", "credentialPolicyName"}

// liftIssuance moves the certificate issuance members a document written
// before they were modelled holds in Extra into their fields (unless the
// fields are set), so such an enrollment keeps naming its policy. Extra is
// copied, not changed: it may be shared.
func liftIssuance(s *dps.Settings) {
	var out map[string]json.RawMessage
	for _, k := range issuanceExtras {
		raw, ok := s.Extra[k]
		var v string
		if !ok || json.Unmarshal(raw, &v) != nil {
			continue
		}
		if out == nil {
			out = maps.Clone(s.Extra)
		}
		delete(out, k)
		switch {
		case k == "certificateAuthorityName" && s.CertificateAuthorityName == "":
			s.CertificateAuthorityName = v
		case k != "certificateAuthorityName" && s.CertificatePolicyName == "":
			s.CertificatePolicyName = v
		}
	}
	if out != nil {
		if len(out) == 0 {
			out = nil
		}
		s.Extra = out
	}
}

func fromAttestation(a dps.Attestation) Attestation {
	d := Attestation{Type: string(a.Type)}
	if k := a.SymmetricKey; k != nil {
		d.SymmetricKey = &SymmetricKey{PrimaryKey: Secret(k.PrimaryKey), SecondaryKey: Secret(k.SecondaryKey)}
	}
	if x := a.X509; x != nil {
		d.X509 = &X509Attestation{}
		if c := x.ClientCertificates; c != nil {
			d.X509.ClientCertificates = &X509Certificates{Primary: c.Primary, Secondary: c.Secondary}
		}
		if c := x.SigningCertificates; c != nil {
			d.X509.SigningCertificates = &X509Certificates{Primary: c.Primary, Secondary: c.Secondary}
		}
		if r := x.CAReferences; r != nil {
			d.X509.CAReferences = &X509CAReferences{Primary: r.Primary, Secondary: r.Secondary}
		}
	}
	if t := a.TPM; t != nil {
		d.TPM = &TPMAttestation{EndorsementKey: t.EndorsementKey, StorageRootKey: t.StorageRootKey}
	}
	return d
}

func (d Attestation) domain() dps.Attestation {
	a := dps.Attestation{Type: dps.AttestationType(d.Type)}
	if k := d.SymmetricKey; k != nil {
		a.SymmetricKey = &dps.SymmetricKeyAttestation{PrimaryKey: dps.Key(k.PrimaryKey), SecondaryKey: dps.Key(k.SecondaryKey)}
	}
	if x := d.X509; x != nil {
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
	if t := d.TPM; t != nil {
		a.TPM = &dps.TPMAttestation{EndorsementKey: t.EndorsementKey, StorageRootKey: t.StorageRootKey}
	}
	return a
}

// FromEnrollment is the document of an individual enrollment.
func FromEnrollment(e dps.Enrollment) Enrollment {
	return Enrollment{V: Version, RegistrationID: e.RegistrationID, DeviceID: e.DeviceID, OptionalDeviceInformation: e.OptionalDeviceInformation, Settings: fromSettings(e.Settings)}
}

// Domain is the enrollment a document holds.
func (d Enrollment) Domain() dps.Enrollment {
	return dps.Enrollment{RegistrationID: d.RegistrationID, DeviceID: d.DeviceID, OptionalDeviceInformation: raw(d.OptionalDeviceInformation), Settings: d.Settings.domain()}
}

// FromGroup is the document of an enrollment group.
func FromGroup(g dps.Group) Group {
	return Group{V: Version, ID: g.ID, Settings: fromSettings(g.Settings)}
}

// Domain is the group a document holds.
func (d Group) Domain() dps.Group { return dps.Group{ID: d.ID, Settings: d.Settings.domain()} }

func fromCertificateInfo(c dps.CertificateInfo) CertificateInfo {
	return CertificateInfo{SubjectName: c.SubjectName, SHA1Thumbprint: c.SHA1Thumbprint, SHA256Thumbprint: c.SHA256Thumbprint, IssuerName: c.IssuerName,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter, SerialNumber: c.SerialNumber, Version: c.Version}
}

func (d CertificateInfo) domain() dps.CertificateInfo {
	return dps.CertificateInfo{SubjectName: d.SubjectName, SHA1Thumbprint: d.SHA1Thumbprint, SHA256Thumbprint: d.SHA256Thumbprint, IssuerName: d.IssuerName,
		NotBefore: d.NotBefore, NotAfter: d.NotAfter, SerialNumber: d.SerialNumber, Version: d.Version}
}

func fromX509Proof(p *dps.X509Proof) *X509Proof {
	if p == nil {
		return nil
	}
	d := &X509Proof{Certificate: fromCertificateInfo(p.Certificate)}
	if p.Signing != nil {
		s := fromCertificateInfo(*p.Signing)
		d.Signing = &s
	}
	return d
}

func (d *X509Proof) domain() *dps.X509Proof {
	if d == nil {
		return nil
	}
	p := &dps.X509Proof{Certificate: d.Certificate.domain()}
	if d.Signing != nil {
		s := d.Signing.domain()
		p.Signing = &s
	}
	return p
}

// FromRegistration is the document of a registration record.
func FromRegistration(r dps.Registration) Registration {
	d := fromResult(r)
	d.V = Version
	return d
}

// fromResult is a registration as an operation's result holds it.
func fromResult(r dps.Registration) Registration {
	return Registration{
		RegistrationID: r.RegistrationID, DeviceID: r.DeviceID, AssignedHub: r.AssignedHub, InitialHub: r.InitialHub,
		Status: string(r.Status), Substatus: string(r.Substatus), ErrorCode: r.ErrorCode, ErrorMessage: r.ErrorMessage,
		Payload: r.Payload, EnrollmentGroupID: r.EnrollmentGroupID, Attestation: string(r.Proof.Type), X509: fromX509Proof(r.Proof.X509),
		TPMAuthenticationKey: tpmOf(r.Proof).AuthenticationKey, TPMKey: Secret(tpmOf(r.Proof).Key), TPMStorageRootKey: tpmOf(r.Proof).StorageRootKey, Created: r.Created, Updated: r.Updated, ETag: r.ETag,
	}
}

// tpmOf is a proof's TPM member, zero if none.
func tpmOf(p dps.Proof) dps.TPMProof {
	if p.TPM != nil {
		return *p.TPM
	}
	return dps.TPMProof{}
}

// proof is the proof the members of a document hold: a TPM member only
// when one of them is set.
func proof(attestation string, x *dps.X509Proof, t dps.TPMProof) dps.Proof {
	p := dps.Proof{Type: dps.AttestationType(attestation), X509: x}
	if t != (dps.TPMProof{}) {
		p.TPM = &t
	}
	return p
}

// Domain is the registration record a document holds.
func (d Registration) Domain() dps.Registration {
	return dps.Registration{
		RegistrationID: d.RegistrationID, DeviceID: d.DeviceID, AssignedHub: d.AssignedHub, InitialHub: d.InitialHub,
		Status: dps.Status(d.Status), Substatus: dps.Substatus(d.Substatus), ErrorCode: d.ErrorCode, ErrorMessage: d.ErrorMessage,
		Payload: raw(d.Payload), EnrollmentGroupID: d.EnrollmentGroupID, Proof: proof(d.Attestation, d.X509.domain(), dps.TPMProof{Key: dps.Key(d.TPMKey), StorageRootKey: d.TPMStorageRootKey, AuthenticationKey: d.TPMAuthenticationKey}),
		Created: d.Created, Updated: d.Updated, ETag: d.ETag,
	}
}

// FromOperation is the document of a registration operation.
func FromOperation(op dps.Operation) Operation {
	d := Operation{
		V: Version, ID: op.ID, RegistrationID: op.RegistrationID, EnrollmentGroupID: op.EnrollmentGroupID, Attestation: string(op.Proof.Type),
		X509: fromX509Proof(op.Proof.X509), TPMKey: Secret(tpmOf(op.Proof).Key), TPMStorageRootKey: tpmOf(op.Proof).StorageRootKey,
		TPMAuthenticationKey: tpmOf(op.Proof).AuthenticationKey, Status: string(op.Status),
		Payload: op.Payload, Created: op.Created, Updated: op.Updated,
	}
	d.CSR, d.IssuedChain = op.CSR, op.IssuedChain
	if op.Result != nil {
		r := fromResult(*op.Result)
		d.Result = &r
	}
	return d
}

// Domain is the operation a document holds.
func (d Operation) Domain() dps.Operation {
	op := dps.Operation{
		ID: d.ID, RegistrationID: d.RegistrationID, EnrollmentGroupID: d.EnrollmentGroupID,
		Proof:   proof(d.Attestation, d.X509.domain(), dps.TPMProof{Key: dps.Key(d.TPMKey), StorageRootKey: d.TPMStorageRootKey, AuthenticationKey: d.TPMAuthenticationKey}),
		Status:  dps.Status(d.Status),
		Payload: raw(d.Payload), Created: d.Created, Updated: d.Updated,
	}
	op.CSR, op.IssuedChain = d.CSR, d.IssuedChain
	if d.Result != nil {
		r := d.Result.Domain()
		op.Result = &r
	}
	return op
}

// FromHubDevice is the document of a hub device identity.
func FromHubDevice(h dps.HubDevice) HubDevice {
	a := h.Auth
	return HubDevice{
		V: Version, Hub: h.Hub, DeviceID: h.DeviceID, AuthType: string(a.Type), PrimaryKey: Secret(a.PrimaryKey), SecondaryKey: Secret(a.SecondaryKey),
		X509Thumbprint: a.PrimaryThumbprint, X509SecondaryThumbprint: a.SecondaryThumbprint, IoTEdge: h.IoTEdge, Twin: h.Twin, Updated: h.Updated,
		Status: string(h.Status), StatusReason: h.StatusReason, GenerationID: h.GenerationID, ETag: h.ETag, LiveTwin: h.LiveTwin,
	}
}

// Domain is the hub device identity a document holds.
func (d HubDevice) Domain() dps.HubDevice {
	return dps.HubDevice{
		Hub: d.Hub, DeviceID: d.DeviceID, IoTEdge: d.IoTEdge, Twin: raw(d.Twin), Updated: d.Updated,
		Status: dps.DeviceStatus(d.Status), StatusReason: d.StatusReason, GenerationID: d.GenerationID, ETag: d.ETag, LiveTwin: d.LiveTwin,
		Auth: dps.HubAuth{
			Type: d.authType(), PrimaryKey: dps.Key(d.PrimaryKey), SecondaryKey: dps.Key(d.SecondaryKey),
			PrimaryThumbprint: d.X509Thumbprint, SecondaryThumbprint: d.X509SecondaryThumbprint,
		},
	}
}

// authType is the document's hub authentication type, worked out from the
// attestation type for a document written before AuthType existed.
func (d HubDevice) authType() dps.HubAuthType {
	switch {
	case d.AuthType != "":
		return dps.HubAuthType(d.AuthType)
	case d.AuthKind == "":
		return ""
	case d.X509CASigned:
		return dps.HubAuthCA
	case d.AuthKind == string(dps.AttestationX509):
		return dps.HubAuthSelfSigned
	}
	return dps.HubAuthSAS // symmetricKey and tpm devices: keys
}

// FromCACertificate is the document of a CA certificate.
func FromCACertificate(c dps.CACertificate) CACertificate {
	return CACertificate{V: Version, Name: c.Name, Certificate: c.Certificate, Verified: c.Verified, VerificationCode: c.VerificationCode, ETag: c.ETag, Created: c.Created, Updated: c.Updated}
}

// Domain is the CA certificate a document holds.
func (d CACertificate) Domain() dps.CACertificate {
	return dps.CACertificate{Name: d.Name, Certificate: d.Certificate, Verified: d.Verified, VerificationCode: d.VerificationCode, ETag: d.ETag, Created: d.Created, Updated: d.Updated}
}

// FromChallenge is the document of a TPM challenge.
func FromChallenge(c dps.Challenge) Challenge {
	return Challenge{V: Version, RegistrationID: c.RegistrationID, Key: Secret(c.Key), StorageRootKey: c.StorageRootKey, Created: c.Created, Expires: c.Expires}
}

// Domain is the TPM challenge a document holds.
func (d Challenge) Domain() dps.Challenge {
	return dps.Challenge{RegistrationID: d.RegistrationID, Key: dps.Key(d.Key), StorageRootKey: d.StorageRootKey, Created: d.Created, Expires: d.Expires}
}

// FromMessage is the document of a hub event log message.
func FromMessage(m dps.Message) Message {
	return Message{
		V: Version, Hub: m.Hub, DeviceID: m.DeviceID, ModuleID: m.ModuleID, Seq: m.Seq, Enqueued: m.Enqueued,
		MessageID: m.MessageID, CorrelationID: m.CorrelationID, UserID: m.UserID, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
		Properties: m.Properties, System: m.System, Body: m.Body,
	}
}

// Domain is the hub event log message a document holds.
func (d Message) Domain() dps.Message {
	return dps.Message{
		Hub: d.Hub, DeviceID: d.DeviceID, ModuleID: d.ModuleID, Seq: d.Seq, Enqueued: d.Enqueued,
		MessageID: d.MessageID, CorrelationID: d.CorrelationID, UserID: d.UserID, ContentType: d.ContentType, ContentEncoding: d.ContentEncoding,
		Properties: d.Properties, System: d.System, Body: d.Body,
	}
}

// Encoding and decoding, what the stores call.

// EncodeEnrollment encodes an individual enrollment's document.
func EncodeEnrollment(e dps.Enrollment) ([]byte, error) { return marshal(FromEnrollment(e)) }

// DecodeEnrollment decodes an individual enrollment's document of any known format.
func DecodeEnrollment(b []byte) (dps.Enrollment, error) {
	var d Enrollment
	var old legacyEnrollment
	legacy, err := decode(b, &d, &d.V, &old)
	switch {
	case err != nil:
		return dps.Enrollment{}, fmt.Errorf("enrollment document: %w", err)
	case legacy:
		return old.domain(), nil
	}
	return d.Domain(), nil
}

// EncodeGroup encodes an enrollment group's document.
func EncodeGroup(g dps.Group) ([]byte, error) { return marshal(FromGroup(g)) }

// DecodeGroup decodes an enrollment group's document of any known format.
func DecodeGroup(b []byte) (dps.Group, error) {
	var d Group
	var old legacyGroup
	legacy, err := decode(b, &d, &d.V, &old)
	switch {
	case err != nil:
		return dps.Group{}, fmt.Errorf("enrollment group document: %w", err)
	case legacy:
		return old.domain(), nil
	}
	return d.Domain(), nil
}

// EncodeRegistration encodes a registration record's document.
func EncodeRegistration(r dps.Registration) ([]byte, error) { return marshal(FromRegistration(r)) }

// DecodeRegistration decodes a registration record's document of any known format.
func DecodeRegistration(b []byte) (dps.Registration, error) {
	var d Registration
	var old legacyRegistration
	legacy, err := decode(b, &d, &d.V, &old)
	switch {
	case err != nil:
		return dps.Registration{}, fmt.Errorf("registration document: %w", err)
	case legacy:
		return old.domain(), nil
	}
	return d.Domain(), nil
}

// EncodeOperation encodes a registration operation's document.
func EncodeOperation(op dps.Operation) ([]byte, error) { return marshal(FromOperation(op)) }

// DecodeOperation decodes a registration operation's document of any known format.
func DecodeOperation(b []byte) (dps.Operation, error) {
	var d Operation
	var old legacyOperation
	legacy, err := decode(b, &d, &d.V, &old)
	switch {
	case err != nil:
		return dps.Operation{}, fmt.Errorf("operation document: %w", err)
	case legacy:
		return old.domain(), nil
	}
	return d.Domain(), nil
}

// EncodeHubDevice encodes a hub device identity's document.
func EncodeHubDevice(h dps.HubDevice) ([]byte, error) { return marshal(FromHubDevice(h)) }

// DecodeHubDevice decodes a hub device identity's document of any known format.
func DecodeHubDevice(b []byte) (dps.HubDevice, error) {
	var d HubDevice
	var old legacyHubDevice
	legacy, err := decode(b, &d, &d.V, &old)
	switch {
	case err != nil:
		return dps.HubDevice{}, fmt.Errorf("hub device document: %w", err)
	case legacy:
		return old.domain(), nil
	}
	return d.Domain(), nil
}

// EncodeCACertificate encodes a CA certificate's document.
func EncodeCACertificate(c dps.CACertificate) ([]byte, error) { return marshal(FromCACertificate(c)) }

// DecodeCACertificate decodes a CA certificate's document of any known format.
func DecodeCACertificate(b []byte) (dps.CACertificate, error) {
	var d CACertificate
	var old legacyCACertificate
	legacy, err := decode(b, &d, &d.V, &old)
	switch {
	case err != nil:
		return dps.CACertificate{}, fmt.Errorf("CA certificate document: %w", err)
	case legacy:
		return old.domain(), nil
	}
	return d.Domain(), nil
}

// EncodeChallenge encodes a TPM challenge's document.
func EncodeChallenge(c dps.Challenge) ([]byte, error) { return marshal(FromChallenge(c)) }

// DecodeChallenge decodes a TPM challenge's document of any known format.
func DecodeChallenge(b []byte) (dps.Challenge, error) {
	var d Challenge
	var old legacyChallenge
	legacy, err := decode(b, &d, &d.V, &old)
	switch {
	case err != nil:
		return dps.Challenge{}, fmt.Errorf("TPM challenge document: %w", err)
	case legacy:
		return old.domain(), nil
	}
	return d.Domain(), nil
}

// EncodeMessage encodes a hub event log message's document.
// (message.go: by hand, the bytes marshal(FromMessage(m)) would be).
func EncodeMessage(m dps.Message) ([]byte, error) { return appendMessage(nil, m) }

// DecodeMessage decodes a hub event log message's document. Messages have
// no previous format: a document without a version is refused.
func DecodeMessage(b []byte) (dps.Message, error) {
	var d Message
	if err := decodeCurrent(b, &d, &d.V); err != nil {
		return dps.Message{}, fmt.Errorf("hub message document: %w", err)
	}
	return d.Domain(), nil
}
