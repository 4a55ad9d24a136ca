package wire

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/opendps/dps"
)

// extraFields are newer service API members dps stores and echoes without
// interpreting them.
// (certificateAuthorityName, certificatePolicyName and credentialPolicyName
// are certificate issuance's, modelled: IssuanceNames.)
var extraFields = []string{"certificatePolicyResourceId", "namespaceName", "deviceTypeRefs"}

// IssuanceNames are certificate issuance's members of an enrollment or a
// group: the issuing CA and the credential policy, as the 2026-11-01
// service API names them, and the policy as 2026-04-01 names it
// (credentialPolicyName). Answers carry all three (each version's clients
// read their own); a request may send either name of the policy, or both
// when they agree.
type IssuanceNames struct {
	CertificateAuthorityName string `json:"certificateAuthorityName,omitempty"`
	CertificatePolicyName    string `json:"certificatePolicyName,omitempty"`
	CredentialPolicyName     string `json:"credentialPolicyName,omitempty"`
}

// policy returns the policy the names name.
func (n IssuanceNames) policy() (string, error) {
	p, c := n.CertificatePolicyName, n.CredentialPolicyName
	if p != "" && c != "" && !strings.EqualFold(p, c) {
		return "", invalid("certificatePolicyName %q and credentialPolicyName %q name different credential policies", p, c)
	}
	if p == "" {
		p = c
	}
	return p, nil
}

func issuanceNames(s dps.Settings) IssuanceNames {
	return IssuanceNames{CertificateAuthorityName: s.CertificateAuthorityName, CertificatePolicyName: s.CertificatePolicyName, CredentialPolicyName: s.CertificatePolicyName}
}

// IndividualEnrollment is the service API shape of an individual enrollment.
type IndividualEnrollment struct {
	RegistrationID             string                      `json:"registrationId"`
	DeviceID                   string                      `json:"deviceId,omitempty"`
	RegistrationState          *DeviceRegistrationState    `json:"registrationState,omitempty"`
	OptionalDeviceInformation  json.RawMessage             `json:"optionalDeviceInformation,omitempty"`
	Attestation                *AttestationMechanism       `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                json.RawMessage             `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUtc         string                      `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc     string                      `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
	IssuanceNames
	Extra map[string]json.RawMessage `json:"-"`
}

// EnrollmentGroup is the service API shape of an enrollment group.
type EnrollmentGroup struct {
	EnrollmentGroupID          string                      `json:"enrollmentGroupId"`
	Attestation                *AttestationMechanism       `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                json.RawMessage             `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUtc         string                      `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc     string                      `json:"lastUpdatedDateTimeUtc,omitempty"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
	IssuanceNames
	Extra map[string]json.RawMessage `json:"-"`
}

// MarshalJSON adds the stored extra members.
func (e IndividualEnrollment) MarshalJSON() ([]byte, error) {
	type plain IndividualEnrollment
	return withExtra(plain(e), e.Extra)
}

// UnmarshalJSON keeps the extra members.
func (e *IndividualEnrollment) UnmarshalJSON(b []byte) error {
	type plain IndividualEnrollment
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*e = IndividualEnrollment(p)
	e.Extra = extras(b)
	return nil
}

// MarshalJSON adds the stored extra members.
func (g EnrollmentGroup) MarshalJSON() ([]byte, error) {
	type plain EnrollmentGroup
	return withExtra(plain(g), g.Extra)
}

// UnmarshalJSON keeps the extra members.
func (g *EnrollmentGroup) UnmarshalJSON(b []byte) error {
	type plain EnrollmentGroup
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*g = EnrollmentGroup(p)
	g.Extra = extras(b)
	return nil
}

func withExtra(v any, extra map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	var buf strings.Builder
	buf.Write(b[:len(b)-1])
	for _, k := range extraFields {
		if raw, ok := extra[k]; ok {
			kb, _ := json.Marshal(k)
			buf.WriteByte(',')
			buf.Write(kb)
			buf.WriteByte(':')
			buf.Write(raw)
		}
	}
	buf.WriteByte('}')
	return []byte(buf.String()), nil
}

