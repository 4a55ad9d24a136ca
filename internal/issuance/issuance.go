// Package issuance is certificate issuance: the instance's issuing CAs
// (generated, or imported with their keys, which stay in the store sealed
// with AES-256-GCM under the instance's key encryption key) and credential
// policies; the check of a registration's CSR and the operational
// certificate issued for it, once per operation; the built-in hub's side
// (a device's certificate checked at connect, renewed over MQTT, revoked
// with the device) and each CA's CRL.
//
// It declares the store it needs (Store) and imports only the domain.
package issuance

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
)

// Store is the persistence of certificate issuance. Errors: a missing item
// is a *dps.Error of KindNotFound; puts and deletes follow the ETag rules
// of the service API's other resources (If-Match "" creates, "*" creates or
// replaces, an ETag must match); anything else is the store's failure.
type Store interface {
	IssuingCA(ctx context.Context, name string) (dps.IssuingCA, error)
	IssuingCAs(ctx context.Context) ([]dps.IssuingCA, error)
	PutIssuingCA(ctx context.Context, c dps.IssuingCA, ifMatch string) (dps.IssuingCA, error)
	// DeleteIssuingCA refuses (KindConflict) while a policy names the CA.
	DeleteIssuingCA(ctx context.Context, name, ifMatch string) error
	CredentialPolicy(ctx context.Context, name string) (dps.CredentialPolicy, error)
	CredentialPolicies(ctx context.Context) ([]dps.CredentialPolicy, error)
	// PutCredentialPolicy refuses (KindNotFound) a policy whose CA does
	// not exist, and returns the policy with the CA's name as stored.
	PutCredentialPolicy(ctx context.Context, p dps.CredentialPolicy, ifMatch string) (dps.CredentialPolicy, error)
	DeleteCredentialPolicy(ctx context.Context, name, ifMatch string) error
	// RecordIssuedCertificate stores an issued certificate, unless its
	// operation already has one: then it returns that one, re-pointed to
	// c's hub and device ID when they differ (a retried completion that
	// moved the device).
	RecordIssuedCertificate(ctx context.Context, c dps.IssuedCertificate) (dps.IssuedCertificate, error)
	IssuedCertificate(ctx context.Context, serial string) (dps.IssuedCertificate, error)
	RevokeIssuedCertificates(ctx context.Context, hub, deviceID string, at time.Time) (int, error)
	RevokedCertificates(ctx context.Context, ca string, now time.Time) ([]dps.IssuedCertificate, error)
}

