package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
)

// TestIssuanceFlow is the README's certificate issuance flow with dpsctl:
// an issuing CA and a credential policy, a group that names the policy, a
// device registered with a CSR whose chain is written to a file and
// verifies against the CA, and the CA's CRL.
func TestIssuanceFlow(t *testing.T) {
	dir := t.TempDir()
	cfg := dpstest.WriteFile(t, "dpsd.yaml", fmt.Sprintf("dataDir: %q\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\nretryAfterSeconds: 1\n"+
		"linkedHubs:\n  - { hostName: localhost }\nissuance: { keyEncryptionKey: \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\" }\n", filepath.Join(dir, "data")))
	p := dpstest.StartDPSD(t, dpstest.BuildDPSD(t), cfg)
	endpoint := "https://" + p.HTTPS
	svc := []string{"--connection-string", p.ConnectionString, "--endpoint", endpoint, "--ca-file", p.CAFile}
	run := func(args ...string) string {
		t.Helper()
		out, err := dpsctl(t, append(args, svc...)...)
		if err != nil {
			t.Fatalf("dpsctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out := run("issuance", "ca", "create", "cli-ca", "--key-type", "ecdsa-p384"); !strings.Contains(out, "cli-ca") || !strings.Contains(out, "ecdsa-p384") || !strings.Contains(out, "CN=cli-ca") {
		t.Errorf("ca create:\n%s", out)
	}
	if out := run("issuance", "policy", "create", "cli-30d", "--ca", "cli-ca", "--validity-days", "30", "--key-type", "ecdsa-p256"); !strings.Contains(out, "cli-30d") || !strings.Contains(out, "ecdsa-p256") {
		t.Errorf("policy create:\n%s", out)
	}
	if _, err := dpsctl(t, append([]string{"issuance", "policy", "create", "cli-5d", "--ca", "cli-ca", "--validity-days", "5"}, svc...)...); dps.KindOf(err) != dps.KindInvalid {
		t.Errorf("a 5-day policy: %v", err)
	}
	if out := run("issuance", "policy", "list"); !strings.Contains(out, "cli-30d") {
		t.Errorf("policy list:\n%s", out)
	}
	out := run("group", "create", "cli-csr", "--credential-policy", "cli-30d", "--show-keys", "-o", "json")
	var g struct {
		Attestation struct {
			SymmetricKey struct{ PrimaryKey string } `json:"symmetricKey"`
		} `json:"attestation"`
		CertificatePolicyName string `json:"certificatePolicyName"`
	}
	if err := json.Unmarshal([]byte(out), &g); err != nil || g.CertificatePolicyName != "cli-30d" {
		t.Fatalf("group create: %v\n%s", err, out)
	}
	keyFile, chainFile := filepath.Join(dir, "dev-key.pem"), filepath.Join(dir, "dev-chain.pem")
	out, err := dpsctl(t, "register", "--endpoint", endpoint, "--ca-file", p.CAFile, "--id-scope", p.Scope, "--registration-id", "cli-csr-1",
		"--group-key", g.Attestation.SymmetricKey.PrimaryKey, "--csr-key", keyFile, "--cert-out", chainFile)
	if err != nil || !strings.Contains(out, `"issuedCertificateChain"`) {
		t.Fatalf("register with a CSR: %v\n%s", err, out)
	}
	chainPEM, err := os.ReadFile(chainFile)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(run("issuance", "ca", "show", "cli-ca", "--pem"))) {
		t.Fatal("ca show --pem printed no certificate")
	}
	if len(chain) != 2 || chain[0].Subject.CommonName != "cli-csr-1" {
		t.Fatalf("chain file holds %d certificates", len(chain))
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the issued certificate does not verify against the CA: %v", err)
	}
	// The same key file again: a new certificate for the same key.
	if _, err := dpsctl(t, "register", "--endpoint", endpoint, "--ca-file", p.CAFile, "--id-scope", p.Scope, "--registration-id", "cli-csr-1",
		"--group-key", g.Attestation.SymmetricKey.PrimaryKey, "--csr-key", keyFile); err != nil {
		t.Errorf("register again with the key file: %v", err)
	}
	if _, err := dpsctl(t, append([]string{"issuance", "ca", "delete", "cli-ca"}, svc...)...); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("delete of a CA a policy uses: %v", err)
	}
	crlFile := filepath.Join(dir, "cli-ca.crl")
	run("issuance", "ca", "crl", "cli-ca", "--out", crlFile)
	der, err := os.ReadFile(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := x509.ParseRevocationList(der); err != nil || len(l.RevokedCertificateEntries) != 0 {
		t.Errorf("CRL: %v", err)
	}
}
