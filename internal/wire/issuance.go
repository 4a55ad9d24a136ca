package wire

import (
	"crypto/x509"
	"encoding/pem"

	"github.com/opendps/dps"
)

// Certificate issuance's resources of the service API (a dps extension:
// /certificateAuthorities/{name} and /credentialPolicies/{name}, with the
// ServiceConfig right).

// IssuingCA is an issuing CA. A PUT either generates one (keyType, and
// optionally subject and validityDays) or imports one (certificate: the
// CA's PEM certificate followed by those above it; key: its PEM private
// key). Answers carry the chain as PEM in certificate and never the key.
type IssuingCA struct {
	Name                   string               `json:"name"`
	KeyType                string               `json:"keyType,omitempty"`
	Subject                string               `json:"subject,omitempty"`
	ValidityDays           int                  `json:"validityDays,omitempty"`
	Certificate            string               `json:"certificate,omitempty"`
	Key                    string               `json:"key,omitempty"`
	Info                   *X509CertificateInfo `json:"info,omitempty"`
	ETag                   string               `json:"etag,omitempty"`
	CreatedDateTimeUtc     string               `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc string               `json:"lastUpdatedDateTimeUtc,omitempty"`
}

// FromIssuingCA converts an issuing CA for an answer (no key).
func FromIssuingCA(c dps.IssuingCA) IssuingCA {
	out := IssuingCA{Name: c.Name, KeyType: string(c.KeyType), ETag: c.ETag, CreatedDateTimeUtc: Time(c.Created), LastUpdatedDateTimeUtc: Time(c.Updated)}
	var b []byte
	for _, der := range c.Chain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	out.Certificate = string(b)
	if len(c.Chain) > 0 {
		if cert, err := x509.ParseCertificate(c.Chain[0]); err == nil {
			out.Info = FromCertificateInfo(dps.InfoOf(cert))
			out.Subject = cert.Subject.CommonName
		}
	}
	return out
}

// CredentialPolicy is a credential policy: the CA that issues, the
// validity in days (7–90), the key types a CSR may have (none: all of
// ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096) and the subject
// common name of the certificates (deviceId or registrationId).
type CredentialPolicy struct {
	Name                     string   `json:"name"`
	CertificateAuthorityName string   `json:"certificateAuthorityName"`
	ValidityDays             int      `json:"validityDays"`
	KeyTypes                 []string `json:"keyTypes,omitempty"`
	Subject                  string   `json:"subject,omitempty"`
	ETag                     string   `json:"etag,omitempty"`
	CreatedDateTimeUtc       string   `json:"createdDateTimeUtc,omitempty"`
	LastUpdatedDateTimeUtc   string   `json:"lastUpdatedDateTimeUtc,omitempty"`
}

// FromCredentialPolicy converts a credential policy.
func FromCredentialPolicy(p dps.CredentialPolicy) CredentialPolicy {
	out := CredentialPolicy{Name: p.Name, CertificateAuthorityName: p.CertificateAuthority, ValidityDays: p.ValidityDays, Subject: string(p.Subject),
		ETag: p.ETag, CreatedDateTimeUtc: Time(p.Created), LastUpdatedDateTimeUtc: Time(p.Updated)}
	for _, k := range p.KeyTypes {
		out.KeyTypes = append(out.KeyTypes, string(k))
	}
	return out
}

// ToCredentialPolicy converts a request's credential policy (validated by
// the issuance service).
func ToCredentialPolicy(p CredentialPolicy) dps.CredentialPolicy {
	out := dps.CredentialPolicy{Name: p.Name, CertificateAuthority: p.CertificateAuthorityName, ValidityDays: p.ValidityDays, Subject: dps.SubjectSource(p.Subject)}
	for _, k := range p.KeyTypes {
		out.KeyTypes = append(out.KeyTypes, dps.KeyType(k))
	}
	return out
}