// Options configure a Service.
type Options struct {
	Store Store
	// KeyEncryptionKey seals the issuing CAs' private keys: 32 bytes
	// (AES-256-GCM). Nil: no CA can be created, and CheckKeys fails when
	// the store holds any.
	KeyEncryptionKey []byte
	// CRLURL, when set, is the base URL of the service API
	// (https://host): issued certificates name {CRLURL}/certificateAuthorities/{name}/crl
	// as their CRL distribution point.
	CRLURL string
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is certificate issuance. It is safe for concurrent use.
type Service struct {
	o    Options
	aead cipher.AEAD // nil without a key encryption key

	mu      sync.Mutex
	signers map[string]signer // folded CA name → its opened key, by ETag
	crls    map[string]cachedCRL
	crlNums map[string]int64 // folded CA name → the number of its last CRL made here
}

type signer struct {
	etag string
	key  crypto.Signer
	cert *x509.Certificate
}

type cachedCRL struct {
	der []byte
	at  time.Time
}

// KeyEncryptionKeySize is the size of Options.KeyEncryptionKey.
const KeyEncryptionKeySize = 32

// New returns a Service; the key encryption key, when given, must be
// KeyEncryptionKeySize bytes.
func New(o Options) (*Service, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{o: o, signers: map[string]signer{}, crls: map[string]cachedCRL{}, crlNums: map[string]int64{}}
	if o.KeyEncryptionKey != nil {
		if len(o.KeyEncryptionKey) != KeyEncryptionKeySize {
			return nil, fmt.Errorf("issuance: the key encryption key must be %d bytes, not %d", KeyEncryptionKeySize, len(o.KeyEncryptionKey))
		}
		block, err := aes.NewCipher(o.KeyEncryptionKey)
		if err != nil {
			return nil, err
		}
		if s.aead, err = cipher.NewGCM(block); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// CheckKeys checks, at startup, that every stored CA's key opens with the
// key encryption key: a store that holds CAs with no key configured, or
// with another key, is refused rather than found out at the first device.
func (s *Service) CheckKeys(ctx context.Context) error {
	cas, err := s.o.Store.IssuingCAs(ctx)
	if err != nil {
		return err
	}
	if len(cas) == 0 {
		return nil
	}
	if s.aead == nil {
		return fmt.Errorf("the store holds %d issuing CA(s) (%s, …) but no key encryption key is configured (issuance.keyEncryptionKey or DPSD_ISSUANCE_KEYENCRYPTIONKEY)", len(cas), cas[0].Name)
	}
	for _, c := range cas {
		if _, err := s.open(c); err != nil {
			return fmt.Errorf("issuing CA %s: %w", c.Name, err)
		}
	}
	return nil
}

// sealPrefix is the format byte of a sealed key: version 1, AES-256-GCM,
// a 12-byte nonce after it.
const sealPrefix = 1

func aad(name string) []byte { return []byte("dps issuing CA key\x00" + dps.FoldID(name)) }

// seal encrypts a CA's PKCS #8 key, bound to the CA's name.
func (s *Service) seal(name string, pkcs8 []byte) ([]byte, error) {
	if s.aead == nil {
		return nil, notConfigured()
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	out := append([]byte{sealPrefix}, nonce...)
	return s.aead.Seal(out, nonce, pkcs8, aad(name)), nil
}

// open decrypts a CA's key and checks it is the key of its certificate.
func (s *Service) open(c dps.IssuingCA) (signer, error) {
	if s.aead == nil {
		return signer{}, notConfigured()
	}
	n := s.aead.NonceSize()
	if len(c.SealedKey) < 1+n || c.SealedKey[0] != sealPrefix {
		return signer{}, errors.New("its sealed key is not in a format this release reads")
	}
	pkcs8, err := s.aead.Open(nil, c.SealedKey[1:1+n], c.SealedKey[1+n:], aad(c.Name))
	if err != nil {
		return signer{}, errors.New("the key encryption key does not open its private key (another key than the one it was sealed with?)")
	}
	k, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return signer{}, fmt.Errorf("its private key: %w", err)
	}
	sg, ok := k.(crypto.Signer)
	if !ok {
		return signer{}, fmt.Errorf("its private key is a %T", k)
	}
	cert, err := c.Certificate()
	if err != nil {
		return signer{}, err
	}
	if !samePublic(cert.PublicKey, sg.Public()) {
		return signer{}, errors.New("its private key is not the key of its certificate")
	}
	return signer{etag: c.ETag, key: sg, cert: cert}, nil
}

// signerOf returns a CA's opened key, opened once per version of the CA.
func (s *Service) signerOf(c dps.IssuingCA) (signer, error) {
	k := dps.FoldID(c.Name)
	s.mu.Lock()
	sg, ok := s.signers[k]
	s.mu.Unlock()
	if ok && sg.etag == c.ETag {
		return sg, nil
	}
	sg, err := s.open(c)
	if err != nil {
		return sg, err
	}
	s.mu.Lock()
	s.signers[k] = sg
	s.mu.Unlock()
	return sg, nil
}

func samePublic(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

func notConfigured() error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeIssuanceNotEnabled,
		Message: "certificate issuance is not enabled on this instance: configure issuance.keyEncryptionKey (DPSD_ISSUANCE_KEYENCRYPTIONKEY)"}
}

func invalid(format string, args ...any) error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// notFound gives a store's KindNotFound the service API code of what is
// missing.
func notFound(err error, code int) error {
	if e, ok := errors.AsType[*dps.Error](err); ok && e.Kind == dps.KindNotFound && e.Code == 0 {
		return &dps.Error{Kind: dps.KindNotFound, Code: code, Message: e.Message, Err: e.Err}
	}
	return err
}

// ValidateName checks the name of an issuing CA or a credential policy:
// 3–63 characters, letters, digits and '-', starting with a letter or
// digit (the 2026-11-01 service API's certificateAuthorityName and
// certificatePolicyName).
func ValidateName(what, name string) error {
	if len(name) < 3 || len(name) > 63 {
		return invalid("%s name %q must be 3-63 characters", what, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (c != '-' || i == 0) {
			return invalid("%s name %q may contain only letters, digits and '-', and must start with a letter or digit", what, name)
		}
	}
	return nil
}

// PutCA creates an issuing CA (ifMatch as the store's puts; a CA's key is
// never replaced by a put of the same name without If-Match).
func (s *Service) PutCA(ctx context.Context, name string, req dps.CASpec, ifMatch string) (dps.IssuingCA, error) {
	if err := ValidateName("issuing CA", name); err != nil {
		return dps.IssuingCA{}, err
	}
	if s.aead == nil {
		return dps.IssuingCA{}, notConfigured()
	}
	var chain [][]byte
	var key crypto.Signer
	var err error
	if req.CertificatePEM != "" || req.KeyPEM != "" {
		chain, key, err = importCA(req.CertificatePEM, req.KeyPEM, s.o.Now())
	} else {
		chain, key, err = s.generateCA(name, req)
	}
	if err != nil {
		return dps.IssuingCA{}, err
	}
	kt, ok := dps.KeyTypeOf(key.Public())
	if !ok {
		return dps.IssuingCA{}, invalid("the CA's key must be ECDSA P-256 or P-384, or RSA 2048, 3072 or 4096 bits")
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return dps.IssuingCA{}, err
	}
	sealed, err := s.seal(name, pkcs8)
	if err != nil {
		return dps.IssuingCA{}, err
	}
	c, err := s.o.Store.PutIssuingCA(ctx, dps.IssuingCA{Name: name, Chain: chain, KeyType: kt, SealedKey: sealed}, ifMatch)
	if err == nil {
		s.o.Logger.InfoContext(ctx, "issuing CA stored", "ca", c.Name, "key_type", kt, "imported", req.CertificatePEM != "")
	}
	return c, err
}

// newKey generates a key of type k.
func newKey(k dps.KeyType) (crypto.Signer, error) {
	switch k {
	case dps.KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case dps.KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case dps.KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case dps.KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case dps.KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, invalid("keyType %q must be one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096", k)
}

func (s *Service) generateCA(name string, req dps.CASpec) ([][]byte, crypto.Signer, error) {
	kt := req.KeyType
	if kt == "" {
		kt = dps.KeyECDSAP256
	}
	key, err := newKey(kt)
	if err != nil {
		return nil, nil, err
	}
	days := req.ValidityDays
	if days == 0 {
		days = 3650
	}
	if days < 1 || days > 36500 {
		return nil, nil, invalid("validityDays of a CA must be 1 to 36500")
	}
	cn := req.Subject
	if cn == "" {
		cn = name
	}
	now := s.o.Now().UTC()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"dps issuing CA"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	return [][]byte{der}, key, nil
}

// importCA reads an imported CA: PEM certificates (the CA's first, then
// its issuers, each signing the one before), a PEM private key of the
// first (PKCS #8, PKCS #1 or SEC 1) and checks they belong together.
func importCA(certPEM, keyPEM string, now time.Time) ([][]byte, crypto.Signer, error) {
	var chain [][]byte
	var certs []*x509.Certificate
	rest := []byte(certPEM)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, nil, invalid("certificate: %v", err)
		}
		chain, certs = append(chain, b.Bytes), append(certs, c)
	}
	if len(certs) == 0 {
		return nil, nil, invalid("certificate must hold the CA's PEM certificate (and the certificates above it)")
	}
	ca := certs[0]
	if !ca.IsCA || ca.KeyUsage != 0 && ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, invalid("the certificate is not a CA certificate (basic constraints CA, key usage certSign)")
	}
	// The CA signs its CRL too: without these its CRL could never be made.
	if ca.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, nil, invalid("the CA certificate's key usage lacks cRLSign (dps publishes a CRL signed by the CA): reissue it with keyUsage keyCertSign, cRLSign")
	}
	if len(ca.SubjectKeyId) == 0 {
		return nil, nil, invalid("the CA certificate has no subject key identifier (its CRL names it): reissue it with the subjectKeyIdentifier extension")
	}
	if now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
		return nil, nil, invalid("the CA certificate is not valid now (%s to %s)", ca.NotBefore.UTC().Format(time.RFC3339), ca.NotAfter.UTC().Format(time.RFC3339))
	}
	for i := 1; i < len(certs); i++ {
		if err := certs[i-1].CheckSignatureFrom(certs[i]); err != nil {
			return nil, nil, invalid("certificate %d of the chain is not signed by the one after it: %v", i, err)
		}
	}
	kb, _ := pem.Decode([]byte(keyPEM))
	if kb == nil {
		return nil, nil, invalid("key must be the CA's PEM private key")
	}
	var k any
	var err error
	switch kb.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	}
	if err != nil {
		return nil, nil, invalid("key: %v (an unencrypted PKCS #8, PKCS #1 or SEC 1 key)", err)
	}
	sg, ok := k.(crypto.Signer)
	if !ok || !samePublic(ca.PublicKey, sg.Public()) {
		return nil, nil, invalid("the key is not the private key of the CA certificate")
	}
	return chain, sg, nil
}

