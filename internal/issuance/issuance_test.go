package issuance_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/issuance"
	"github.com/opendps/dps/internal/store/sqlite"
)

var ctx = context.Background()

func kek(b byte) []byte { return bytes.Repeat([]byte{b}, issuance.KeyEncryptionKeySize) }

func newService(t *testing.T, db *sqlite.DB, key []byte) *issuance.Service {
	t.Helper()
	s, err := issuance.New(issuance.Options{Store: db, KeyEncryptionKey: key, CRLURL: "https://dps.example.net"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func csr(t *testing.T, cn string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func code(err error) int {
	if err == nil {
		return 0
	}
	return dps.AsError(err).Code
}

// setup makes a generated CA "ca-1" and a policy "policy-1" of 30 days.
func setup(t *testing.T) (*sqlite.DB, *issuance.Service, dps.IssuingCA) {
	t.Helper()
	db := dpstest.NewSQLite(t)
	s := newService(t, db, kek(1))
	ca, err := s.PutCA(ctx, "ca-1", dps.CASpec{KeyType: dps.KeyECDSAP384, Subject: "Test Issuing CA"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPolicy(ctx, dps.CredentialPolicy{Name: "policy-1", CertificateAuthority: "CA-1", ValidityDays: 30}, ""); err != nil {
		t.Fatal(err)
	}
	return db, s, ca
}

func issue(t *testing.T, s *issuance.Service, opID, regID, deviceID string, key crypto.Signer) [][]byte {
	t.Helper()
	set := &dps.Settings{CertificatePolicyName: "policy-1"}
	der, err := s.Check(ctx, set, regID, csr(t, regID, key))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := s.Issue(ctx, dps.IssueRequest{OperationID: opID, RegistrationID: regID, Hub: "hub.example.net", DeviceID: deviceID, Settings: set, CSR: der})
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// TestIssue: a certificate is issued for the CSR's key, for client
// authentication, to the device ID, for the policy's validity, chaining to
// the CA; asked again for the same operation the same chain comes back;
// the hub accepts it for that device only, until it is revoked; the CRL
// then lists it.
func TestIssue(t *testing.T) {
	db, s, ca := setup(t)
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain := issue(t, s, "op-1", "reg-1", "Device-1", devKey)
	if len(chain) != 2 || !bytes.Equal(chain[1], ca.Chain[0]) {
		t.Fatalf("chain of %d certificates, want leaf and the CA", len(chain))
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(chain[1])
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the leaf does not verify against its CA for client authentication: %v", err)
	}
	if leaf.Subject.CommonName != "Device-1" || !leaf.PublicKey.(*ecdsa.PublicKey).Equal(devKey.Public()) || leaf.IsCA {
		t.Errorf("leaf subject %q, CA %v, or not the CSR's key", leaf.Subject.CommonName, leaf.IsCA)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 30*24*time.Hour || d > 30*24*time.Hour+10*time.Minute {
		t.Errorf("validity %v, want 30 days", d)
	}
	if len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != "https://dps.example.net/certificateAuthorities/ca-1/crl" {
		t.Errorf("CRL distribution points %v", leaf.CRLDistributionPoints)
	}
	if again := issue(t, s, "op-1", "reg-1", "Device-1", devKey); !bytes.Equal(again[0], chain[0]) {
		t.Error("the same operation got a second certificate")
	}
	// A new instance on the same store (a restart, another node) too.
	if again := issue(t, newService(t, db, kek(1)), "op-1", "reg-1", "Device-1", devKey); !bytes.Equal(again[0], chain[0]) {
		t.Error("after a restart the same operation got a second certificate")
	}
	if other := issue(t, s, "op-2", "reg-1", "Device-1", devKey); bytes.Equal(other[0], chain[0]) {
		t.Error("another operation got the same certificate")
	}

	serial, err := s.Verify(ctx, "HUB.example.net", "Device-1", leaf)
	if err != nil || serial != dps.SerialText(leaf) {
		t.Fatalf("Verify = %q, %v", serial, err)
	}
	for _, tc := range []struct{ hub, device string }{{"hub.example.net", "Device-2"}, {"other.example.net", "Device-1"}} {
		if _, err := s.Verify(ctx, tc.hub, tc.device, leaf); dps.KindOf(err) != dps.KindUnauthorized {
			t.Errorf("Verify for %s on %s: %v, want unauthorized", tc.device, tc.hub, err)
		}
	}
	stranger := dpstest.SelfSigned(t, "Device-1")
	if _, err := s.Verify(ctx, "hub.example.net", "Device-1", stranger.Cert); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("Verify of a certificate dps did not issue: %v", err)
	}

	crl := func() *x509.RevocationList {
		t.Helper()
		der, err := s.CRL(ctx, "CA-1")
		if err != nil {
			t.Fatal(err)
		}
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.CheckSignatureFrom(root); err != nil {
			t.Fatalf("the CRL is not signed by its CA: %v", err)
		}
		return l
	}
	if l := crl(); len(l.RevokedCertificateEntries) != 0 {
		t.Errorf("CRL before any revocation lists %d", len(l.RevokedCertificateEntries))
	}
	if n, err := s.Revoke(ctx, "hub.example.net", "device-1"); err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v; want the device's 2 certificates", n, err)
	}
	if _, err := s.Verify(ctx, "hub.example.net", "Device-1", leaf); dps.KindOf(err) != dps.KindUnauthorized || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("Verify of a revoked certificate: %v", err)
	}
	l := crl()
	found := false
	for _, e := range l.RevokedCertificateEntries {
		found = found || e.SerialNumber.Cmp(leaf.SerialNumber) == 0
	}
	if len(l.RevokedCertificateEntries) != 2 || !found {
		t.Errorf("CRL lists %d entries (leaf listed: %v), want the 2 revoked", len(l.RevokedCertificateEntries), found)
	}
}

// TestSealedKeys: the store never holds a CA's key in the clear; a
// service with another key, or none, refuses the store at startup.
func TestSealedKeys(t *testing.T) {
	db, s, _ := setup(t)
	stored, err := db.IssuingCA(ctx, "ca-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CheckKeys(ctx); err != nil {
		t.Fatalf("CheckKeys with the right key: %v", err)
	}
	// The sealed key is not a parseable private key, nor does it hold the
	// DER of one: it is ciphertext.
	if _, err := x509.ParsePKCS8PrivateKey(stored.SealedKey); err == nil {
		t.Fatal("the stored key is a PKCS #8 key in the clear")
	}
	for _, key := range [][]byte{nil, kek(2)} {
		other := newService(t, db, key)
		if err := other.CheckKeys(ctx); err == nil {
			t.Errorf("CheckKeys with key %x: nil, want a refusal", key)
		}
	}
	if _, err := newService(t, db, nil).PutCA(ctx, "ca-2", dps.CASpec{}, ""); code(err) != dps.CodeIssuanceNotEnabled {
		t.Errorf("PutCA without a key encryption key: %v", err)
	}
	if _, err := issuance.New(issuance.Options{Store: db, KeyEncryptionKey: []byte("short")}); err == nil {
		t.Error("a 5-byte key encryption key was accepted")
	}
	// A key sealed for one CA does not open as another's.
	stored.Name = "ca-9"
	if _, err := db.PutIssuingCA(ctx, stored, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckKeys(ctx); err == nil || !strings.Contains(err.Error(), "ca-9") {
		t.Errorf("CheckKeys with a key moved to another CA: %v", err)
	}
}

// TestImportCA: an imported intermediate CA (RSA key in PKCS #1) issues
// chains that end with the root it was imported with.
func TestImportCA(t *testing.T) {
	db := dpstest.NewSQLite(t)
	s := newService(t, db, kek(1))
	rootKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "Import Root"}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(rootDER)
	interKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	interTmpl := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "Import Intermediate"}, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 6, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	interDER, _ := x509.CreateCertificate(rand.Reader, interTmpl, root, interKey.Public(), rootKey)
	certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}))
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(interKey)}))
	wrongKey := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rootKey)}))
	if _, err := s.PutCA(ctx, "imported", dps.CASpec{CertificatePEM: certPEM, KeyPEM: wrongKey}, ""); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("import with another certificate's key: %v", err)
	}
	if _, err := s.PutCA(ctx, "imported", dps.CASpec{CertificatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})), KeyPEM: wrongKey}, ""); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("import of a chain in the wrong order: %v", err)
	}
	// A CA that could not sign its CRL is refused at import: without
	// cRLSign, or without a subject key identifier.
	pemOf := func(der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	noCRLTmpl := *interTmpl
	noCRLTmpl.KeyUsage = x509.KeyUsageCertSign
	noCRLDER, _ := x509.CreateCertificate(rand.Reader, &noCRLTmpl, root, interKey.Public(), rootKey)
	// (Go adds a subject key identifier to every CA it makes: the basic
	// constraints are given as an extra extension so that it does not.)
	bc, _ := asn1.Marshal(struct{ IsCA bool }{true})
	noSKITmpl := *interTmpl
	noSKITmpl.IsCA, noSKITmpl.BasicConstraintsValid = false, false
	noSKITmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}}
	noSKIDER, _ := x509.CreateCertificate(rand.Reader, &noSKITmpl, root, interKey.Public(), rootKey)
	if c, err := x509.ParseCertificate(noSKIDER); err != nil || !c.IsCA || len(c.SubjectKeyId) != 0 {
		t.Fatalf("test CA without a subject key identifier: %v", err)
	}
	for what, tc := range map[string]struct {
		der  []byte
		says string
	}{"no cRLSign": {noCRLDER, "cRLSign"}, "no subject key identifier": {noSKIDER, "subject key identifier"}} {
		_, err := s.PutCA(ctx, "imported", dps.CASpec{CertificatePEM: pemOf(tc.der) + pemOf(rootDER), KeyPEM: keyPEM}, "")
		if dps.KindOf(err) != dps.KindInvalid || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("import of a CA with %s: %v", what, err)
		}
	}
	ca, err := s.PutCA(ctx, "imported", dps.CASpec{CertificatePEM: certPEM, KeyPEM: keyPEM}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CRL(ctx, "imported"); err != nil {
		t.Errorf("CRL of the imported CA: %v", err)
	}
	if ca.KeyType != dps.KeyRSA2048 || len(ca.Chain) != 2 {
		t.Fatalf("imported %s with %d certificates", ca.KeyType, len(ca.Chain))
	}
	if _, err := s.PutPolicy(ctx, dps.CredentialPolicy{Name: "policy-1", CertificateAuthority: "imported", ValidityDays: 90}, ""); err != nil {
		t.Fatal(err)
	}
	devKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	chain := issue(t, s, "op-1", "reg-1", "reg-1", devKey)
	if len(chain) != 3 || !bytes.Equal(chain[1], interDER) || !bytes.Equal(chain[2], rootDER) {
		t.Fatalf("chain of %d, want leaf, intermediate, root", len(chain))
	}
	leaf, _ := x509.ParseCertificate(chain[0])
	if leaf.NotAfter.After(time.Now().AddDate(0, 0, 91)) || leaf.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Errorf("leaf valid until %v, key usage %b", leaf.NotAfter, leaf.KeyUsage)
	}
}

