package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/wire"
)

// testKEK is the key encryption key of the issuance tests.
var testKEK = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// issuanceServer starts dpsd with certificate issuance: a built-in hub
// "localhost", an issuing CA "devices-ca" (ECDSA P-256) and a credential
// policy "devices-30d" with it.
func issuanceServer(t *testing.T) (*server, *http.Client, *x509.Certificate) {
	t.Helper()
	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey)+
		"linkedHubs:\n  - { hostName: localhost }\nissuance: { keyEncryptionKey: \""+testKEK+"\" }\n")
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	ctx := context.Background()
	ca, err := svc.PutIssuingCA(ctx, wire.IssuingCA{Name: "devices-ca", KeyType: "ecdsa-p256"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PutCredentialPolicy(ctx, wire.CredentialPolicy{Name: "devices-30d", CertificateAuthorityName: "devices-ca", ValidityDays: 30}, ""); err != nil {
		t.Fatal(err)
	}
	cert, err := dps.ParseCertificate(ca.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	return s, hc, cert
}

func newDeviceKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCSR(t *testing.T, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := device.NewCSR(key, cn)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestCertificateIssuance is the end-to-end of certificate issuance: a
// symmetric-key device registers with a CSR (HTTPS and MQTT), gets a chain
// that verifies against the issuing CA, connects to its built-in hub with
// the certificate (its identity is certificateAuthority: its key no longer
// works), renews it over MQTT (202 then 200), connects with the renewed
// one; once the device is disabled its certificates are refused — also
// after it is enabled again, as they were revoked — and the CA's CRL,
// fetched without a token, lists them.
func TestCertificateIssuance(t *testing.T) {
	ctx := context.Background()
	s, hc, caCert := issuanceServer(t)
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	g, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "csr-group", Attestation: symmetric(),
		IssuanceNames: wire.IssuanceNames{CertificateAuthorityName: "devices-ca", CertificatePolicyName: "devices-30d"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if g.CertificatePolicyName != "devices-30d" || g.CredentialPolicyName != "devices-30d" || g.CertificateAuthorityName != "devices-ca" {
		t.Errorf("group answered issuance names %+v", g.IssuanceNames)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	tc := s.clientTLS(t)

	for _, transport := range []string{"https", "mqtt"} {
		t.Run(transport, func(t *testing.T) {
			regID := "csr-dev-" + transport
			devKey, _ := device.DeriveKey(g.Attestation.SymmetricKey.PrimaryKey, regID)
			c := s.client(hc)
			if transport == "mqtt" {
				c.Transport, c.MQTTAddress, c.TLSConfig = "mqtt", s.mqtt.Addr().String(), tc
			}
			key := newDeviceKey(t)
			res, err := c.Register(ctx, regID, device.SymmetricKey(devKey), nil, device.WithCSR(mustCSR(t, key, regID)))
			if err != nil {
				t.Fatal(err)
			}
			rs := res.RegistrationState
			if res.Status != "assigned" || rs.AssignedHub != "localhost" || len(rs.IssuedCertificateChain) != 2 {
				t.Fatalf("registration %+v / %+v: want assigned with a chain of 2", res, rs)
			}
			certs, err := rs.IssuedCertificates()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("the issued certificate does not verify against the issuing CA: %v", err)
			}
			if certs[0].Subject.CommonName != regID || !certs[1].Equal(caCert) {
				t.Errorf("leaf CN %q; chain ends with %q", certs[0].Subject.CommonName, certs[1].Subject.CommonName)
			}
			cert, err := rs.TLSCertificate(key)
			if err != nil {
				t.Fatal(err)
			}
			connect := func(cred device.Credential) (*device.Hub, error) {
				return device.ConnectHub(ctx, device.HubOptions{Host: "localhost", DeviceID: regID, Credential: cred, Address: s.mqtt.Addr().String(), TLS: tc})
			}
			h, err := connect(device.Certificate(cert))
			if err != nil {
				t.Fatalf("connect with the issued certificate: %v", err)
			}
			if _, err := h.Twin(ctx); err != nil {
				t.Fatalf("twin over the certificate's connection: %v", err)
			}
			if hc, err := connect(device.SymmetricKey(devKey)); err == nil {
				hc.Close()
				t.Error("the device connected with its key: its identity should be certificateAuthority")
			}

			// Renewal over MQTT: a new key, a new certificate.
			key2 := newDeviceKey(t)
			chain2, err := h.RenewCertificate(ctx, mustCSR(t, key2, regID))
			if err != nil {
				t.Fatalf("renewal: %v", err)
			}
			if _, err := h.Twin(ctx); err != nil {
				t.Errorf("the connection ended with the renewal: %v", err)
			}
			if _, err := h.RenewCertificate(ctx, mustCSR(t, key2, "someone-else")); !isHubError(err, 400, dps.CodeCredentialOperationFailed) {
				t.Errorf("renewal for another subject: %v, want 400 400040", err)
			}
			h.Close()
			cert2, err := device.TLSCertificateFromChain(chain2, key2)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert2.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || cert2.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) == 0 {
				t.Fatalf("renewed certificate: %v (same serial: %v)", err, cert2.Leaf.SerialNumber.Cmp(cert.Leaf.SerialNumber) == 0)
			}
			h2, err := connect(device.Certificate(cert2))
			if err != nil {
				t.Fatalf("connect with the renewed certificate: %v", err)
			}
			h2.Close()

			// Disabled: its certificates are revoked, so refused as not
			// authorized (5) — and still once it is enabled again.
			setStatus := func(status dps.DeviceStatus) {
				t.Helper()
				d, err := s.hub.GetDevice(ctx, "localhost", regID)
				if err != nil {
					t.Fatal(err)
				}
				d.Status = status
				if _, err := s.hub.UpdateDevice(ctx, "localhost", iothub.Device{DeviceID: d.DeviceID, Status: status, Auth: d.Auth, IoTEdge: d.IoTEdge}, "*"); err != nil {
					t.Fatal(err)
				}
			}
			setStatus(dps.DeviceDisabled)
			if _, err := connect(device.Certificate(cert2)); !refusedWith(err, 5) {
				t.Errorf("a disabled device connected: %v", err)
			}
			setStatus(dps.DeviceEnabled)
			for _, c := range []tls.Certificate{cert, cert2} {
				if _, err := connect(device.Certificate(c)); !refusedWith(err, 5) {
					t.Errorf("a revoked certificate connected: %v", err)
				}
			}
			crl := fetchCRL(t, hc, s, caCert)
			for _, c := range []tls.Certificate{cert, cert2} {
				if !crlLists(crl, c.Leaf) {
					t.Errorf("the CRL does not list serial %s", dps.SerialText(c.Leaf))
				}
			}

			// Registering again with a new CSR issues a new certificate,
			// which works.
			key3 := newDeviceKey(t)
			res, err = c.Register(ctx, regID, device.SymmetricKey(devKey), nil, device.WithCSR(mustCSR(t, key3, regID)))
			if err != nil {
				t.Fatal(err)
			}
			cert3, err := res.RegistrationState.TLSCertificate(key3)
			if err != nil {
				t.Fatal(err)
			}
			h3, err := connect(device.Certificate(cert3))
			if err != nil {
				t.Fatalf("connect with the re-registration's certificate: %v", err)
			}
			h3.Close()
		})
	}
}

func isHubError(err error, status, code int) bool {
	he, ok := errors.AsType[*device.HubError](err)
	return ok && he.Status == status && he.ErrorCode == code
}

func refusedWith(err error, code byte) bool {
	r, ok := errors.AsType[*device.ConnectRefusedError](err)
	return ok && r.Code == code
}

func fetchCRL(t *testing.T, hc *http.Client, s *server, ca *x509.Certificate) *x509.RevocationList {
	t.Helper()
	resp, err := hc.Get(s.endpoint() + "/certificateAuthorities/devices-ca/crl") // no token
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("CRL: HTTP %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), der)
	}
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CheckSignatureFrom(ca); err != nil {
		t.Fatalf("the CRL is not signed by the CA: %v", err)
	}
	return l
}

func crlLists(l *x509.RevocationList, c *x509.Certificate) bool {
	for _, e := range l.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

// TestCertificateIssuanceRefusals: a register request whose CSR cannot be
// honoured is refused at once with a DPS error (never assigned without
// the certificate it asked for): a CSR that is garbage, PEM, wrongly
// signed, for another registration ID or with a weak or disallowed key, on
// an enrollment without a policy, or with an api-version that has no csr.
// An old api-version's poll answer has no issuedCertificateChain.
func TestCertificateIssuanceRefusals(t *testing.T) {
	ctx := context.Background()
	s, hc, _ := issuanceServer(t)
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)
	if _, err := svc.PutCredentialPolicy(ctx, wire.CredentialPolicy{Name: "ec-only", CertificateAuthorityName: "devices-ca", ValidityDays: 7, KeyTypes: []string{"ecdsa-p256"}}, ""); err != nil {
		t.Fatal(err)
	}
	enroll := func(id, policy string) string {
		t.Helper()
		e, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: id, Attestation: symmetric(), IssuanceNames: wire.IssuanceNames{CredentialPolicyName: policy}}, "")
		if err != nil {
			t.Fatal(err)
		}
		return e.Attestation.SymmetricKey.PrimaryKey
	}
	withPolicy, ecOnly, noPolicy := enroll("csr-ref-1", "devices-30d"), enroll("csr-ref-ec", "ec-only"), enroll("csr-ref-none", "")
	// The CAs and policies need ServiceConfig; the key of a CA is never shown.
	reader := serviceClient(t, s, hc, "reader", readerKey)
	if _, err := reader.IssuingCAs(ctx); err == nil {
		t.Error("a reader without ServiceConfig listed the issuing CAs")
	}
	if _, err := reader.PutCredentialPolicy(ctx, wire.CredentialPolicy{Name: "sneaky", CertificateAuthorityName: "devices-ca"}, ""); err == nil {
		t.Error("a reader without ServiceConfig created a policy")
	}
	cas, err := svc.IssuingCAs(ctx)
	if err != nil || len(cas) != 1 || cas[0].Key != "" || !strings.Contains(cas[0].Certificate, "BEGIN CERTIFICATE") {
		t.Errorf("issuing CAs: %+v, %v", cas, err)
	}
	// Names dps does not have (Azure Device Registry's, in an enrollment
	// copied from Azure) are kept and echoed; a CSR on them is refused.
	adr, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "csr-ref-adr", Attestation: symmetric(), IssuanceNames: wire.IssuanceNames{CredentialPolicyName: "ADR-Policy"}}, "")
	if err != nil || adr.CredentialPolicyName != "ADR-Policy" || adr.CertificatePolicyName != "ADR-Policy" {
		t.Fatalf("enrollment naming an Azure Device Registry policy: %+v, %v", adr.IssuanceNames, err)
	}
	otherCA, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "csr-ref-ca", Attestation: symmetric(), IssuanceNames: wire.IssuanceNames{CertificateAuthorityName: "other-ca", CertificatePolicyName: "devices-30d"}}, "")
	if err != nil || otherCA.CertificateAuthorityName != "other-ca" || otherCA.CertificatePolicyName != "devices-30d" {
		t.Fatalf("enrollment naming another CA: %+v, %v", otherCA.IssuanceNames, err)
	}
	if got, err := svc.Enrollment(ctx, "csr-ref-ca"); err != nil || got.IssuanceNames != otherCA.IssuanceNames {
		t.Errorf("read back: %+v, %v", got.IssuanceNames, err)
	}

	key := newDeviceKey(t)
	good := mustCSR(t, key, "csr-ref-1")
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-4] ^= 0xff
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	pemCSR := "-----BEGIN CERTIFICATE REQUEST-----\n" + base64.StdEncoding.EncodeToString(good) + "\n-----END CERTIFICATE REQUEST-----\n"
	raw := func(id, key, apiVersion, csr string) rawResponse {
		body, _ := json.Marshal(map[string]string{"registrationId": id, "csr": csr})
		tok := sasFor(t, s.idScope+"/registrations/"+id, key)
		return do(t, hc, http.MethodPut, s.endpoint()+"/"+s.idScope+"/registrations/"+id+"/register?api-version="+apiVersion, tok, body)
	}
	b64 := base64.StdEncoding.EncodeToString
	for _, tc := range []struct {
		name, id, key, apiVersion, csr string
		code                           int
	}{
		{"fail/garbage", "csr-ref-1", withPolicy, "2026-11-01", "garbage!", dps.CodeCSRInvalid},
		{"fail/pem", "csr-ref-1", withPolicy, "2026-11-01", pemCSR, dps.CodeCSRInvalid},
		{"fail/wrong-signature", "csr-ref-1", withPolicy, "2026-11-01", b64(tampered), dps.CodeCSRInvalid},
		{"fail/cn-mismatch", "csr-ref-1", withPolicy, "2026-11-01", b64(mustCSR(t, key, "someone-else")), dps.CodeCSRSubjectMismatch},
		{"fail/weak-key", "csr-ref-1", withPolicy, "2026-11-01", b64(mustCSR(t, weak, "csr-ref-1")), dps.CodeCSRKeyNotAllowed},
		{"fail/key-not-allowed", "csr-ref-ec", ecOnly, "2026-11-01", b64(mustCSR(t, rsa2048, "csr-ref-ec")), dps.CodeCSRKeyNotAllowed},
		{"fail/no-policy", "csr-ref-none", noPolicy, "2026-11-01", b64(mustCSR(t, key, "csr-ref-none")), dps.CodeIssuanceNotEnabled},
		{"fail/policy-not-here", "csr-ref-adr", adr.Attestation.SymmetricKey.PrimaryKey, "2026-11-01", b64(mustCSR(t, key, "csr-ref-adr")), dps.CodeIssuanceNotEnabled},
		{"fail/other-ca", "csr-ref-ca", otherCA.Attestation.SymmetricKey.PrimaryKey, "2026-11-01", b64(mustCSR(t, key, "csr-ref-ca")), dps.CodeIssuanceNotEnabled},
		{"fail/old-api-version", "csr-ref-1", withPolicy, "2021-06-01", b64(good), dps.CodeIssuanceNotEnabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := raw(tc.id, tc.key, tc.apiVersion, tc.csr)
			var e wire.ErrorBody
			json.Unmarshal([]byte(r.raw), &e)
			if r.status != http.StatusBadRequest || e.ErrorCode != tc.code || e.Message == "" {
				t.Fatalf("HTTP %d %s, want 400 with %d", r.status, r.raw, tc.code)
			}
			if n := countIssued(t, s); n != 0 {
				t.Errorf("%d certificates issued", n)
			}
		})
	}

	// An unauthenticated request is a 401, whatever its csr and api-version.
	if r := raw("csr-ref-1", noPolicy, "2021-06-01", b64(good)); r.status != http.StatusUnauthorized {
		t.Errorf("csr with an old api-version and another device's key: HTTP %d %s, want 401", r.status, r.raw)
	}

	// The same device with a good CSR gets its chain, but not in an
	// answer to an api-version without issuedCertificateChain.
	r := raw("csr-ref-1", withPolicy, "2025-07-01-preview", b64(good))
	var op wire.RegistrationOperationStatus
	if err := json.Unmarshal([]byte(r.raw), &op); err != nil || r.status != http.StatusAccepted {
		t.Fatalf("register: HTTP %d %s", r.status, r.raw)
	}
	poll := func(apiVersion string) wire.RegistrationOperationStatus {
		t.Helper()
		var out wire.RegistrationOperationStatus
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			p := do(t, hc, http.MethodGet, s.endpoint()+"/"+s.idScope+"/registrations/csr-ref-1/operations/"+op.OperationID+"?api-version="+apiVersion,
				sasFor(t, s.idScope+"/registrations/csr-ref-1", withPolicy), nil)
			json.Unmarshal([]byte(p.raw), &out)
			if out.Status == dps.StatusAssigned {
				return out
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("not assigned: %+v", out)
		return out
	}
	if got := poll("2025-07-01-preview"); len(got.RegistrationState.IssuedCertificateChain) != 2 {
		t.Errorf("2025-07-01-preview poll: chain of %d", len(got.RegistrationState.IssuedCertificateChain))
	}
	if got := poll("2021-06-01"); got.RegistrationState.IssuedCertificateChain != nil {
		t.Errorf("2021-06-01 poll carries a chain")
	}
	if n := countIssued(t, s); n != 1 {
		t.Errorf("%d certificates issued for one registration", n)
	}
	// The status lookup has no chain, and refuses a csr.
	lookup := do(t, hc, http.MethodPost, s.endpoint()+"/"+s.idScope+"/registrations/csr-ref-1?api-version=2026-11-01",
		sasFor(t, s.idScope+"/registrations/csr-ref-1", withPolicy), []byte(`{"registrationId":"csr-ref-1"}`))
	if lookup.status != http.StatusOK || strings.Contains(lookup.raw, "issuedCertificateChain") {
		t.Errorf("status lookup: HTTP %d %s", lookup.status, lookup.raw)
	}
}