// newSerial is a random 128-bit positive serial number.
func newSerial() *big.Int {
	b := make([]byte, 16)
	rand.Read(b)
	b[0] &= 0x7f
	b[0] |= 0x40 // 16 significant bytes: serials sort by length as text
	return new(big.Int).SetBytes(b)
}

// CA returns an issuing CA.
func (s *Service) CA(ctx context.Context, name string) (dps.IssuingCA, error) {
	c, err := s.o.Store.IssuingCA(ctx, name)
	return c, notFound(err, dps.CodeIssuingCANotFound)
}

// CAs returns every issuing CA.
func (s *Service) CAs(ctx context.Context) ([]dps.IssuingCA, error) { return s.o.Store.IssuingCAs(ctx) }

// DeleteCA deletes an issuing CA no policy names. The certificates it
// issued are refused by the hub from then on.
func (s *Service) DeleteCA(ctx context.Context, name, ifMatch string) error {
	return notFound(s.o.Store.DeleteIssuingCA(ctx, name, ifMatch), dps.CodeIssuingCANotFound)
}

// PutPolicy creates or replaces a credential policy: validity 7–90 days
// (Azure's bounds; 0 is 30), key types among dps.KeyTypes (none: all),
// subject deviceId (default) or registrationId, and an existing CA.
func (s *Service) PutPolicy(ctx context.Context, p dps.CredentialPolicy, ifMatch string) (dps.CredentialPolicy, error) {
	if err := ValidateName("credential policy", p.Name); err != nil {
		return p, err
	}
	if p.CertificateAuthority == "" {
		return p, invalid("a credential policy needs certificateAuthorityName")
	}
	if p.ValidityDays == 0 {
		p.ValidityDays = 30
	}
	if p.ValidityDays < dps.MinValidityDays || p.ValidityDays > dps.MaxValidityDays {
		return p, invalid("validityDays must be %d to %d", dps.MinValidityDays, dps.MaxValidityDays)
	}
	seen := map[dps.KeyType]bool{}
	var kts []dps.KeyType
	for _, k := range p.KeyTypes {
		kt, err := dps.ParseKeyType(string(k))
		if err != nil {
			return p, err
		}
		if !seen[kt] {
			seen[kt] = true
			kts = append(kts, kt)
		}
	}
	p.KeyTypes = kts
	switch {
	case p.Subject == "" || strings.EqualFold(string(p.Subject), string(dps.SubjectDeviceID)):
		p.Subject = dps.SubjectDeviceID
	case strings.EqualFold(string(p.Subject), string(dps.SubjectRegistrationID)):
		p.Subject = dps.SubjectRegistrationID
	default:
		return p, invalid("subject %q must be deviceId or registrationId", p.Subject)
	}
	out, err := s.o.Store.PutCredentialPolicy(ctx, p, ifMatch)
	if dps.KindOf(err) == dps.KindNotFound {
		return p, invalid("certificateAuthorityName: no issuing CA named %q", p.CertificateAuthority)
	}
	return out, err
}

