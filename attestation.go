package dps

import (
	"crypto/x509"
	"log/slog"
	"time"
)

// AttestationType names how a device proves its identity.
type AttestationType string

const (
	AttestationNone         AttestationType = "none"
	AttestationSymmetricKey AttestationType = "symmetricKey"
	AttestationX509         AttestationType = "x509"
	AttestationTPM          AttestationType = "tpm"
)

// Key is a base64 symmetric key. It never prints or logs its value.
type Key string

// String redacts the key.
func (Key) String() string { return "REDACTED" }

// GoString redacts the key in %#v.
func (Key) GoString() string { return `dps.Key("REDACTED")` }

// LogValue redacts the key in structured logs.
func (Key) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Attestation is an enrollment's attestation mechanism. Exactly the member
// named by Type is set.
type Attestation struct {
	Type         AttestationType
	SymmetricKey *SymmetricKeyAttestation
	X509         *X509Attestation
	TPM          *TPMAttestation
}

// SymmetricKeyAttestation holds an enrollment's two keys (base64).
type SymmetricKeyAttestation struct {
	PrimaryKey   Key
	SecondaryKey Key
}

// X509Attestation holds certificates for individual enrollments
// (ClientCertificates) or groups (SigningCertificates, CAReferences).
type X509Attestation struct {
	ClientCertificates  *X509Certificates
	SigningCertificates *X509Certificates
	CAReferences        *X509CAReferences
}

// X509Certificates is a primary and an optional secondary certificate, each
// as uploaded (PEM text or base64 DER).
type X509Certificates struct {
	Primary   string
	Secondary string
}

// X509CAReferences names CA certificates held by the instance.
type X509CAReferences struct {
	Primary   string
	Secondary string
}

// TPMAttestation holds a TPM's endorsement key and optional storage root key,
// both base64 TPM2B_PUBLIC.
type TPMAttestation struct {
	EndorsementKey string
	StorageRootKey string
}

// TPMChallenge is the answer to a TPM device's register request that
// carries no valid SAS token: the device imports AuthenticationKey (a base64
// activation blob) into its TPM and signs its next request with it.
type TPMChallenge struct {
	AuthenticationKey string
	KeyName           string
}

func (c *TPMChallenge) Error() string { return "TPM challenge issued" }

// Challenge is the pending TPM challenge of a registration ID: the key K1
// wrapped in the activation blob the device received. Only the latest
// challenge of a registration ID is kept.
type Challenge struct {
	RegistrationID string
	Key            Key // base64 K1
	StorageRootKey string
	Created        time.Time
	Expires        time.Time
}

// Credential is what a device presented, still unverified: which
// attestation mechanism checks it is decided by its shape and the
// device's enrollment.
type Credential struct {
	// SAS is the Authorization header or MQTT password ("" if none).
	SAS string
	// Certificates is the TLS client chain, leaf first (nil if none).
	Certificates []*x509.Certificate
	// TPM is the tpm member of an HTTPS register body: the device's
	// endorsement and storage root keys (base64 TPM2B_PUBLIC); nil if
	// absent.
	TPM *TPMAttestation
}

// Proof is what a device's attestation showed. Exactly the member named by
// Type (if any) is set.
type Proof struct {
	Type AttestationType
	X509 *X509Proof // x509: the certificates that authenticated
	TPM  *TPMProof  // tpm
}

// TPMProof is what a TPM device's registration holds: on its operation the
// challenge key that authenticated it and the storage root key its hub key
// is wrapped for; on its registration record, the wrapped hub key.
type TPMProof struct {
	// Key is the challenge key K1 (base64) that authenticated the register
	// request, and authenticates the operation's polls.
	Key            Key
	StorageRootKey string
	// AuthenticationKey is the activation blob (base64) wrapping the
	// device's hub key for its TPM.
	AuthenticationKey string
}

// Attested is what an attestation mechanism established: the enrollment
// the device authenticated against (an individual enrollment or a group)
// and what proved it.
type Attested struct {
	Enrollment *Enrollment
	Group      *Group
	Proof      Proof
	// Hub is the device's authentication on its hub when the attestation
	// already determined it (symmetric keys: the device's keys); zero
	// otherwise, and the mechanism works it out when the registration
	// completes.
	Hub HubAuth
}

// Settings returns the settings of the enrollment or group a device
// matched.
func (a *Attested) Settings() *Settings {
	if a.Enrollment != nil {
		return &a.Enrollment.Settings
	}
	return &a.Group.Settings
}

// GroupID returns the ID of the group a device matched, "" for an
// individual enrollment.
func (a *Attested) GroupID() string {
	if a.Group != nil {
		return a.Group.ID
	}
	return ""
}

// HubAuthType is how a device authenticates to its IoT hub, in IoT Hub's
// words (a device identity's authentication.type).
type HubAuthType string

const (
	HubAuthSAS        HubAuthType = "sas"                  // symmetric keys
	HubAuthSelfSigned HubAuthType = "selfSigned"           // an X.509 certificate known by its thumbprint
	HubAuthCA         HubAuthType = "certificateAuthority" // an X.509 certificate signed by a CA the hub trusts
	HubAuthNone       HubAuthType = "none"
)

// HubAuth is a device identity's authentication on its hub.
type HubAuth struct {
	Type HubAuthType
	// PrimaryKey and SecondaryKey are the device's symmetric keys (sas).
	PrimaryKey   Key
	SecondaryKey Key
	// PrimaryThumbprint and SecondaryThumbprint are the hex SHA-256 (or
	// SHA-1) thumbprints of the device's certificates (selfSigned).
	PrimaryThumbprint   string
	SecondaryThumbprint string
}
