package registration_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/x509attest"
)

func x509Group(id string, x dps.X509Attestation) dps.Group {
	return dps.Group{ID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &x},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}}
}

func signing(c *dpstest.CertKey) dps.X509Attestation {
	return dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: c.PEM()}}
}

// TestX509Matching: which enrollment an X.509 device's chain matches. An
// individual enrollment for the registration ID decides alone; otherwise
// the group whose certificate is closest to the leaf wins, whatever the
// order of the groups; a CA reference counts only once verified; a revoked
// link refuses the device.
func TestX509Matching(t *testing.T) {
	root := dpstest.NewRoot(t, "Match Root")
	inter := root.Intermediate(t, "Match Inter")
	revokedInter := root.Intermediate(t, "Match Revoked Inter")
	leaf := inter.Leaf(t, "x-dev")
	underRevoked := revokedInter.Leaf(t, "x-dev")
	other := dpstest.SelfSigned(t, "x-dev")
	crlFile := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(crlFile, root.CRL(t, revokedInter), 0o600); err != nil {
		t.Fatal(err)
	}
	crls, err := x509attest.LoadCRLs([]string{crlFile})
	if err != nil {
		t.Fatal(err)
	}
	chain := func(cs ...*dpstest.CertKey) []*x509.Certificate {
		var out []*x509.Certificate
		for _, c := range cs {
			out = append(out, c.Cert)
		}
		return out
	}
	individual := func(c *dpstest.CertKey) *dps.Enrollment {
		return &dps.Enrollment{RegistrationID: "x-dev", Settings: dps.Settings{
			Attestation: dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{
				ClientCertificates: &dps.X509Certificates{Primary: other.PEM(), Secondary: c.PEM()}}},
			ProvisioningStatus: dps.ProvisioningEnabled,
		}}
	}
	caRef := dps.X509Attestation{CAReferences: &dps.X509CAReferences{Primary: "the-ca"}}

	tests := []struct {
		name       string
		enrollment *dps.Enrollment
		groups     []dps.Group
		caVerified bool
		chain      []*x509.Certificate
		wantGroup  string // "" with wantSigner "": the individual enrollment
		wantSigner *dpstest.CertKey
		refused    bool
	}{
		{name: "intermediate-group-first", groups: []dps.Group{x509Group("a-inter", signing(inter)), x509Group("z-root", signing(root))},
			chain: chain(leaf, inter), wantGroup: "a-inter", wantSigner: inter},
		{name: "intermediate-group-last", groups: []dps.Group{x509Group("a-root", signing(root)), x509Group("z-inter", signing(inter))},
			chain: chain(leaf, inter), wantGroup: "z-inter", wantSigner: inter},
		{name: "root-group-only", groups: []dps.Group{x509Group("root", signing(root))},
			chain: chain(leaf, inter), wantGroup: "root", wantSigner: root},
		{name: "secondary-signing-certificate", groups: []dps.Group{x509Group("root", dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: other.PEM(), Secondary: root.PEM()}})},
			chain: chain(leaf, inter), wantGroup: "root", wantSigner: root},
		{name: "verified-ca-reference", groups: []dps.Group{x509Group("ca", caRef)}, caVerified: true,
			chain: chain(leaf, inter), wantGroup: "ca", wantSigner: root},
		{name: "unverified-ca-reference", groups: []dps.Group{x509Group("ca", caRef)},
			chain: chain(leaf, inter), refused: true},
		{name: "intermediate-not-sent", groups: []dps.Group{x509Group("root", signing(root))},
			chain: chain(leaf), refused: true},
		{name: "revoked-intermediate", groups: []dps.Group{x509Group("root", signing(root))},
			chain: chain(underRevoked, revokedInter), refused: true},
		{name: "individual-enrollment-wins", enrollment: individual(leaf), groups: []dps.Group{x509Group("root", signing(root))},
			chain: chain(leaf, inter)},
		// An individual enrollment with another certificate refuses the
		// device, even though a group would accept its chain.
		{name: "individual-enrollment-other-certificate", enrollment: individual(dpstest.SelfSigned(t, "x-dev")), groups: []dps.Group{x509Group("root", signing(root))},
			chain: chain(leaf, inter), refused: true},
		{name: "no-group", chain: chain(leaf, inter), refused: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			st := newMemStore()
			st.groups = tt.groups
			st.cas["the-ca"] = dps.CACertificate{Name: "the-ca", Certificate: root.PEM(), Verified: tt.caVerified}
			if tt.enrollment != nil {
				st.enrollments[dps.FoldID(tt.enrollment.RegistrationID)] = *tt.enrollment
			}
			s := newBubbleService(st, bubbleAlloc{}, func(o *registration.Options) { o.Attestors = attestors(st, mechanisms{crls: crls}) })
			t.Cleanup(func() { s.Close() })
			op, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: "x-dev", Credential: dps.Credential{Certificates: tt.chain}})
			if tt.refused {
				if dps.KindOf(err) != dps.KindUnauthorized {
					t.Fatalf("Register = %+v, %v; want unauthorized", op, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			if op.EnrollmentGroupID != tt.wantGroup || op.Status != dps.StatusAssigned {
				t.Fatalf("operation group %q status %v, want group %q assigned", op.EnrollmentGroupID, op.Status, tt.wantGroup)
			}
			if op.Proof.X509 == nil || op.Proof.X509.Certificate.SHA256Thumbprint != dps.InfoOf(tt.chain[0]).SHA256Thumbprint {
				t.Fatalf("X509 proof = %+v, want the leaf's", op.Proof.X509)
			}
			switch {
			case tt.wantSigner == nil && op.Proof.X509.Signing != nil:
				t.Errorf("individual enrollment has a signing certificate %+v", op.Proof.X509.Signing)
			case tt.wantSigner != nil && (op.Proof.X509.Signing == nil || op.Proof.X509.Signing.SHA256Thumbprint != dps.InfoOf(tt.wantSigner.Cert).SHA256Thumbprint):
				t.Errorf("signing certificate = %+v, want %q", op.Proof.X509.Signing, tt.wantSigner.Cert.Subject.CommonName)
			}
		})
	}
}