// Policy returns a credential policy.
func (s *Service) Policy(ctx context.Context, name string) (dps.CredentialPolicy, error) {
	p, err := s.o.Store.CredentialPolicy(ctx, name)
	return p, notFound(err, dps.CodeCredentialPolicyNotFound)
}

// Policies returns every credential policy.
func (s *Service) Policies(ctx context.Context) ([]dps.CredentialPolicy, error) {
	return s.o.Store.CredentialPolicies(ctx)
}

// DeletePolicy deletes a credential policy. Enrollments that name it
// refuse CSRs from then on.
func (s *Service) DeletePolicy(ctx context.Context, name, ifMatch string) error {
	return notFound(s.o.Store.DeleteCredentialPolicy(ctx, name, ifMatch), dps.CodeCredentialPolicyNotFound)
}

// policyFor returns the policy of an enrollment. Enrollments store any
// certificatePolicyName and certificateAuthorityName (one copied from
// Azure names Azure Device Registry's), so they are checked here, when a
// device sends a CSR: no policy, a policy this instance does not have, or
// a CA that is not the policy's is CodeIssuanceNotEnabled.
func (s *Service) policyFor(ctx context.Context, set *dps.Settings) (dps.CredentialPolicy, error) {
	notEnabled := func(format string, args ...any) error {
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeIssuanceNotEnabled, Message: fmt.Sprintf(format, args...)}
	}
	if set.CertificatePolicyName == "" {
		return dps.CredentialPolicy{}, notEnabled("csr: the enrollment names no credential policy, so no certificate can be issued (set its certificatePolicyName)")
	}
	p, err := s.o.Store.CredentialPolicy(ctx, set.CertificatePolicyName)
	if dps.KindOf(err) == dps.KindNotFound {
		return p, notEnabled("csr: the enrollment's credential policy %q does not exist on this instance (create it with dpsctl issuance policy create)", set.CertificatePolicyName)
	}
	if err != nil {
		return p, err
	}
	if set.CertificateAuthorityName != "" && !strings.EqualFold(set.CertificateAuthorityName, p.CertificateAuthority) {
		return p, notEnabled("csr: the enrollment's certificateAuthorityName %q is not the CA of its credential policy %q (%s)", set.CertificateAuthorityName, p.Name, p.CertificateAuthority)
	}
	return p, nil
}

