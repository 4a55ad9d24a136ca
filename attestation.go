package dps

import (
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
