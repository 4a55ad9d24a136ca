package x509attest_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/x509attest"
)

const scope = "0ne0000TEST"

func signingGroup(id string, ca *dpstest.CertKey) dps.Group {
	return dps.Group{ID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{SigningCertificates: &dps.X509Certificates{Primary: ca.PEM()}}},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}}
}

// TestAttestOwnsItsGroup: the group an X.509 device matched is the
// attestor's own copy, not the store's shared cached one, so nothing done
// with the match can change the groups every other request sees.
func TestAttestOwnsItsGroup(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	root := dpstest.NewRoot(t, "Match Root")
	dpstest.MustPutGroup(t, db, signingGroup("x509-grp", root))
	a := x509attest.New(x509attest.Options{Store: db})
	leaf := root.Leaf(t, "x509-dev")
	at, err := a.Attest(ctx, scope, "x509-dev", dps.Credential{Certificates: []*x509.Certificate{leaf.Cert}}, nil)
	if err != nil || at.Group == nil {
		t.Fatalf("Attest = %+v, %v", at, err)
	}
	at.Group.ID, at.Group.AllocationPolicy = "changed", dps.AllocationCustom
	groups, err := db.Groups(ctx, dps.AttestationX509)
	if err != nil || len(groups) != 1 {
		t.Fatalf("Groups = %v, %v", groups, err)
	}
	if g := groups[0]; g.ID != "x509-grp" || g.AllocationPolicy != "" {
		t.Errorf("the store's cached group changed through a device's match: ID %q, policy %q", g.ID, g.AllocationPolicy)
	}
}

// groupsOnly is a store holding X.509 groups and nothing else.
type groupsOnly []dps.Group

func (groupsOnly) Enrollment(context.Context, string) (dps.Enrollment, error) {
	return dps.Enrollment{}, &dps.Error{Kind: dps.KindNotFound}
}
func (g groupsOnly) Groups(context.Context, dps.AttestationType) ([]dps.Group, error) { return g, nil }
func (groupsOnly) CACertificate(context.Context, string) (dps.CACertificate, error) {
	return dps.CACertificate{}, &dps.Error{Kind: dps.KindNotFound}
}

// TestCRLsReloadWhileDevicesRegister: a CRL file rewritten to revoke a
// group's intermediate is in force for the first group device checked
// once CRLReload has passed since the last load, and not before.
func TestCRLsReloadWhileDevicesRegister(t *testing.T) {
	root := dpstest.NewRoot(t, "Reload Root")
	inter := root.Intermediate(t, "Reload Inter")
	leaf := inter.Leaf(t, "crl-dev")
	crlFile := filepath.Join(t.TempDir(), "root.crl")
	if err := os.WriteFile(crlFile, root.CRL(t), 0o600); err != nil {
		t.Fatal(err)
	}
	revoking := root.CRL(t, inter)
	wall := time.Now() // the certificates' clock; the bubble's starts in 2000
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		t0 := time.Now()
		now := func() time.Time { return wall.Add(time.Since(t0)) }
		crls, err := x509attest.LoadCRLs([]string{crlFile})
		if err != nil {
			t.Fatal(err)
		}
		a := x509attest.New(x509attest.Options{Store: groupsOnly{signingGroup("reload-grp", root)}, CRLs: crls, CRLReload: time.Minute, Now: now})
		cred := dps.Credential{Certificates: []*x509.Certificate{leaf.Cert, inter.Cert}}
		attest := func() error {
			_, err := a.Attest(ctx, scope, "crl-dev", cred, nil)
			return err
		}
		if err := attest(); err != nil {
			t.Fatalf("before the revocation: %v", err)
		}
		// A new modification time: a reload reads only the files that changed.
		if err := os.WriteFile(crlFile, revoking, 0o600); err != nil {
			t.Fatal(err)
		}
		changed := time.Now().Add(time.Hour)
		if err := os.Chtimes(crlFile, changed, changed); err != nil {
			t.Fatal(err)
		}
		time.Sleep(59 * time.Second)
		if err := attest(); err != nil {
			t.Fatalf("within CRLReload of the last load the lists loaded then apply; got %v", err)
		}
		time.Sleep(2 * time.Second)
		if err := attest(); dps.KindOf(err) != dps.KindUnauthorized {
			t.Fatalf("after CRLReload: %v, want the revoked intermediate refused", err)
		}
	})
}
