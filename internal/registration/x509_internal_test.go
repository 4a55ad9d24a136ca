package registration

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
)

// TestX509MatchOwnsItsGroup: the group an X.509 device matched is the
// engine's own copy, not the store's shared cached one, so nothing done
// with the match can change the groups every other request sees.
func TestX509MatchOwnsItsGroup(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	root := dpstest.NewRoot(t, "Match Root")
	dpstest.MustPutGroup(t, db, dps.Group{ID: "x509-grp", Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: root.PEM()}}},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}})
	s := New(Options{IDScope: "0ne0000TEST", Store: db, SingleNode: true})
	leaf := root.Leaf(t, "x509-dev")
	m, err := s.authenticateX509(ctx, "0ne0000TEST", "x509-dev", []*x509.Certificate{leaf.Cert})
	if err != nil || m.group == nil {
		t.Fatalf("authenticateX509 = %+v, %v", m, err)
	}
	m.group.ID, m.group.AllocationPolicy = "changed", dps.AllocationCustom
	groups, err := db.Groups(ctx, dps.AttestationX509)
	if err != nil || len(groups) != 1 {
		t.Fatalf("Groups = %v, %v", groups, err)
	}
	if g := groups[0]; g.ID != "x509-grp" || g.AllocationPolicy != "" {
		t.Errorf("the store's cached group changed through a device's match: ID %q, policy %q", g.ID, g.AllocationPolicy)
	}
}
