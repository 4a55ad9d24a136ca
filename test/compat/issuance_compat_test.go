//go:build compat

package compat

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/wire"
)

// csrDevice is the device of the certificate issuance scenarios.
const csrDevice = "csr-node-dev"

// issueForNode sets up certificate issuance on the running dpsd (an
// issuing CA, a credential policy, an individual enrollment naming it),
// registers csrDevice with a CSR through the Go device client (HTTPS),
// checks the chain against the CA, connects to hub A with the certificate
// and renews it over MQTT ($iothub/credentials, 202 then 200). It writes
// both certificates and their keys to x509Dir as csr-dev-1 and csr-dev-2
// (.pem and -key.pem) for run.js.
func issueForNode(t *testing.T, ownerKey, caFile, x509Dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tc := &tls.Config{RootCAs: roots}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 30 * time.Second}
	svc, err := client.FromConnectionString("HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" + ownerKey)
	if err != nil {
		t.Fatal(err)
	}
	svc.Endpoint, svc.HTTP = "https://localhost", hc
	ca, err := svc.PutIssuingCA(ctx, wire.IssuingCA{Name: "compat-ca", KeyType: "ecdsa-p384"}, "*")
	if err != nil {
		t.Fatalf("issuing CA: %v", err)
	}
	if _, err := svc.PutCredentialPolicy(ctx, wire.CredentialPolicy{Name: "compat-30d", CertificateAuthorityName: "compat-ca", ValidityDays: 30}, "*"); err != nil {
		t.Fatalf("credential policy: %v", err)
	}
	e, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: csrDevice, IoTHubs: []string{hubA},
		Attestation:   &wire.AttestationMechanism{Type: "symmetricKey", SymmetricKey: &wire.SymmetricKeyAttestation{}},
		IssuanceNames: wire.IssuanceNames{CertificatePolicyName: "compat-30d"}}, "*")
	if err != nil {
		t.Fatalf("enrollment: %v", err)
	}
	caRoots := x509.NewCertPool()
	if !caRoots.AppendCertsFromPEM([]byte(ca.Certificate)) {
		t.Fatal("the issuing CA's answer has no certificate")
	}
	write := func(name string, cert tls.Certificate, key *ecdsa.PrivateKey) {
		var chain []byte
		for _, der := range cert.Certificate {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: caRoots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("%s does not verify against the issuing CA: %v", name, err)
		}
		if os.WriteFile(filepath.Join(x509Dir, name+".pem"), chain, 0o600) != nil ||
			os.WriteFile(filepath.Join(x509Dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600) != nil {
			t.Fatal("write the issued certificate")
		}
	}
	key1, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr1, err := device.NewCSR(key1, csrDevice)
	if err != nil {
		t.Fatal(err)
	}
	dc := &device.Client{Endpoint: "https://localhost", IDScope: "0ne00C0MPAT", HTTPClient: hc, PollInterval: 200 * time.Millisecond}
	res, err := dc.Register(ctx, csrDevice, device.SymmetricKey(e.Attestation.SymmetricKey.PrimaryKey), nil, device.WithCSR(csr1))
	if err != nil {
		t.Fatalf("register with a CSR: %v", err)
	}
	if res.Status != "assigned" || res.RegistrationState.AssignedHub != hubA {
		t.Fatalf("register with a CSR: %+v %+v", res, res.RegistrationState)
	}
	cert1, err := res.RegistrationState.TLSCertificate(key1)
	if err != nil {
		t.Fatal(err)
	}
	write("csr-dev-1", cert1, key1)
	h, err := device.ConnectHub(ctx, device.HubOptions{Host: hubA, DeviceID: csrDevice, Credential: device.Certificate(cert1), TLS: tc})
	if err != nil {
		t.Fatalf("connect to %s with the issued certificate: %v", hubA, err)
	}
	defer h.Close()
	key2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr2, err := device.NewCSR(key2, csrDevice)
	if err != nil {
		t.Fatal(err)
	}
	chain2, err := h.RenewCertificate(ctx, csr2)
	if err != nil {
		t.Fatalf("renew over MQTT: %v", err)
	}
	cert2, err := device.TLSCertificateFromChain(chain2, key2)
	if err != nil {
		t.Fatal(err)
	}
	write("csr-dev-2", cert2, key2)
	t.Logf("certificate issuance: %s registered with a CSR (serial %X) and renewed it (serial %X)", csrDevice, cert1.Leaf.SerialNumber, cert2.Leaf.SerialNumber)
}