func extras(b []byte) map[string]json.RawMessage {
	var all map[string]json.RawMessage
	if json.Unmarshal(b, &all) != nil {
		return nil
	}
	var out map[string]json.RawMessage
	for _, k := range extraFields {
		if v, ok := all[k]; ok && string(v) != "null" {
			if out == nil {
				out = map[string]json.RawMessage{}
			}
			out[k] = v
		}
	}
	return out
}

// AttestationMechanism is an enrollment's attestation.
type AttestationMechanism struct {
	Type         string                   `json:"type"`
	TPM          *TPMAttestation          `json:"tpm,omitempty"`
	X509         *X509Attestation         `json:"x509,omitempty"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty"`
}

// SymmetricKeyAttestation holds keys; they are omitted outside create
// responses and attestationmechanism.
type SymmetricKeyAttestation struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// X509Attestation is the x509 member of an attestation.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// X509Certificates is a primary and secondary certificate.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CertificateWithInfo is a certificate and what the service read from it.
type X509CertificateWithInfo struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *X509CertificateInfo `json:"info,omitempty"`
}

// X509CertificateInfo describes a certificate.
type X509CertificateInfo struct {
	SubjectName      string `json:"subjectName"`
	SHA1Thumbprint   string `json:"sha1Thumbprint"`
	SHA256Thumbprint string `json:"sha256Thumbprint"`
	IssuerName       string `json:"issuerName"`
	NotBeforeUtc     string `json:"notBeforeUtc"`
	NotAfterUtc      string `json:"notAfterUtc"`
	SerialNumber     string `json:"serialNumber"`
	Version          int    `json:"version"`
}

// X509CAReferences names CA certificates held by the instance.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// DeviceCapabilities are device capabilities.
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// ReprovisionPolicy is the reprovision policy; absent members default to true.
type ReprovisionPolicy struct {
	UpdateHubAssignment *bool `json:"updateHubAssignment,omitempty"`
	MigrateDeviceData   *bool `json:"migrateDeviceData,omitempty"`
}

// CustomAllocationDefinition points at a custom allocation webhook.
// SigningSecret is a dps extension: write-only, never returned.
type CustomAllocationDefinition struct {
	WebhookURL    string `json:"webhookUrl"`
	APIVersion    string `json:"apiVersion"`
	SigningSecret string `json:"signingSecret,omitempty"`
}

