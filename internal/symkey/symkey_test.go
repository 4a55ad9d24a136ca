package symkey_test

import (
	"context"
	"encoding/base64"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/symkey"
)

const scope = "0ne0000TEST"

func raw(t *testing.T, k dps.Key) []byte {
	t.Helper()
	b, err := sas.DecodeKey(string(k))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func token(id string, key []byte, expiry time.Time) dps.Credential {
	return dps.Credential{SAS: sas.New(scope+"/registrations/"+id, key, "registration", expiry)}
}

func derived(t *testing.T, group dps.Key, id string) dps.Key {
	return dps.Key(base64.StdEncoding.EncodeToString(sas.DeriveKey(raw(t, group), id)))
}

// TestAttest: individual enrollments by either key, groups by a key derived
// from either group key, and the device's hub keys with them; a wrong key,
// an expired token and another device's token are refused as 401.
func TestAttest(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("sym-ind"))
	g := dpstest.MustPutGroup(t, db, dpstest.SymmetricKeyGroup("sym-grp"))
	a := symkey.New(symkey.Options{Store: db})
	hour := time.Now().Add(time.Hour)
	gk := g.Attestation.SymmetricKey

	for _, k := range []dps.Key{e.Attestation.SymmetricKey.PrimaryKey, e.Attestation.SymmetricKey.SecondaryKey} {
		at, err := a.Attest(ctx, scope, "sym-ind", token("sym-ind", raw(t, k), hour), &e)
		if err != nil || at.Enrollment == nil || at.Proof.Type != dps.AttestationSymmetricKey ||
			at.Hub != (dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: e.Attestation.SymmetricKey.PrimaryKey, SecondaryKey: e.Attestation.SymmetricKey.SecondaryKey}) {
			t.Errorf("individual: Attest = %+v, %v", at, err)
		}
	}
	for _, k := range []dps.Key{gk.PrimaryKey, gk.SecondaryKey} {
		at, err := a.Attest(ctx, scope, "grp-dev", token("grp-dev", raw(t, derived(t, k, "grp-dev")), hour), nil)
		if err != nil || at.Group == nil || at.Group.ID != "sym-grp" ||
			at.Hub != (dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: derived(t, gk.PrimaryKey, "grp-dev"), SecondaryKey: derived(t, gk.SecondaryKey, "grp-dev")}) {
			t.Errorf("group: Attest = %+v, %v", at, err)
		}
	}
	// A device whose key was derived from its lower-cased ID gets hub keys
	// derived from that ID: the keys it has.
	at, err := a.Attest(ctx, scope, "Grp-Mixed", token("Grp-Mixed", raw(t, derived(t, gk.PrimaryKey, "grp-mixed")), hour), nil)
	if err != nil || at.Hub.PrimaryKey != derived(t, gk.PrimaryKey, "grp-mixed") {
		t.Errorf("mixed-case ID: Attest = %+v, %v", at, err)
	}

	for name, tc := range map[string]struct {
		id   string
		cred dps.Credential
		e    *dps.Enrollment
	}{
		"wrong key":      {"sym-ind", token("sym-ind", raw(t, gk.PrimaryKey), hour), &e},
		"expired":        {"sym-ind", token("sym-ind", raw(t, e.Attestation.SymmetricKey.PrimaryKey), time.Now().Add(-time.Hour)), &e},
		"other device":   {"sym-ind", token("sym-other", raw(t, e.Attestation.SymmetricKey.PrimaryKey), hour), &e},
		"no group":       {"nobody", token("nobody", []byte("0123456789abcdef0123456789abcdef"), hour), nil},
		"group key used": {"grp-dev", token("grp-dev", raw(t, gk.PrimaryKey), hour), nil},
		"x509 enrollment": {"sym-ind", token("sym-ind", raw(t, e.Attestation.SymmetricKey.PrimaryKey), hour),
			&dps.Enrollment{RegistrationID: "sym-ind", Settings: dps.Settings{Attestation: dps.Attestation{Type: dps.AttestationX509, X509: &dps.X509Attestation{}}}}},
	} {
		if _, err := a.Attest(ctx, scope, tc.id, tc.cred, tc.e); dps.KindOf(err) != dps.KindUnauthorized || dps.AsError(err).Code != dps.CodeUnauthorized {
			t.Errorf("%s: err = %v, want 401002", name, err)
		}
	}
}

// TestPollAndHub: a poll is checked against the enrollment its operation
// matched only, and an operation completed in the background gets the
// same hub keys as one completed at once.
func TestPollAndHub(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	e := dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("poll-ind"))
	g := dpstest.MustPutGroup(t, db, dpstest.SymmetricKeyGroup("poll-grp"))
	other := dpstest.MustPutGroup(t, db, dpstest.SymmetricKeyGroup("poll-other"))
	a := symkey.New(symkey.Options{Store: db})
	hour := time.Now().Add(time.Hour)
	grpCred := token("poll-dev", raw(t, derived(t, g.Attestation.SymmetricKey.SecondaryKey, "poll-dev")), hour)
	grpOp := dps.Operation{RegistrationID: "poll-dev", EnrollmentGroupID: "poll-grp", Proof: dps.Proof{Type: dps.AttestationSymmetricKey}}
	if err := a.Poll(ctx, scope, "poll-dev", grpCred, grpOp); err != nil {
		t.Errorf("group poll: %v", err)
	}
	otherCred := token("poll-dev", raw(t, derived(t, other.Attestation.SymmetricKey.PrimaryKey, "poll-dev")), hour)
	if err := a.Poll(ctx, scope, "poll-dev", otherCred, grpOp); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("a poll signed for another group: %v, want 401", err)
	}
	indOp := dps.Operation{RegistrationID: "poll-ind", Proof: dps.Proof{Type: dps.AttestationSymmetricKey}}
	if err := a.Poll(ctx, scope, "poll-ind", token("poll-ind", raw(t, e.Attestation.SymmetricKey.PrimaryKey), hour), indOp); err != nil {
		t.Errorf("individual poll: %v", err)
	}

	at, err := a.Attest(ctx, scope, "poll-dev", grpCred, nil)
	if err != nil {
		t.Fatal(err)
	}
	now, _, err := a.Hub(ctx, grpOp, at)
	if err != nil {
		t.Fatal(err)
	}
	later, proof, err := a.Hub(ctx, grpOp, dps.Attested{Group: &g, Proof: grpOp.Proof})
	if err != nil || later != now || proof.Type != dps.AttestationSymmetricKey {
		t.Errorf("background hub auth %+v (%v), want %+v", later, err, now)
	}
	ind, _, err := a.Hub(ctx, indOp, dps.Attested{Enrollment: &e, Proof: indOp.Proof})
	if err != nil || ind.PrimaryKey != e.Attestation.SymmetricKey.PrimaryKey || ind.SecondaryKey != e.Attestation.SymmetricKey.SecondaryKey {
		t.Errorf("individual hub auth %+v, %v", ind, err)
	}
}