func sasFor(t *testing.T, resource, key string) string {
	t.Helper()
	tok, err := device.SymmetricKey(key).Authorization(resource, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func countIssued(t *testing.T, s *server) int {
	t.Helper()
	return countRows(t, s.cfg.DataDir, "issued_certificates")
}

// TestIssuanceKeyAtStartup: dpsd does not start on a store that holds
// issuing CAs without the key encryption key that sealed their keys (none,
// or another one); an issuance.keyEncryptionKey that is not 32 bytes of
// base64 is a configuration error naming the key.
func TestIssuanceKeyAtStartup(t *testing.T) {
	s, _, _ := issuanceServer(t)
	dir := s.cfg.DataDir
	s.Close(context.Background())
	other := base64.StdEncoding.EncodeToString([]byte("another key of thirty-two bytes!"))
	for name, extra := range map[string]string{"none": "", "another": "issuance: { keyEncryptionKey: \"" + other + "\" }\n"} {
		cfg, err := loadConfig(dpstest.WriteFile(t, "dpsd.yaml", "idScope: "+testScope+"\ndataDir: "+dir+
			"\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\nlinkedHubs:\n  - { hostName: localhost }\n"+extra), func(string) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		if s, err := start(context.Background(), cfg, io.Discard); err == nil || !strings.Contains(err.Error(), "issuing CA") {
			if err == nil {
				s.Close(context.Background())
			}
			t.Errorf("%s key: start = %v, want a refusal naming the issuing CAs", name, err)
		}
	}
	// The right key, from the environment.
	cfg, err := loadConfig(dpstest.WriteFile(t, "dpsd.yaml", "idScope: "+testScope+"\ndataDir: "+dir+
		"\nlisten: { https: \"127.0.0.1:0\", mqtt: \"127.0.0.1:0\", admin: \"\" }\nlinkedHubs:\n  - { hostName: localhost }\n"),
		func(k string) string {
			if k == "DPSD_ISSUANCE_KEYENCRYPTIONKEY" {
				return testKEK
			}
			return ""
		})
	if err != nil {
		t.Fatal(err)
	}
	s, err = start(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("start with the key from the environment: %v", err)
	}
	s.Close(context.Background())
	_, err = loadConfig(dpstest.WriteFile(t, "dpsd.yaml", "issuance: { keyEncryptionKey: \"c2hvcnQ=\" }\n"), func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "issuance.keyEncryptionKey") {
		t.Errorf("a 5-byte key: %v", err)
	}
}