// Check checks a registration's csr (base64 DER) against the device's
// registration ID and its enrollment's policy and returns it as DER. The
// error is the device's 400 (*dps.Error of KindInvalid), or the store's.
func (s *Service) Check(ctx context.Context, set *dps.Settings, registrationID, csr string) ([]byte, error) {
	p, err := s.policyFor(ctx, set)
	if err != nil {
		return nil, err
	}
	req, err := dps.ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	if _, err := dps.CheckCSR(req, registrationID, p); err != nil {
		return nil, err
	}
	return req.Raw, nil
}

// Issue issues the operational certificate of a registration operation
// and returns its chain (DER, leaf first, ending with the root). An
// operation gets one certificate: asked again (a retried or resumed
// completion, on any node), Issue returns the chain of the one recorded.
// A *dps.Error of KindInvalid is permanent (the policy or its CA is gone,
// or no longer allows the CSR): the registration fails with it; any other
// error is transient.
func (s *Service) Issue(ctx context.Context, r dps.IssueRequest) ([][]byte, error) {
	p, err := s.policyFor(ctx, r.Settings)
	if err != nil {
		return nil, failed(err)
	}
	csr, err := x509.ParseCertificateRequest(r.CSR)
	if err != nil {
		return nil, failed(err)
	}
	if _, err := dps.CheckCSR(csr, r.RegistrationID, p); err != nil {
		return nil, err
	}
	return s.issue(ctx, p, csr, r.RegistrationID, r.Hub, r.DeviceID, r.OperationID)
}

