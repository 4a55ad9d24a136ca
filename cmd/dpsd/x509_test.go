package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/wire"
)

// x509Client returns a device client for transport that presents cert.
func (s *server) x509Client(t *testing.T, transport string, cert tls.Certificate) *device.Client {
	tc := s.clientTLS(t)
	tc.Certificates = []tls.Certificate{cert}
	c := &device.Client{Endpoint: s.endpoint(), IDScope: s.idScope, PollInterval: 20 * time.Millisecond, Transport: transport}
	switch transport {
	case "mqtt":
		c.MQTTAddress, c.TLSConfig = s.mqtt.Addr().String(), tc
	case "mqttws": // the HTTPS endpoint, the certificate in its handshake
		c.TLSConfig = tc
	default:
		c.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	}
	return c
}

func x509Att(which string, certs ...string) *wire.AttestationMechanism {
	cs := &wire.X509Certificates{Primary: &wire.X509CertificateWithInfo{Certificate: certs[0]}}
	if len(certs) > 1 {
		cs.Secondary = &wire.X509CertificateWithInfo{Certificate: certs[1]}
	}
	x := &wire.X509Attestation{}
	if which == "client" {
		x.ClientCertificates = cs
	} else {
		x.SigningCertificates = cs
	}
	return &wire.AttestationMechanism{Type: "x509", X509: x}
}