func bigOne() *big.Int {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	return n.Add(n, big.NewInt(1))
}

// TestPolicies: a policy's validity is Azure's 7–90 days, its key types
// are the supported ones, its subject deviceId or registrationId, and its
// CA must exist; an enrollment's names must be a policy and its CA.
func TestPolicies(t *testing.T) {
	_, s, _ := setup(t)
	for _, p := range []dps.CredentialPolicy{
		{Name: "short", CertificateAuthority: "ca-1", ValidityDays: 6},
		{Name: "long", CertificateAuthority: "ca-1", ValidityDays: 91},
		{Name: "keys", CertificateAuthority: "ca-1", KeyTypes: []dps.KeyType{"rsa-1024"}},
		{Name: "subject", CertificateAuthority: "ca-1", Subject: "serialNumber"},
		{Name: "no-ca", CertificateAuthority: "ca-9"},
		{Name: "x", CertificateAuthority: "ca-1"},
	} {
		if _, err := s.PutPolicy(ctx, p, ""); dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("policy %s: %v, want invalid", p.Name, err)
		}
	}
	p, err := s.PutPolicy(ctx, dps.CredentialPolicy{Name: "reg-subject", CertificateAuthority: "ca-1", Subject: "REGISTRATIONID", KeyTypes: []dps.KeyType{"ECDSA-P256"}}, "")
	if err != nil || p.ValidityDays != 30 || p.Subject != dps.SubjectRegistrationID || len(p.KeyTypes) != 1 || p.KeyTypes[0] != dps.KeyECDSAP256 {
		t.Errorf("policy with defaults: %#v, %v", p, err)
	}
	if err := s.DeleteCA(ctx, "ca-1", ""); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("delete of a CA with policies: %v", err)
	}
	if _, err := s.Policy(ctx, "nope"); code(err) != dps.CodeCredentialPolicyNotFound {
		t.Errorf("missing policy: %v", err)
	}
	if _, err := s.CA(ctx, "nope"); code(err) != dps.CodeIssuingCANotFound {
		t.Errorf("missing CA: %v", err)
	}
}