// failed makes an error the registration cannot recover from
// CodeIssuanceFailed; the store's failures stay transient.
func failed(err error) error {
	if e, ok := errors.AsType[*dps.Error](err); ok && e.Kind == dps.KindInvalid {
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeIssuanceFailed, Message: e.Message}
	}
	if _, ok := errors.AsType[*dps.Error](err); ok {
		return err
	}
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeIssuanceFailed, Message: "the certificate could not be issued: " + err.Error()}
}

// issue signs and records a certificate for csr under p.
func (s *Service) issue(ctx context.Context, p dps.CredentialPolicy, csr *x509.CertificateRequest, regID, hub, deviceID, opID string) ([][]byte, error) {
	ca, err := s.o.Store.IssuingCA(ctx, p.CertificateAuthority)
	if dps.KindOf(err) == dps.KindNotFound {
		return nil, failed(fmt.Errorf("the issuing CA %q of credential policy %q does not exist", p.CertificateAuthority, p.Name))
	}
	if err != nil {
		return nil, err
	}
	sg, err := s.signerOf(ca)
	if err != nil {
		return nil, failed(err)
	}
	now := s.o.Now().UTC()
	notAfter := now.AddDate(0, 0, p.ValidityDays)
	if notAfter.After(sg.cert.NotAfter) {
		notAfter = sg.cert.NotAfter // never outlive the CA
	}
	if !notAfter.After(now) {
		return nil, failed(fmt.Errorf("the issuing CA %q has expired", ca.Name))
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := csr.PublicKey.(*rsa.PublicKey); ok {
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: p.SubjectOf(regID, deviceID)},
		NotBefore:             now.Add(-5 * time.Minute), // devices' clocks
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	if s.o.CRLURL != "" {
		tmpl.CRLDistributionPoints = []string{strings.TrimSuffix(s.o.CRLURL, "/") + "/certificateAuthorities/" + url.PathEscape(ca.Name) + "/crl"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, sg.cert, csr.PublicKey, sg.key)
	if err != nil {
		return nil, failed(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	rec, err := s.o.Store.RecordIssuedCertificate(ctx, dps.IssuedCertificate{
		SerialNumber: dps.SerialText(leaf), CertificateAuthority: ca.Name, Policy: p.Name,
		RegistrationID: regID, Hub: hub, DeviceID: deviceID, OperationID: opID,
		Certificate: der, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Issued: now,
	})
	if err != nil {
		return nil, err
	}
	if rec.SerialNumber != dps.SerialText(leaf) {
		// The operation had its certificate already: that one is the
		// device's (this one was never recorded, so never accepted).
		ca, err = s.o.Store.IssuingCA(ctx, rec.CertificateAuthority)
		if dps.KindOf(err) == dps.KindNotFound {
			return nil, failed(fmt.Errorf("the issuing CA %q of the operation's certificate does not exist", rec.CertificateAuthority))
		}
		if err != nil {
			return nil, err
		}
	} else {
		s.o.Logger.InfoContext(ctx, "certificate issued", "ca", ca.Name, "policy", p.Name, "serial", rec.SerialNumber,
			"registration_id", regID, "device_id", deviceID, "not_after", rec.NotAfter)
	}
	return append([][]byte{rec.Certificate}, ca.Chain...), nil
}

// Verify checks the certificate a device presented to its hub whose
// identity is certificateAuthority: it must be one this instance issued to
// that device on that hub (the very certificate recorded), signed by an
// issuing CA that still exists, and not revoked. It returns the
// certificate's serial number. Errors: a *dps.Error of KindUnauthorized
// saying why, or the store's failure.
func (s *Service) Verify(ctx context.Context, hub, deviceID string, leaf *x509.Certificate) (string, error) {
	serial := dps.SerialText(leaf)
	rec, err := s.o.Store.IssuedCertificate(ctx, serial)
	if dps.KindOf(err) == dps.KindNotFound {
		return "", dps.Unauthenticated(errors.New("the client certificate was not issued by this instance"))
	}
	if err != nil {
		return "", err
	}
	if string(rec.Certificate) != string(leaf.Raw) {
		return "", dps.Unauthenticated(errors.New("the client certificate is not the one issued with its serial number"))
	}
	if !strings.EqualFold(rec.Hub, hub) || !strings.EqualFold(rec.DeviceID, deviceID) {
		return "", dps.Unauthenticated(fmt.Errorf("the client certificate was issued to device %s on %s", rec.DeviceID, rec.Hub))
	}
	if !rec.Revoked.IsZero() {
		return "", dps.Unauthenticated(fmt.Errorf("the client certificate was revoked at %s", rec.Revoked.Format(time.RFC3339)))
	}
	ca, err := s.o.Store.IssuingCA(ctx, rec.CertificateAuthority)
	if dps.KindOf(err) == dps.KindNotFound {
		return "", dps.Unauthenticated(fmt.Errorf("the issuing CA %s of the client certificate was deleted", rec.CertificateAuthority))
	}
	if err != nil {
		return "", err
	}
	caCert, err := ca.Certificate()
	if err != nil {
		return "", err
	}
	if err := leaf.CheckSignatureFrom(caCert); err != nil {
		return "", dps.Unauthenticated(fmt.Errorf("the client certificate is not signed by its issuing CA %s", ca.Name))
	}
	return serial, nil
}

// Renew issues a new certificate to a device connected to its hub with
// the certificate serial (one this instance issued), for csr (base64 DER,
// its subject the device's registration ID or device ID), under the
// policy that issued serial, and returns its chain (DER, leaf first). The
// earlier certificate stays valid until it expires. Errors: a *dps.Error of KindInvalid with the reason (the device
// gets it as IoT Hub's 400040), or the store's failure.
func (s *Service) Renew(ctx context.Context, hub, deviceID, serial, csr string) ([][]byte, error) {
	refuse := func(err error) error {
		if e, ok := errors.AsType[*dps.Error](err); ok && e.Kind == dps.KindInvalid {
			return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeCredentialOperationFailed, Message: e.Message}
		}
		return err
	}
	if serial == "" {
		return nil, refuse(invalid("the connection did not authenticate with a certificate this instance issued: nothing to renew"))
	}
	rec, err := s.o.Store.IssuedCertificate(ctx, serial)
	if err != nil {
		return nil, err
	}
	if !rec.Revoked.IsZero() {
		return nil, refuse(invalid("the device's certificate was revoked"))
	}
	p, err := s.o.Store.CredentialPolicy(ctx, rec.Policy)
	if dps.KindOf(err) == dps.KindNotFound {
		return nil, refuse(invalid("the credential policy %q that issued the device's certificate no longer exists", rec.Policy))
	}
	if err != nil {
		return nil, err
	}
	req, err := dps.ParseCSR(csr)
	if err != nil {
		return nil, refuse(err)
	}
	name := rec.RegistrationID
	if strings.EqualFold(req.Subject.CommonName, rec.DeviceID) {
		name = req.Subject.CommonName
	}
	if _, err := dps.CheckCSR(req, name, p); err != nil {
		return nil, refuse(err)
	}
	chain, err := s.issue(ctx, p, req, rec.RegistrationID, hub, deviceID, "")
	if err != nil {
		return nil, refuse(err)
	}
	// A revocation of the device between the check above and the record
	// of the new certificate missed it: look again now that it is recorded
	// (a later revocation sees it) and revoke it with the others.
	if rec, err = s.o.Store.IssuedCertificate(ctx, serial); err != nil {
		return nil, err
	}
	if !rec.Revoked.IsZero() {
		if _, err := s.Revoke(ctx, hub, deviceID); err != nil {
			return nil, err
		}
		return nil, refuse(invalid("the device's certificate was revoked"))
	}
	return chain, nil
}

// Revoke revokes every certificate issued to a device on hub that is still
// valid (a disabled or deleted identity): the hub refuses them and the
// CAs' CRLs list them from then on.
func (s *Service) Revoke(ctx context.Context, hub, deviceID string) (int, error) {
	n, err := s.o.Store.RevokeIssuedCertificates(ctx, hub, deviceID, s.o.Now().UTC())
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.mu.Lock()
		clear(s.crls) // this node's CRLs show it at once
		s.mu.Unlock()
		s.o.Logger.InfoContext(ctx, "certificates revoked", "hub", hub, "device_id", deviceID, "count", n)
	}
	return n, nil
}

// crlNumber is the CRL number of a CA's next CRL: the clock in
// milliseconds, but never less than one more than the last number this
// process gave (two CRLs in one millisecond, or a clock set back). Not
// stored: after a restart, or on another node, the clock alone orders
// them, as it did the earlier ones.
func (s *Service) crlNumber(ca string, now time.Time) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := max(now.UnixMilli(), s.crlNums[ca]+1)
	s.crlNums[ca] = n
	return n
}

// crlFor is how long a CRL is served before it is made again (a
// revocation on this node remakes it at once), and crlValidity its
// nextUpdate.
const (
	crlFor      = 30 * time.Second
	crlValidity = 24 * time.Hour
)

// CRL returns an issuing CA's certificate revocation list (DER), signed by
// the CA: the serial numbers of its revoked certificates that have not
// expired.
func (s *Service) CRL(ctx context.Context, name string) ([]byte, error) {
	now := s.o.Now().UTC()
	k := dps.FoldID(name)
	s.mu.Lock()
	c, ok := s.crls[k]
	s.mu.Unlock()
	if ok && now.Sub(c.at) < crlFor && !now.Before(c.at) {
		return c.der, nil
	}
	ca, err := s.o.Store.IssuingCA(ctx, name)
	if err != nil {
		return nil, notFound(err, dps.CodeIssuingCANotFound)
	}
	sg, err := s.signerOf(ca)
	if err != nil {
		return nil, err
	}
	revoked, err := s.o.Store.RevokedCertificates(ctx, name, now)
	if err != nil {
		return nil, err
	}
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, r := range revoked {
		n, ok := new(big.Int).SetString(r.SerialNumber, 16)
		if !ok {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.Revoked, ReasonCode: 0})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(s.crlNumber(k, now)),
		ThisUpdate:                now,
		NextUpdate:                now.Add(crlValidity),
		RevokedCertificateEntries: entries,
	}, sg.cert, sg.key)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.crls[k] = cachedCRL{der: der, at: now}
	s.mu.Unlock()
	return der, nil
}
