package dpstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// CertKey is a certificate minted at test time with its key.
type CertKey struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// PEM returns the certificate as PEM text.
func (c *CertKey) PEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw}))
}

// CertOption changes a certificate template before signing.
type CertOption func(*x509.Certificate)

// Validity sets the validity window.
func Validity(notBefore, notAfter time.Time) CertOption {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// ExtKeyUsage replaces the extended key usages.
func ExtKeyUsage(u ...x509.ExtKeyUsage) CertOption {
	return func(c *x509.Certificate) { c.ExtKeyUsage = u }
}

var serials = big.NewInt(1000)

func mint(tb testing.TB, tmpl *x509.Certificate, parent *CertKey, opts []CertOption) *CertKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl.SerialNumber = n.Add(n, serials)
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	}
	for _, o := range opts {
		o(tmpl)
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &CertKey{Cert: c, Key: key}
}

// NewRoot mints a self-signed root CA.
func NewRoot(tb testing.TB, cn string, opts ...CertOption) *CertKey {
	return mint(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}, nil, opts)
}

// Intermediate mints an intermediate CA signed by c.
func (c *CertKey) Intermediate(tb testing.TB, cn string, opts ...CertOption) *CertKey {
	return mint(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}, c, opts)
}

// Leaf mints a device (client authentication) certificate signed by c.
func (c *CertKey) Leaf(tb testing.TB, cn string, opts ...CertOption) *CertKey {
	return mint(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, c, opts)
}

// SelfSigned mints a self-signed device certificate.
func SelfSigned(tb testing.TB, cn string, opts ...CertOption) *CertKey {
	return mint(tb, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, nil, opts)
}

// TLS returns the certificate with the chain to present (leaf first).
func (c *CertKey) TLS(intermediates ...*CertKey) tls.Certificate {
	out := tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for _, i := range intermediates {
		out.Certificate = append(out.Certificate, i.Cert.Raw)
	}
	return out
}

// CRL returns a PEM certificate revocation list issued by c that revokes certs.
func (c *CertKey) CRL(tb testing.TB, certs ...*CertKey) []byte {
	tb.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour)}
	for _, r := range certs {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: r.Cert.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, c.Cert, c.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}