// TestCheckRefusals: what the device's register request is refused with.
func TestCheckRefusals(t *testing.T) {
	_, s, _ := setup(t)
	if _, err := s.PutPolicy(ctx, dps.CredentialPolicy{Name: "ec-only", CertificateAuthority: "ca-1", KeyTypes: []dps.KeyType{dps.KeyECDSAP256}}, ""); err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	// Enrollments keep any names (Azure Device Registry's, copied from
	// Azure): they are checked here, when a CSR arrives.
	for _, tc := range []struct {
		name   string
		policy string
		ca     string
		csr    string
		code   int
	}{
		{"ok", "policy-1", "", csr(t, "reg-1", ec), 0},
		{"ok/ca-named", "POLICY-1", "CA-1", csr(t, "reg-1", ec), 0},
		{"fail/no-policy", "", "", csr(t, "reg-1", ec), dps.CodeIssuanceNotEnabled},
		{"fail/policy-deleted", "gone", "", csr(t, "reg-1", ec), dps.CodeIssuanceNotEnabled},
		{"fail/azure-policy", "adr-policy", "adr-ca", csr(t, "reg-1", ec), dps.CodeIssuanceNotEnabled},
		{"fail/other-ca", "policy-1", "ca-2", csr(t, "reg-1", ec), dps.CodeIssuanceNotEnabled},
		{"fail/garbage", "policy-1", "", "garbage!", dps.CodeCSRInvalid},
		{"fail/cn", "policy-1", "", csr(t, "reg-2", ec), dps.CodeCSRSubjectMismatch},
		{"fail/key-type", "ec-only", "", csr(t, "reg-1", rsaKey), dps.CodeCSRKeyNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Check(ctx, &dps.Settings{CertificatePolicyName: tc.policy, CertificateAuthorityName: tc.ca}, "reg-1", tc.csr)
			if code(err) != tc.code || err != nil && dps.KindOf(err) != dps.KindInvalid {
				t.Fatalf("Check = %v (code %d), want code %d", err, code(err), tc.code)
			}
		})
	}
	// At completion, a policy deleted since the register is a permanent
	// failure of the registration, not a retry.
	der, err := s.Check(ctx, &dps.Settings{CertificatePolicyName: "ec-only"}, "reg-1", csr(t, "reg-1", ec))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePolicy(ctx, "ec-only", ""); err != nil {
		t.Fatal(err)
	}
	_, err = s.Issue(ctx, dps.IssueRequest{OperationID: "op", RegistrationID: "reg-1", Hub: "h", DeviceID: "reg-1", Settings: &dps.Settings{CertificatePolicyName: "ec-only"}, CSR: der})
	if dps.KindOf(err) != dps.KindInvalid || code(err) != dps.CodeIssuanceFailed {
		t.Errorf("Issue after the policy was deleted: %v (code %d)", err, code(err))
	}
}