func TestX509Attestation(t *testing.T) {
	ctx := context.Background()
	root := dpstest.NewRoot(t, "Test Root")
	inter := root.Intermediate(t, "Test Intermediate")
	inter2 := root.Intermediate(t, "Unenrolled Intermediate")
	other := dpstest.NewRoot(t, "Other Root")
	heldCA := dpstest.NewRoot(t, "Held CA")
	revokedLeaf := inter.Leaf(t, "x509-crl-dev")
	crlFile := filepath.Join(t.TempDir(), "inter.crl")
	if err := os.WriteFile(crlFile, inter.CRL(t, revokedLeaf), 0o600); err != nil {
		t.Fatal(err)
	}

	s, hc := startServer(t, t.TempDir(), fmt.Sprintf(policiesYAML, ownerKey, readerKey)+"x509: { crlFiles: ["+crlFile+"] }\n")
	svc := serviceClient(t, s, hc, "provisioningserviceowner", ownerKey)

	indLeaf := dpstest.SelfSigned(t, "x509-ind")
	indSecondary := dpstest.SelfSigned(t, "x509-ind")
	if _, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "x509-ind", Attestation: x509Att("client", indLeaf.PEM(), indSecondary.PEM())}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "grp-inter", Attestation: x509Att("signing", inter.PEM())}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "grp-root", Attestation: x509Att("signing", root.PEM())}, ""); err != nil {
		t.Fatal(err)
	}
	// A disabled individual enrollment revokes one device a group would accept.
	blocked := inter.Leaf(t, "x509-blocked")
	if _, err := svc.PutEnrollment(ctx, wire.IndividualEnrollment{RegistrationID: "x509-blocked", Attestation: x509Att("client", blocked.PEM()), ProvisioningStatus: "disabled"}, ""); err != nil {
		t.Fatal(err)
	}

	// caReferences: a CA held by dps, usable once verified.
	if _, err := svc.PutCA(ctx, "held-ca", heldCA.PEM(), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "grp-held", Attestation: &wire.AttestationMechanism{Type: "x509",
		X509: &wire.X509Attestation{CAReferences: &wire.X509CAReferences{Primary: "held-ca"}}}}, ""); err != nil {
		t.Fatal(err)
	}
	_, err := svc.PutGroup(ctx, wire.EnrollmentGroup{EnrollmentGroupID: "grp-missing", Attestation: &wire.AttestationMechanism{Type: "x509",
		X509: &wire.X509Attestation{CAReferences: &wire.X509CAReferences{Primary: "no-such-ca"}}}}, "")
	wantStatus(t, err, 400)

	heldLeaf := heldCA.Leaf(t, "x509-held-dev")
	for _, transport := range []string{"https", "mqtt", "mqttws"} {
		t.Run(transport, func(t *testing.T) {
			register := func(cert tls.Certificate, id string) (*device.Result, error) {
				return s.x509Client(t, transport, cert).Register(ctx, id, nil, map[string]any{"t": transport})
			}
			ok := func(t *testing.T, cert tls.Certificate, id, wantGroup string) *device.Result {
				t.Helper()
				res, err := register(cert, id)
				if err != nil {
					t.Fatalf("register %s: %v", id, err)
				}
				rs := res.RegistrationState
				if res.Status != "assigned" || rs.DeviceID != id || rs.AssignedHub == "" {
					t.Fatalf("%s: %+v / %+v", id, res, rs)
				}
				if rs.X509 == nil || rs.X509.EnrollmentGroupID != wantGroup || len(rs.X509.CertificateInfo) == 0 {
					t.Fatalf("%s: registrationState.x509 = %+v, want group %q", id, rs.X509, wantGroup)
				}
				return res
			}
			refused := func(t *testing.T, cert tls.Certificate, id string) {
				t.Helper()
				_, err := register(cert, id)
				var de *device.Error
				var ce *device.ConnectRefusedError
				switch {
				case transport == "https" && errors.As(err, &de) && de.StatusCode == 401 && de.ErrorCode == 401002:
				case transport != "https" && errors.As(err, &ce):
				default:
					t.Fatalf("%s: err = %v, want 401002 / CONNACK refusal", id, err)
				}
			}

			t.Run("ok/individual-primary", func(t *testing.T) { ok(t, indLeaf.TLS(), "x509-ind", "") })
			t.Run("ok/individual-secondary", func(t *testing.T) { ok(t, indSecondary.TLS(), "x509-ind", "") })
			t.Run("ok/group-via-intermediate", func(t *testing.T) {
				leaf := inter.Leaf(t, "x509-g-"+transport)
				ok(t, leaf.TLS(), "x509-g-"+transport, "grp-inter")
			})
			t.Run("ok/most-specific-group-wins", func(t *testing.T) {
				// The chain verifies to both the intermediate's group and the root's; the intermediate's wins.
				leaf := inter.Leaf(t, "x509-spec-"+transport)
				ok(t, leaf.TLS(inter), "x509-spec-"+transport, "grp-inter")
				regs, _, err := svc.QueryRegistrations(ctx, "grp-inter", 100, "")
				found := false
				for _, r := range regs {
					found = found || r.RegistrationID == "x509-spec-"+transport
				}
				if err != nil || !found {
					t.Errorf("device not listed under grp-inter: %v", err)
				}
			})
			t.Run("ok/group-via-root-with-intermediate-sent", func(t *testing.T) {
				leaf := inter2.Leaf(t, "x509-root-"+transport)
				ok(t, leaf.TLS(inter2), "x509-root-"+transport, "grp-root")
			})
			t.Run("fail/chain-without-intermediate", func(t *testing.T) {
				leaf := inter2.Leaf(t, "x509-noint-"+transport)
				refused(t, leaf.TLS(), "x509-noint-"+transport)
			})
			t.Run("fail/expired", func(t *testing.T) {
				leaf := inter.Leaf(t, "x509-exp-"+transport, dpstest.Validity(time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)))
				refused(t, leaf.TLS(), "x509-exp-"+transport)
			})
			t.Run("fail/not-yet-valid", func(t *testing.T) {
				leaf := inter.Leaf(t, "x509-nyv-"+transport, dpstest.Validity(time.Now().Add(time.Hour), time.Now().Add(48*time.Hour)))
				refused(t, leaf.TLS(), "x509-nyv-"+transport)
			})
			t.Run("fail/wrong-cn", func(t *testing.T) {
				leaf := inter.Leaf(t, "someone-else")
				refused(t, leaf.TLS(), "x509-cn-"+transport)
			})
			t.Run("fail/other-ca", func(t *testing.T) {
				leaf := other.Leaf(t, "x509-other-"+transport)
				refused(t, leaf.TLS(), "x509-other-"+transport)
			})
			t.Run("fail/self-signed-not-enrolled", func(t *testing.T) {
				refused(t, dpstest.SelfSigned(t, "x509-self-"+transport).TLS(), "x509-self-"+transport)
			})
			t.Run("fail/server-auth-only", func(t *testing.T) {
				leaf := inter.Leaf(t, "x509-eku-"+transport, dpstest.ExtKeyUsage(x509.ExtKeyUsageServerAuth))
				refused(t, leaf.TLS(), "x509-eku-"+transport)
			})
			t.Run("fail/other-cert-for-individual", func(t *testing.T) {
				refused(t, dpstest.SelfSigned(t, "x509-ind").TLS(), "x509-ind")
			})
			t.Run("fail/revoked-by-crl", func(t *testing.T) {
				refused(t, revokedLeaf.TLS(), "x509-crl-dev")
			})
			t.Run("fail/unverified-ca-then-verified", func(t *testing.T) {
				if transport == "https" {
					refused(t, heldLeaf.TLS(), "x509-held-dev")
					code, err := svc.GenerateVerificationCode(ctx, "held-ca")
					if err != nil || code.VerificationCode == "" {
						t.Fatalf("code: %+v %v", code, err)
					}
					_, err = svc.VerifyCA(ctx, "held-ca", other.Leaf(t, code.VerificationCode).PEM())
					wantStatus(t, err, 400) // signed by another CA
					_, err = svc.VerifyCA(ctx, "held-ca", heldCA.Leaf(t, "not-the-code").PEM())
					wantStatus(t, err, 400) // wrong CN
					v, err := svc.VerifyCA(ctx, "held-ca", heldCA.Leaf(t, code.VerificationCode).PEM())
					if err != nil || !v.IsVerified {
						t.Fatalf("verify: %+v %v", v, err)
					}
				}
				ok(t, heldLeaf.TLS(), "x509-held-dev", "grp-held")
			})
			t.Run("disabled/individual-revokes-group-device", func(t *testing.T) {
				res, err := register(blocked.TLS(), "x509-blocked")
				if err != nil {
					t.Fatal(err)
				}
				if res.Status != "disabled" {
					t.Fatalf("status = %s, want disabled", res.Status)
				}
			})
		})
	}

	// The registration state carries the X.509 details, all eight members of each info.
	res, err := s.x509Client(t, "https", inter.Leaf(t, "x509-info").TLS()).Register(ctx, "x509-info", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		RegistrationState struct {
			X509 struct {
				CertificateInfo        map[string]any `json:"certificateInfo"`
				EnrollmentGroupID      string         `json:"enrollmentGroupId"`
				SigningCertificateInfo map[string]any `json:"signingCertificateInfo"`
			} `json:"x509"`
		} `json:"registrationState"`
	}
	if _, _, err := s.client(hc).Poll(ctx, "x509-info", res.OperationID, nil); err == nil {
		t.Errorf("a poll without the certificate was answered")
	}
	xc := s.x509Client(t, "https", inter.Leaf(t, "x509-info").TLS())
	resp, err := xc.HTTPClient.Get(s.endpoint() + "/" + s.idScope + "/registrations/x509-info/operations/" + res.OperationID)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := jsonDecode(resp, &raw); err != nil {
		t.Fatal(err)
	}
	x := raw.RegistrationState.X509
	if x.EnrollmentGroupID != "grp-inter" || len(x.CertificateInfo) != 8 || len(x.SigningCertificateInfo) != 8 || x.SigningCertificateInfo["subjectName"] != "CN=Test Intermediate" {
		t.Errorf("registrationState.x509 = %+v", x)
	}
	// As Azure DPS: a group device's identity is selfSigned with its leaf's
	// SHA-256 thumbprint (protocol reference §5.1).
	hd, err := s.store.HubDevice(ctx, res.RegistrationState.AssignedHub, "x509-info")
	if tp := x.CertificateInfo["sha256Thumbprint"]; err != nil || hd.Auth.Type != "selfSigned" || tp == nil ||
		!strings.EqualFold(hd.Auth.PrimaryThumbprint, tp.(string)) || hd.Auth.SecondaryThumbprint != hd.Auth.PrimaryThumbprint {
		t.Errorf("hub device = %+v, %v; want selfSigned with the leaf's SHA-256 thumbprint %v", hd, err, tp)
	}
}
