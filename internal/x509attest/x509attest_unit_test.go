package x509attest_test

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/x509attest"
)

func TestCheckLeaf(t *testing.T) {
	now := time.Now()
	root := dpstest.NewRoot(t, "Leaf Root")
	tests := []struct {
		name    string
		cert    *dpstest.CertKey
		regID   string
		at      time.Time
		ok      bool
		wantErr string
	}{
		{"ok/cn-is-registration-id", root.Leaf(t, "dev-1"), "dev-1", now, true, ""},
		{"ok/cn-case-folded", root.Leaf(t, "Dev-1"), "dev-1", now, true, ""},
		{"ok/at-not-before", root.Leaf(t, "dev-1", dpstest.Validity(now, now.Add(time.Hour))), "dev-1", now.Truncate(time.Second), true, ""},
		{"fail/other-cn", root.Leaf(t, "dev-2"), "dev-1", now, false, "is not the registration ID"},
		{"fail/cn-prefix", root.Leaf(t, "dev-1x"), "dev-1", now, false, "is not the registration ID"},
		{"fail/not-yet-valid", root.Leaf(t, "dev-1", dpstest.Validity(now.Add(time.Hour), now.Add(2*time.Hour))), "dev-1", now, false, "not valid before"},
		{"fail/expired", root.Leaf(t, "dev-1", dpstest.Validity(now.Add(-2*time.Hour), now.Add(-time.Hour))), "dev-1", now, false, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := x509attest.CheckLeaf(tt.cert.Cert, tt.regID, tt.at)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckLeaf = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CheckLeaf = %q, want it to say %q", err, tt.wantErr)
			}
		})
	}
}