// TestRenew: a device connected with its issued certificate gets a new
// one for a new key; the old one stays valid; a CSR for another device, a
// device that did not connect with an issued certificate and a revoked
// one are refused with 400040.
func TestRenew(t *testing.T) {
	_, s, _ := setup(t)
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	first, _ := x509.ParseCertificate(issue(t, s, "op-1", "reg-1", "dev-1", k1)[0])
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain, err := s.Renew(ctx, "hub.example.net", "dev-1", dps.SerialText(first), csr(t, "dev-1", k2))
	if err != nil {
		t.Fatal(err)
	}
	second, _ := x509.ParseCertificate(chain[0])
	if !second.PublicKey.(*ecdsa.PublicKey).Equal(k2.Public()) || second.SerialNumber.Cmp(first.SerialNumber) == 0 || len(chain) != 2 {
		t.Fatal("the renewal is not a new certificate for the new key")
	}
	for _, c := range []*x509.Certificate{first, second} {
		if _, err := s.Verify(ctx, "hub.example.net", "dev-1", c); err != nil {
			t.Errorf("Verify after the renewal: %v", err)
		}
	}
	for _, tc := range []struct {
		name, serial, csr string
	}{
		{"fail/no-issued-certificate", "", csr(t, "dev-1", k2)},
		{"fail/other-device", dps.SerialText(first), csr(t, "dev-2", k2)},
		{"fail/garbage", dps.SerialText(first), "garbage"},
	} {
		if _, err := s.Renew(ctx, "hub.example.net", "dev-1", tc.serial, tc.csr); code(err) != dps.CodeCredentialOperationFailed {
			t.Errorf("%s: %v (code %d), want 400040", tc.name, err, code(err))
		}
	}
	s.Revoke(ctx, "hub.example.net", "dev-1")
	if _, err := s.Renew(ctx, "hub.example.net", "dev-1", dps.SerialText(second), csr(t, "dev-1", k2)); code(err) != dps.CodeCredentialOperationFailed {
		t.Errorf("renewal with a revoked certificate: %v", err)
	}
}

