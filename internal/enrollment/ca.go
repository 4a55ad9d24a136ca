package enrollment

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	"github.com/opendps/dps"
)

// CAStore is the persistence of CA certificates held by the instance, part
// of Store, under Store's error contract.
type CAStore interface {
	CACertificate(ctx context.Context, name string) (dps.CACertificate, error)
	CACertificates(ctx context.Context) ([]dps.CACertificate, error)
	PutCACertificate(ctx context.Context, c dps.CACertificate, ifMatch string) (dps.CACertificate, error)
	DeleteCACertificate(ctx context.Context, name, ifMatch string) error
}

// PutCA adds or replaces a CA certificate (PEM or base64 DER). A new or
// changed certificate is unverified until its proof of possession.
func (s *Service) PutCA(ctx context.Context, name, certificate, ifMatch string) (dps.CACertificate, error) {
	if err := dps.ValidateGroupID(name); err != nil {
		return dps.CACertificate{}, invalid("CA certificate name: must be 1-128 letters, digits, '-', '.', '_' or ':'")
	}
	c, err := dps.ParseCertificate(certificate)
	if err != nil {
		return dps.CACertificate{}, err
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return dps.CACertificate{}, invalid("certificate %q is not a CA certificate (basic constraints CA:TRUE required)", c.Subject.CommonName)
	}
	out := dps.CACertificate{Name: name, Certificate: certificate}
	if old, err := s.o.Store.CACertificate(ctx, name); err == nil {
		if oc, err := dps.ParseCertificate(old.Certificate); err == nil && bytes.Equal(oc.Raw, c.Raw) {
			out.Verified, out.VerificationCode = old.Verified, old.VerificationCode
		}
	}
	return s.o.Store.PutCACertificate(ctx, out, ifMatch)
}

// CA returns a CA certificate.
func (s *Service) CA(ctx context.Context, name string) (dps.CACertificate, error) {
	c, err := s.o.Store.CACertificate(ctx, name)
	return c, notFoundCode(err, dps.CodeCANotFound)
}

// CAs returns every CA certificate.
func (s *Service) CAs(ctx context.Context) ([]dps.CACertificate, error) {
	return s.o.Store.CACertificates(ctx)
}

// DeleteCA deletes a CA certificate; groups referencing it stop accepting devices.
func (s *Service) DeleteCA(ctx context.Context, name, ifMatch string) error {
	return notFoundCode(s.o.Store.DeleteCACertificate(ctx, name, ifMatch), dps.CodeCANotFound)
}

// GenerateVerificationCode issues a new verification code: the CN a
// certificate signed by the CA must carry to prove possession of its key.
func (s *Service) GenerateVerificationCode(ctx context.Context, name string) (dps.CACertificate, error) {
	c, err := s.o.Store.CACertificate(ctx, name)
	if err != nil {
		return c, notFoundCode(err, dps.CodeCANotFound)
	}
	b := make([]byte, 16)
	rand.Read(b)
	c.VerificationCode = strings.ToUpper(hex.EncodeToString(b))
	return s.o.Store.PutCACertificate(ctx, c, c.ETag)
}

// VerifyCA checks a proof-of-possession certificate: signed by the CA,
// valid now, with CN equal to the current verification code. The CA then
// becomes verified.
func (s *Service) VerifyCA(ctx context.Context, name, certificate string, now time.Time) (dps.CACertificate, error) {
	ca, err := s.o.Store.CACertificate(ctx, name)
	if err != nil {
		return ca, notFoundCode(err, dps.CodeCANotFound)
	}
	if ca.VerificationCode == "" {
		return ca, invalid("no verification code was generated for CA certificate %q; generate one first", name)
	}
	proof, err := dps.ParseCertificate(certificate)
	if err != nil {
		return ca, err
	}
	parent, err := dps.ParseCertificate(ca.Certificate)
	if err != nil {
		return ca, err
	}
	if err := proof.CheckSignatureFrom(parent); err != nil {
		return ca, invalid("the verification certificate is not signed by CA certificate %q", name)
	}
	if proof.Subject.CommonName != ca.VerificationCode {
		return ca, invalid("the verification certificate's CN must be the verification code")
	}
	if now.Before(proof.NotBefore) || now.After(proof.NotAfter) {
		return ca, invalid("the verification certificate is not within its validity period")
	}
	ca.Verified, ca.VerificationCode = true, ""
	return s.o.Store.PutCACertificate(ctx, ca, ca.ETag)
}