func TestMatchesLeaf(t *testing.T) {
	leaf := dpstest.SelfSigned(t, "dev-1")
	other := dpstest.SelfSigned(t, "dev-1") // same subject, other key
	der := base64.StdEncoding.EncodeToString(leaf.Cert.Raw)
	tests := []struct {
		name     string
		enrolled []string
		want     bool
	}{
		{"ok/pem-primary", []string{leaf.PEM(), ""}, true},
		{"ok/base64-der", []string{der}, true},
		{"ok/secondary", []string{other.PEM(), leaf.PEM()}, true},
		{"ok/after-garbage", []string{"not a certificate", leaf.PEM()}, true},
		{"fail/none", nil, false},
		{"fail/empty", []string{"", ""}, false},
		{"fail/same-subject-other-cert", []string{other.PEM()}, false},
		{"fail/garbage", []string{"not a certificate"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := x509attest.MatchesLeaf(leaf.Cert, tt.enrolled...); got != tt.want {
				t.Errorf("MatchesLeaf = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestChain(t *testing.T) {
	now := time.Now()
	root := dpstest.NewRoot(t, "Chain Root")
	otherRoot := dpstest.NewRoot(t, "Chain Root") // same name, other key
	inter := root.Intermediate(t, "Chain Inter")
	expiredInter := root.Intermediate(t, "Expired Inter", dpstest.Validity(now.Add(-2*time.Hour), now.Add(-time.Hour)))
	direct := root.Leaf(t, "dev-direct")
	viaInter := inter.Leaf(t, "dev-inter")
	viaExpired := expiredInter.Leaf(t, "dev-expired-inter")
	serverOnly := root.Leaf(t, "dev-server", dpstest.ExtKeyUsage(x509.ExtKeyUsageServerAuth))
	anyUsage := root.Leaf(t, "dev-any", dpstest.ExtKeyUsage(x509.ExtKeyUsageAny))
	expiredLeaf := root.Leaf(t, "dev-old", dpstest.Validity(now.Add(-2*time.Hour), now.Add(-time.Hour)))
	selfSigned := dpstest.SelfSigned(t, "dev-self")

	certs := func(cs ...*dpstest.CertKey) []*x509.Certificate {
		var out []*x509.Certificate
		for _, c := range cs {
			out = append(out, c.Cert)
		}
		return out
	}
	tests := []struct {
		name   string
		chain  []*x509.Certificate
		anchor *dpstest.CertKey
		at     time.Time
		want   []*dpstest.CertKey // the verified chain, leaf … anchor
	}{
		{"ok/leaf-signed-by-anchor", certs(direct), root, now, []*dpstest.CertKey{direct, root}},
		{"ok/through-sent-intermediate", certs(viaInter, inter), root, now, []*dpstest.CertKey{viaInter, inter, root}},
		{"ok/intermediate-as-anchor", certs(viaInter, inter), inter, now, []*dpstest.CertKey{viaInter, inter}},
		{"ok/intermediate-as-anchor-not-sent", certs(viaInter), inter, now, []*dpstest.CertKey{viaInter, inter}},
		{"ok/root-sent-too", certs(viaInter, inter, root), root, now, []*dpstest.CertKey{viaInter, inter, root}},
		{"ok/any-usage", certs(anyUsage), root, now, []*dpstest.CertKey{anyUsage, root}},
		{"fail/intermediate-not-sent", certs(viaInter), root, now, nil},
		{"fail/other-root-same-name", certs(direct), otherRoot, now, nil},
		{"fail/server-auth-only", certs(serverOnly), root, now, nil},
		{"fail/expired-leaf", certs(expiredLeaf), root, now, nil},
		{"fail/expired-intermediate", certs(viaExpired, expiredInter), root, now, nil},
		{"fail/everything-expired-later", certs(viaInter, inter), root, now.Add(48 * time.Hour), nil},
		{"fail/self-signed-device", certs(selfSigned), root, now, nil},
		{"fail/device-is-the-anchor", certs(selfSigned), selfSigned, now, nil},
		{"fail/no-certificate", nil, root, now, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := x509attest.Chain(tt.chain, tt.anchor.Cert, tt.at)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("Chain = %d certificates, want an error", len(got))
				}
				return
			}
			if err != nil {
				t.Fatalf("Chain: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Chain = %d certificates, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !got[i].Equal(tt.want[i].Cert) {
					t.Errorf("chain[%d] = %q, want %q", i, got[i].Subject.CommonName, tt.want[i].Cert.Subject.CommonName)
				}
			}
		})
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func derOf(t *testing.T, pemCRL []byte) []byte {
	t.Helper()
	p, _ := pem.Decode(pemCRL)
	if p == nil {
		t.Fatal("CRL is not PEM")
	}
	return p.Bytes
}

func TestCRLsRevoked(t *testing.T) {
	root := dpstest.NewRoot(t, "CRL Root")
	impostor := dpstest.NewRoot(t, "CRL Root") // same name, other key
	inter := root.Intermediate(t, "CRL Inter")
	revoked := inter.Leaf(t, "dev-revoked")
	good := inter.Leaf(t, "dev-good")
	revokedInter := root.Intermediate(t, "CRL Revoked Inter")
	underRevokedInter := revokedInter.Leaf(t, "dev-under-revoked")
	direct := root.Leaf(t, "dev-direct")

	dir := t.TempDir()
	interCRL := filepath.Join(dir, "inter.pem")
	rootCRL := filepath.Join(dir, "root.der")
	forged := filepath.Join(dir, "forged.pem")
	writeFile(t, interCRL, inter.CRL(t, revoked))
	writeFile(t, rootCRL, derOf(t, root.CRL(t, revokedInter)))
	// Signed by a CA of the same name but another key: it must not revoke.
	writeFile(t, forged, impostor.CRL(t, direct))
	crls, err := x509attest.LoadCRLs([]string{interCRL, rootCRL, forged})
	if err != nil {
		t.Fatalf("LoadCRLs: %v", err)
	}
	chain := func(cs ...*dpstest.CertKey) []*x509.Certificate {
		var out []*x509.Certificate
		for _, c := range cs {
			out = append(out, c.Cert)
		}
		return out
	}
	tests := []struct {
		name  string
		chain []*x509.Certificate
		want  bool
		who   string
	}{
		{"revoked/leaf-by-intermediate-crl", chain(revoked, inter, root), true, "dev-revoked"},
		{"revoked/intermediate-by-der-root-crl", chain(underRevokedInter, revokedInter, root), true, "CRL Revoked Inter"},
		{"ok/other-leaf", chain(good, inter, root), false, ""},
		{"ok/crl-of-impostor-issuer", chain(direct, root), false, ""},
		// Without its issuer in the chain a certificate cannot be checked.
		{"ok/leaf-alone", chain(revoked), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := crls.Revoked(tt.chain)
			if got != tt.want {
				t.Fatalf("Revoked = %v (%s), want %v", got, why, tt.want)
			}
			if got && !strings.Contains(why, tt.who) {
				t.Errorf("reason %q does not name %q", why, tt.who)
			}
		})
	}
	t.Run("nil-CRLs", func(t *testing.T) {
		var none *x509attest.CRLs
		if got, _ := none.Revoked(chain(revoked, inter, root)); got {
			t.Error("nil CRLs revoked a certificate")
		}
		if err := none.Reload(); err != nil {
			t.Errorf("nil Reload = %v", err)
		}
	})
}

func TestCRLsLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	writeFile(t, bad, []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	for name, files := range map[string][]string{
		"missing-file": {filepath.Join(dir, "absent.pem")},
		"not-a-crl":    {bad},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := x509attest.LoadCRLs(files); err == nil {
				t.Fatal("LoadCRLs succeeded")
			}
		})
	}
}

func TestCRLsReload(t *testing.T) {
	root := dpstest.NewRoot(t, "Reload Root")
	first, second := root.Leaf(t, "dev-first"), root.Leaf(t, "dev-second")
	path := filepath.Join(t.TempDir(), "root.pem")
	writeFile(t, path, root.CRL(t, first))
	crls, err := x509attest.LoadCRLs([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	isRevoked := func(c *dpstest.CertKey) bool {
		r, _ := crls.Revoked([]*x509.Certificate{c.Cert, root.Cert})
		return r
	}
	if !isRevoked(first) || isRevoked(second) {
		t.Fatalf("initial list: first revoked %v, second revoked %v", isRevoked(first), isRevoked(second))
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	// A file whose modification time did not change is not read again.
	writeFile(t, path, []byte("garbage"))
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := crls.Reload(); err != nil {
		t.Fatalf("Reload of an unchanged file = %v", err)
	}
	if !isRevoked(first) {
		t.Fatal("the list changed although the file did not")
	}

	// A broken new version is reported and the last good list kept.
	later := st.ModTime().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if err := crls.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	if !isRevoked(first) {
		t.Fatal("a broken CRL file dropped the last good list")
	}

	// A new version is picked up.
	writeFile(t, path, root.CRL(t, second))
	later = later.Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if err := crls.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if isRevoked(first) || !isRevoked(second) {
		t.Fatalf("after reload: first revoked %v, second revoked %v", isRevoked(first), isRevoked(second))
	}

	// A file that disappears is reported; its last list stays in force.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := crls.Reload(); err == nil {
		t.Fatal("Reload of a removed file succeeded")
	}
	if !isRevoked(second) {
		t.Fatal("a removed CRL file dropped its list")
	}
}