// TestIssueRetryMovedHub: a retried completion of one operation that
// assigns the device to another hub gets the operation's certificate,
// which the new hub accepts and the first hub no longer does.
func TestIssueRetryMovedHub(t *testing.T) {
	_, s, _ := setup(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	set := &dps.Settings{CertificatePolicyName: "policy-1"}
	der, err := s.Check(ctx, set, "reg-1", csr(t, "reg-1", k))
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.Issue(ctx, dps.IssueRequest{OperationID: "op-1", RegistrationID: "reg-1", Hub: "hub-a.example.net", DeviceID: "reg-1", Settings: set, CSR: der})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Issue(ctx, dps.IssueRequest{OperationID: "op-1", RegistrationID: "reg-1", Hub: "hub-b.example.net", DeviceID: "reg-1", Settings: set, CSR: der})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(again[0])
	if !bytes.Equal(first[0], again[0]) {
		t.Error("the retry got another certificate than the operation's")
	}
	if _, err := s.Verify(ctx, "hub-b.example.net", "reg-1", leaf); err != nil {
		t.Errorf("the new hub refuses the operation's certificate: %v", err)
	}
	if _, err := s.Verify(ctx, "hub-a.example.net", "reg-1", leaf); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("the hub the device left accepts its certificate: %v", err)
	}
}

// revokingStore revokes the device's certificates just before a renewal's
// certificate is recorded: a revocation that races the renewal.
type revokingStore struct {
	*sqlite.DB
	recorded []dps.IssuedCertificate
}

func (r *revokingStore) RecordIssuedCertificate(ctx context.Context, c dps.IssuedCertificate) (dps.IssuedCertificate, error) {
	if c.OperationID == "" {
		if _, err := r.DB.RevokeIssuedCertificates(ctx, c.Hub, c.DeviceID, time.Now()); err != nil {
			return c, err
		}
		r.recorded = append(r.recorded, c)
	}
	return r.DB.RecordIssuedCertificate(ctx, c)
}

// TestRenewRacesRevocation: a device revoked while its renewal is being
// issued does not keep a valid renewed certificate.
func TestRenewRacesRevocation(t *testing.T) {
	db, _, _ := setup(t)
	st := &revokingStore{DB: db}
	s, err := issuance.New(issuance.Options{Store: st, KeyEncryptionKey: kek(1)})
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	first, _ := x509.ParseCertificate(issue(t, s, "op-1", "reg-1", "dev-1", k1)[0])
	k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := s.Renew(ctx, "hub.example.net", "dev-1", dps.SerialText(first), csr(t, "dev-1", k2)); code(err) != dps.CodeCredentialOperationFailed {
		t.Errorf("renewal revoked meanwhile: %v (code %d), want 400040", err, code(err))
	}
	if len(st.recorded) != 1 {
		t.Fatalf("%d renewals recorded", len(st.recorded))
	}
	got, err := db.IssuedCertificate(ctx, st.recorded[0].SerialNumber)
	if err != nil || got.Revoked.IsZero() {
		t.Errorf("the renewed certificate %s of a revoked device: revoked %v, %v; want it revoked", got.SerialNumber, got.Revoked, err)
	}
}

// TestCRLNumberMonotonic: each CRL made has a greater number than the one
// before, even within one millisecond of the clock.
func TestCRLNumberMonotonic(t *testing.T) {
	db, _, _ := setup(t)
	at := time.Now()
	s, err := issuance.New(issuance.Options{Store: db, KeyEncryptionKey: kek(1), Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	var last *big.Int
	for i := range 3 {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		dev := "dev-" + string(rune('a'+i))
		issue(t, s, "op-"+dev, dev, dev, k)
		if _, err := s.Revoke(ctx, "hub.example.net", dev); err != nil { // a new CRL at once
			t.Fatal(err)
		}
		der, err := s.CRL(ctx, "ca-1")
		if err != nil {
			t.Fatal(err)
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil || len(crl.RevokedCertificateEntries) != i+1 {
			t.Fatalf("CRL %d: %v", i, err)
		}
		if last != nil && crl.Number.Cmp(last) <= 0 {
			t.Errorf("CRL %d has number %v after %v", i, crl.Number, last)
		}
		last = crl.Number
	}
}
