package dps_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/opendps/dps"
)

func csrDER(t testing.TB, cn string, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// codeOf is the DPS code of an error, 0 for none.
func codeOf(err error) int {
	if err == nil {
		return 0
	}
	return dps.AsError(err).Code
}

func TestParseCSR(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrDER(t, "dev-1", p256)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-3] ^= 0x55 // in the signature
	pemText := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})
	for _, tc := range []struct {
		name, csr string
		code      int
		msg       string
	}{
		{"ok", b64(good), 0, ""},
		{"ok/unpadded", strings.TrimRight(b64(good), "="), 0, ""},
		{"fail/empty", " ", dps.CodeCSRInvalid, "empty"},
		{"fail/garbage", "not base64 at all!", dps.CodeCSRInvalid, "not base64"},
		{"fail/not-pkcs10", b64([]byte("hello, world")), dps.CodeCSRInvalid, "PKCS #10"},
		{"fail/pem", string(pemText), dps.CodeCSRInvalid, "without PEM"},
		{"fail/base64-of-pem", b64(pemText), dps.CodeCSRInvalid, "not of PEM"},
		{"fail/wrong-signature", b64(tampered), dps.CodeCSRInvalid, "signature"},
		{"fail/too-long", strings.Repeat("A", dps.MaxCSRLen+4), dps.CodeCSRInvalid, "over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dps.ParseCSR(tc.csr)
			if codeOf(err) != tc.code {
				t.Fatalf("ParseCSR = %v, code %d; want code %d", err, codeOf(err), tc.code)
			}
			if err != nil {
				if dps.KindOf(err) != dps.KindInvalid || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("error %q: want KindInvalid mentioning %q", err, tc.msg)
				}
				return
			}
			if got.Subject.CommonName != "dev-1" {
				t.Errorf("subject %q", got.Subject.CommonName)
			}
		})
	}
}

func TestCheckCSR(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	all := dps.CredentialPolicy{Name: "all"}
	ecOnly := dps.CredentialPolicy{Name: "ec-only", KeyTypes: []dps.KeyType{dps.KeyECDSAP256, dps.KeyECDSAP384}}
	for _, tc := range []struct {
		name   string
		cn     string
		key    crypto.Signer
		policy dps.CredentialPolicy
		want   dps.KeyType
		code   int
	}{
		{"ok/p256", "dev-1", p256, all, dps.KeyECDSAP256, 0},
		{"ok/rsa2048", "dev-1", rsa2048, all, dps.KeyRSA2048, 0},
		{"ok/cn-in-another-case", "DEV-1", p256, ecOnly, dps.KeyECDSAP256, 0},
		{"fail/cn-mismatch", "dev-2", p256, all, "", dps.CodeCSRSubjectMismatch},
		{"fail/no-cn", "", p256, all, "", dps.CodeCSRSubjectMismatch},
		{"fail/weak-rsa1024", "dev-1", rsa1024, all, "", dps.CodeCSRKeyNotAllowed},
		{"fail/p224", "dev-1", p224, all, "", dps.CodeCSRKeyNotAllowed},
		{"fail/p521", "dev-1", p521, all, "", dps.CodeCSRKeyNotAllowed},
		{"fail/ed25519", "dev-1", ed, all, "", dps.CodeCSRKeyNotAllowed},
		{"fail/rsa-not-allowed-by-policy", "dev-1", rsa2048, ecOnly, "", dps.CodeCSRKeyNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := dps.ParseCSR(b64(csrDER(t, tc.cn, tc.key)))
			if err != nil {
				t.Fatal(err)
			}
			got, err := dps.CheckCSR(csr, "dev-1", tc.policy)
			if codeOf(err) != tc.code || got != tc.want {
				t.Fatalf("CheckCSR = %q, %v (code %d); want %q, code %d", got, err, codeOf(err), tc.want, tc.code)
			}
		})
	}
}

func TestIssuesCertificates(t *testing.T) {
	for v, want := range map[string]bool{
		"2025-07-01-preview": true, "2026-04-01": true, "2026-11-01": true, "2026-11-02-preview": true,
		"2021-06-01": false, "2019-03-31": false, "2025-06-30": false, "": false, "2025": false,
	} {
		if got := dps.IssuesCertificates(v); got != want {
			t.Errorf("IssuesCertificates(%q) = %v, want %v", v, got, want)
		}
	}
}

// FuzzCSR: the CSR decoding path never panics, refuses with a CSR code,
// and what it accepts is a request whose signature verifies and that
// CheckCSR can judge.
func FuzzCSR(f *testing.F) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrDER(f, "dev-1", p256)
	f.Add(b64(good))
	f.Add(b64(good[:len(good)/2]))
	f.Add(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})))
	f.Add("")
	f.Add("MIIB")
	f.Fuzz(func(t *testing.T, s string) {
		csr, err := dps.ParseCSR(s)
		if err != nil {
			if codeOf(err) != dps.CodeCSRInvalid || dps.KindOf(err) != dps.KindInvalid {
				t.Fatalf("refusal %v is not a CSR error", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
		if _, err := x509.ParseCertificateRequest(csr.Raw); err != nil {
			t.Fatalf("accepted bytes that do not parse again: %v", err)
		}
		if _, err := dps.CheckCSR(csr, "dev-1", dps.CredentialPolicy{}); err != nil {
			if c := codeOf(err); c != dps.CodeCSRSubjectMismatch && c != dps.CodeCSRKeyNotAllowed {
				t.Fatalf("CheckCSR refused with %v", err)
			}
		}
	})
}