// DeviceRegistrationState is a registration record as the service API reports it.
type DeviceRegistrationState struct {
	RegistrationID         string          `json:"registrationId"`
	CreatedDateTimeUtc     string          `json:"createdDateTimeUtc,omitempty"`
	AssignedHub            string          `json:"assignedHub,omitempty"`
	DeviceID               string          `json:"deviceId,omitempty"`
	Status                 dps.Status      `json:"status"`
	Substatus              dps.Substatus   `json:"substatus,omitempty"`
	ErrorCode              int             `json:"errorCode,omitempty"`
	ErrorMessage           string          `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUtc string          `json:"lastUpdatedDateTimeUtc,omitempty"`
	ETag                   string          `json:"etag,omitempty"`
	Payload                json.RawMessage `json:"payload,omitempty"`
}

// BulkOperation is the body of a bulk enrollment request.
type BulkOperation struct {
	Mode             string                 `json:"mode"`
	Enrollments      []IndividualEnrollment `json:"enrollments,omitempty"`
	EnrollmentGroups []EnrollmentGroup      `json:"enrollmentGroups,omitempty"`
}

// BulkResult is the answer to a bulk request.
type BulkResult struct {
	IsSuccessful bool        `json:"isSuccessful"`
	Errors       []BulkError `json:"errors"`
}

// BulkError is one failed item of a bulk request.
type BulkError struct {
	RegistrationID    string `json:"registrationId,omitempty"`
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	ErrorCode         int    `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

// QuerySpecification is the body of a query request.
type QuerySpecification struct {
	Query string `json:"query"`
}

// FromRegistrationState converts a registration record to the service shape.
func FromRegistrationState(r dps.Registration) *DeviceRegistrationState {
	d := FromRegistration(r)
	out := &DeviceRegistrationState{
		RegistrationID: d.RegistrationID, CreatedDateTimeUtc: d.CreatedDateTimeUtc, Status: d.Status,
		ErrorCode: d.ErrorCode, ErrorMessage: d.ErrorMessage, LastUpdatedDateTimeUtc: d.LastUpdatedDateTimeUtc,
		ETag: r.ETag, AssignedHub: d.AssignedHub, DeviceID: d.DeviceID, Substatus: d.Substatus, Payload: d.Payload,
	}
	return out
}

func nullIsEmpty(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return b
}

func invalid(format string, args ...any) error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// toSettings converts the members enrollments and groups share. Validation
// beyond the JSON shape (keys, hubs, URLs) is the enrollment service's job.
func toSettings(att *AttestationMechanism, caps *DeviceCapabilities, hub string, twin json.RawMessage, status string,
	rp *ReprovisionPolicy, policy string, hubs []string, cad *CustomAllocationDefinition, names IssuanceNames, extra map[string]json.RawMessage, etag string) (dps.Settings, error) {
	s := dps.Settings{IoTHubHostName: hub, InitialTwin: nullIsEmpty(twin), IoTHubs: hubs, Extra: extra, ETag: etag, CertificateAuthorityName: names.CertificateAuthorityName}
	var err error
	if s.CertificatePolicyName, err = names.policy(); err != nil {
		return s, err
	}
	if att == nil {
		return s, invalid("attestation is required")
	}
	var a dps.Attestation
	switch strings.ToLower(att.Type) {
	case "symmetrickey":
		a.Type = dps.AttestationSymmetricKey
		a.SymmetricKey = &dps.SymmetricKeyAttestation{}
		if k := att.SymmetricKey; k != nil {
			a.SymmetricKey.PrimaryKey, a.SymmetricKey.SecondaryKey = dps.Key(k.PrimaryKey), dps.Key(k.SecondaryKey)
		}
	case "x509":
		a.Type = dps.AttestationX509
		if att.X509 == nil {
			return s, invalid("attestation.x509 is required for type x509")
		}
		x := &dps.X509Attestation{}
		certs := func(c *X509Certificates) *dps.X509Certificates {
			if c == nil {
				return nil
			}
			out := &dps.X509Certificates{}
			if c.Primary != nil {
				out.Primary = c.Primary.Certificate
			}
			if c.Secondary != nil {
				out.Secondary = c.Secondary.Certificate
			}
			return out
		}
		x.ClientCertificates = certs(att.X509.ClientCertificates)
		x.SigningCertificates = certs(att.X509.SigningCertificates)
		if r := att.X509.CAReferences; r != nil {
			x.CAReferences = &dps.X509CAReferences{Primary: r.Primary, Secondary: r.Secondary}
		}
		a.X509 = x
	case "tpm":
		a.Type = dps.AttestationTPM
		if att.TPM == nil {
			return s, invalid("attestation.tpm is required for type tpm")
		}
		a.TPM = &dps.TPMAttestation{EndorsementKey: att.TPM.EndorsementKey, StorageRootKey: att.TPM.StorageRootKey}
	case "none":
		return s, invalid("attestation type none is not supported; use symmetricKey, x509 or tpm")
	default:
		return s, invalid("attestation.type %q must be symmetricKey, x509 or tpm", att.Type)
	}
	s.Attestation = a
	if caps != nil {
		s.IoTEdge = caps.IoTEdge
	}
	switch strings.ToLower(status) {
	case "", "enabled":
		s.ProvisioningStatus = dps.ProvisioningEnabled
	case "disabled":
		s.ProvisioningStatus = dps.ProvisioningDisabled
	default:
		return s, invalid("provisioningStatus %q must be enabled or disabled", status)
	}
	if rp != nil {
		p := dps.DefaultReprovisionPolicy
		if rp.UpdateHubAssignment != nil {
			p.UpdateHubAssignment = *rp.UpdateHubAssignment
		}
		if rp.MigrateDeviceData != nil {
			p.MigrateDeviceData = *rp.MigrateDeviceData
		}
		s.ReprovisionPolicy = &p
	}
	if policy != "" {
		p, err := dps.ParseAllocationPolicy(policy)
		if err != nil {
			return s, err
		}
		s.AllocationPolicy = p
	}
	if cad != nil {
		s.CustomAllocation = &dps.CustomAllocation{WebhookURL: cad.WebhookURL, APIVersion: cad.APIVersion, SigningSecret: dps.Key(cad.SigningSecret)}
	}
	return s, nil
}

// ToEnrollment converts a service API individual enrollment to the domain.
func ToEnrollment(e IndividualEnrollment) (dps.Enrollment, error) {
	s, err := toSettings(e.Attestation, e.Capabilities, e.IoTHubHostName, e.InitialTwin, e.ProvisioningStatus, e.ReprovisionPolicy, e.AllocationPolicy, e.IoTHubs, e.CustomAllocationDefinition, e.IssuanceNames, e.Extra, e.ETag)
	return dps.Enrollment{RegistrationID: e.RegistrationID, DeviceID: e.DeviceID, OptionalDeviceInformation: nullIsEmpty(e.OptionalDeviceInformation), Settings: s}, err
}

// ToGroup converts a service API enrollment group to the domain.
func ToGroup(g EnrollmentGroup) (dps.Group, error) {
	s, err := toSettings(g.Attestation, g.Capabilities, g.IoTHubHostName, g.InitialTwin, g.ProvisioningStatus, g.ReprovisionPolicy, g.AllocationPolicy, g.IoTHubs, g.CustomAllocationDefinition, g.IssuanceNames, g.Extra, g.ETag)
	return dps.Group{ID: g.EnrollmentGroupID, Settings: s}, err
}

// FromAttestation converts an attestation; keys are included only when withKeys.
func FromAttestation(a dps.Attestation, withKeys bool) *AttestationMechanism {
	out := &AttestationMechanism{Type: string(a.Type)}
	switch {
	case a.SymmetricKey != nil:
		out.SymmetricKey = &SymmetricKeyAttestation{}
		if withKeys {
			out.SymmetricKey.PrimaryKey, out.SymmetricKey.SecondaryKey = string(a.SymmetricKey.PrimaryKey), string(a.SymmetricKey.SecondaryKey)
		}
	case a.X509 != nil:
		x := &X509Attestation{}
		certs := func(c *dps.X509Certificates) *X509Certificates {
			if c == nil {
				return nil
			}
			out := &X509Certificates{}
			if c.Primary != "" {
				out.Primary = certWithInfo(c.Primary)
			}
			if c.Secondary != "" {
				out.Secondary = certWithInfo(c.Secondary)
			}
			return out
		}
		x.ClientCertificates = certs(a.X509.ClientCertificates)
		x.SigningCertificates = certs(a.X509.SigningCertificates)
		if r := a.X509.CAReferences; r != nil {
			x.CAReferences = &X509CAReferences{Primary: r.Primary, Secondary: r.Secondary}
		}
		out.X509 = x
	case a.TPM != nil:
		out.TPM = &TPMAttestation{EndorsementKey: a.TPM.EndorsementKey, StorageRootKey: a.TPM.StorageRootKey}
	}
	return out
}

func certWithInfo(s string) *X509CertificateWithInfo {
	out := &X509CertificateWithInfo{Certificate: s}
	if c, err := dps.ParseCertificate(s); err == nil {
		out.Info = FromCertificateInfo(dps.InfoOf(c))
	}
	return out
}

func fromSettings(s dps.Settings, withKeys bool) (att *AttestationMechanism, caps *DeviceCapabilities, status string, rp *ReprovisionPolicy, cad *CustomAllocationDefinition) {
	att = FromAttestation(s.Attestation, withKeys)
	caps = &DeviceCapabilities{IoTEdge: s.IoTEdge}
	status = string(s.ProvisioningStatus)
	if status == "" {
		status = string(dps.ProvisioningEnabled)
	}
	p := s.Reprovision()
	rp = &ReprovisionPolicy{UpdateHubAssignment: &p.UpdateHubAssignment, MigrateDeviceData: &p.MigrateDeviceData}
	if s.CustomAllocation != nil {
		cad = &CustomAllocationDefinition{WebhookURL: s.CustomAllocation.WebhookURL, APIVersion: s.CustomAllocation.APIVersion}
	}
	return
}

// FromEnrollment converts an enrollment to the service shape.
func FromEnrollment(e dps.Enrollment, withKeys bool) IndividualEnrollment {
	att, caps, status, rp, cad := fromSettings(e.Settings, withKeys)
	return IndividualEnrollment{
		RegistrationID: e.RegistrationID, DeviceID: e.DeviceID, OptionalDeviceInformation: e.OptionalDeviceInformation,
		Attestation: att, Capabilities: caps, IoTHubHostName: e.IoTHubHostName, InitialTwin: e.InitialTwin, ETag: e.ETag,
		ProvisioningStatus: status, ReprovisionPolicy: rp, CreatedDateTimeUtc: Time(e.Created), LastUpdatedDateTimeUtc: Time(e.Updated),
		AllocationPolicy: string(e.AllocationPolicy), IoTHubs: e.IoTHubs, CustomAllocationDefinition: cad, IssuanceNames: issuanceNames(e.Settings), Extra: e.Extra,
	}
}

// FromGroup converts an enrollment group to the service shape.
func FromGroup(g dps.Group, withKeys bool) EnrollmentGroup {
	att, caps, status, rp, cad := fromSettings(g.Settings, withKeys)
	return EnrollmentGroup{
		EnrollmentGroupID: g.ID, Attestation: att, Capabilities: caps, IoTHubHostName: g.IoTHubHostName, InitialTwin: g.InitialTwin,
		ETag: g.ETag, ProvisioningStatus: status, ReprovisionPolicy: rp, CreatedDateTimeUtc: Time(g.Created),
		LastUpdatedDateTimeUtc: Time(g.Updated), AllocationPolicy: string(g.AllocationPolicy), IoTHubs: g.IoTHubs,
		CustomAllocationDefinition: cad, IssuanceNames: issuanceNames(g.Settings), Extra: g.Extra,
	}
}

// CACertificate is a CA certificate held by dps (a dps extension of the
// service API: /certificates/{name}).
type CACertificate struct {
	Name                   string               `json:"name"`
	Certificate            string               `json:"certificate,omitempty"`
	Info                   *X509CertificateInfo `json:"info,omitempty"`
	IsVerified             bool                 `json:"isVerified"`
	VerificationCode       string               `json:"verificationCode,omitempty"`
	ETag                   string               `json:"etag,omitempty"`
	CreatedDateTimeUtc     string               `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc string               `json:"lastUpdatedDateTimeUtc,omitempty"`
}

// FromCA converts a CA certificate.
func FromCA(c dps.CACertificate) CACertificate {
	out := CACertificate{Name: c.Name, Certificate: c.Certificate, IsVerified: c.Verified, VerificationCode: c.VerificationCode,
		ETag: c.ETag, CreatedDateTimeUtc: Time(c.Created), LastUpdatedDateTimeUtc: Time(c.Updated)}
	if w := certWithInfo(c.Certificate); w.Info != nil {
		out.Info = w.Info
	}
	return out
}
