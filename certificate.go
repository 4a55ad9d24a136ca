package dps

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"time"
)

// ParseCertificate parses a certificate as DPS accepts it in enrollments:
// PEM text, base64 of DER, or base64 of PEM text.
func ParseCertificate(s string) (*x509.Certificate, error) {
	invalid := &Error{Kind: KindInvalid, Code: CodeInvalid, Message: "certificate must be PEM text or base64-encoded DER"}
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, invalid
	}
	der := []byte(nil)
	if strings.HasPrefix(s, "-----BEGIN") {
		b, _ := pem.Decode([]byte(s))
		if b == nil || b.Type != "CERTIFICATE" {
			return nil, invalid
		}
		der = b.Bytes
	} else {
		raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, invalid
		}
		if b, _ := pem.Decode(raw); b != nil && b.Type == "CERTIFICATE" {
			der = b.Bytes
		} else {
			der = raw
		}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, &Error{Kind: KindInvalid, Code: CodeInvalid, Message: "certificate could not be parsed: " + err.Error()}
	}
	return c, nil
}

// ValidateTPMEndorsementKey checks that s is base64 of a TPM2B_PUBLIC
// holding an RSA-2048 key, as TPM devices send their endorsement key.
func ValidateTPMEndorsementKey(s string) error {
	_, err := ParseTPMPublicRSA(s)
	return err
}

// ParseTPMPublicRSA decodes base64 TPM2B_PUBLIC of an RSA-2048 key and returns
// its modulus, so keys can be compared structurally rather than as text.
func ParseTPMPublicRSA(s string) ([]byte, error) {
	bad := func(why string) error {
		return &Error{Kind: KindInvalid, Code: CodeInvalid, Message: "TPM key must be base64 of a TPM2B_PUBLIC RSA-2048 key: " + why}
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, bad("not base64")
	}
	r := tpmReader{b: b}
	size := int(r.u16())
	if r.err || size != len(b)-2 {
		return nil, bad("size prefix does not match")
	}
	if typ := r.u16(); typ != 0x0001 {
		return nil, bad("not an RSA key")
	}
	r.u16()                            // nameAlg
	r.u32()                            // objectAttributes
	r.skip2B()                         // authPolicy
	if sym := r.u16(); sym != 0x0010 { // TPM_ALG_NULL
		r.u16() // keyBits
		r.u16() // mode
	}
	if scheme := r.u16(); scheme != 0x0010 {
		r.u16() // hashAlg of the scheme
	}
	bits := r.u16()
	r.u32() // exponent
	mod := r.read2B()
	if r.err {
		return nil, bad("truncated")
	}
	if bits != 2048 || len(mod) != 256 {
		return nil, bad("not 2048 bits")
	}
	return mod, nil
}

type tpmReader struct {
	b   []byte
	err bool
}

func (r *tpmReader) take(n int) []byte {
	if r.err || len(r.b) < n {
		r.err = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *tpmReader) u16() uint16 {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint16(v)
}

func (r *tpmReader) u32() uint32 {
	v := r.take(4)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint32(v)
}

func (r *tpmReader) read2B() []byte { return r.take(int(r.u16())) }
func (r *tpmReader) skip2B()        { r.read2B() }

// CertificateInfo describes an X.509 certificate as DPS reports it
// (X509CertificateInfo): thumbprints are upper-case hex.
type CertificateInfo struct {
	SubjectName      string
	SHA1Thumbprint   string
	SHA256Thumbprint string
	IssuerName       string
	NotBefore        time.Time
	NotAfter         time.Time
	SerialNumber     string
	Version          int
}

// InfoOf computes a certificate's CertificateInfo.
func InfoOf(c *x509.Certificate) CertificateInfo {
	s1, s256 := sha1.Sum(c.Raw), sha256.Sum256(c.Raw)
	return CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256Thumbprint: strings.ToUpper(hex.EncodeToString(s256[:])),
		IssuerName:       c.Issuer.String(),
		NotBefore:        c.NotBefore.UTC(),
		NotAfter:         c.NotAfter.UTC(),
		SerialNumber:     strings.ToUpper(c.SerialNumber.Text(16)),
		Version:          c.Version,
	}
}

// X509Proof is what an X.509 device proved: its certificate and, for a
// group, the group's certificate its chain ended at.
type X509Proof struct {
	Certificate CertificateInfo
	Signing     *CertificateInfo
}

// CACertificate is a CA certificate held by the instance, usable by
// enrollment groups' caReferences once its proof of possession is verified.
type CACertificate struct {
	Name             string
	Certificate      string // PEM
	Verified         bool
	VerificationCode string // the CN a verification certificate must carry
	ETag             string
	Created          time.Time
	Updated          time.Time
}
