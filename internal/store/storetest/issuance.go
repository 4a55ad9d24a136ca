package storetest

import (
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// testIssuingCAs: issuing CAs are stored as given (the sealed key byte for
// byte, the chain in order) under the ETag rules; names match in any case;
// a CA a credential policy names cannot be deleted; a policy needs an
// existing CA and reads back with the CA's name as the CA has it.
func testIssuingCAs(t *testing.T, f Factory) {
	s := f.New(t)
	ca := dps.IssuingCA{Name: "Issuing-CA-1", Chain: [][]byte{[]byte("ca der"), []byte("root der")}, KeyType: dps.KeyECDSAP384, SealedKey: []byte{1, 2, 0, 255}}
	put, err := s.PutIssuingCA(ctx(), ca, "")
	if err != nil {
		t.Fatal(err)
	}
	if put.ETag == "" || put.Created.IsZero() || put.Updated.IsZero() {
		t.Fatalf("put returned %#v: no etag or times", put)
	}
	if _, err := s.PutIssuingCA(ctx(), ca, ""); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("second create: %v, want conflict", err)
	}
	if _, err := s.PutIssuingCA(ctx(), ca, `"stale"`); dps.KindOf(err) != dps.KindPrecondition {
		t.Errorf("put with a stale etag: %v, want precondition", err)
	}
	got, err := s.IssuingCA(ctx(), "issuing-ca-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Issuing-CA-1" || len(got.Chain) != 2 || string(got.Chain[1]) != "root der" || string(got.SealedKey) != "\x01\x02\x00\xff" ||
		got.KeyType != dps.KeyECDSAP384 || got.ETag != put.ETag || !got.Created.Equal(put.Created) {
		t.Errorf("read back %#v\nwant %#v", got, put)
	}
	if _, err := s.IssuingCA(ctx(), "other-ca"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("missing CA: %v, want not found", err)
	}
	ca.SealedKey = []byte("resealed")
	again, err := s.PutIssuingCA(ctx(), ca, put.ETag)
	if err != nil || again.ETag == put.ETag || !again.Created.Equal(put.Created) {
		t.Fatalf("replace: %#v, %v: want a new etag and the same creation time", again, err)
	}

	if _, err := s.PutCredentialPolicy(ctx(), dps.CredentialPolicy{Name: "p1", CertificateAuthority: "no-such-ca", ValidityDays: 30}, ""); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("policy of a missing CA: %v, want not found", err)
	}
	p := dps.CredentialPolicy{Name: "Policy-1", CertificateAuthority: "ISSUING-ca-1", ValidityDays: 45,
		KeyTypes: []dps.KeyType{dps.KeyECDSAP256, dps.KeyRSA2048}, Subject: dps.SubjectRegistrationID}
	pp, err := s.PutCredentialPolicy(ctx(), p, "")
	if err != nil {
		t.Fatal(err)
	}
	gp, err := s.CredentialPolicy(ctx(), "policy-1")
	if err != nil {
		t.Fatal(err)
	}
	if gp.Name != "Policy-1" || gp.CertificateAuthority != "Issuing-CA-1" || gp.ValidityDays != 45 || len(gp.KeyTypes) != 2 || gp.KeyTypes[1] != dps.KeyRSA2048 ||
		gp.Subject != dps.SubjectRegistrationID || gp.ETag != pp.ETag || gp.ETag == "" {
		t.Errorf("policy read back %#v (put %#v)", gp, pp)
	}
	if _, err := s.PutCredentialPolicy(ctx(), p, ""); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("second policy create: %v, want conflict", err)
	}
	if err := s.DeleteIssuingCA(ctx(), "issuing-ca-1", ""); dps.KindOf(err) != dps.KindConflict {
		t.Errorf("delete of a CA a policy names: %v, want conflict", err)
	}
	if _, err := s.IssuingCA(ctx(), "issuing-ca-1"); err != nil {
		t.Errorf("the refused delete removed the CA: %v", err)
	}
	if ps, err := s.CredentialPolicies(ctx()); err != nil || len(ps) != 1 {
		t.Errorf("policies: %v, %v", ps, err)
	}
	if err := s.DeleteCredentialPolicy(ctx(), "POLICY-1", `"stale"`); dps.KindOf(err) != dps.KindPrecondition {
		t.Errorf("policy delete with a stale etag: %v, want precondition", err)
	}
	if err := s.DeleteCredentialPolicy(ctx(), "POLICY-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteCredentialPolicy(ctx(), "POLICY-1", ""); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("second policy delete: %v, want not found", err)
	}
	if err := s.DeleteIssuingCA(ctx(), "issuing-ca-1", ""); err != nil {
		t.Fatal(err)
	}
	if cas, err := s.IssuingCAs(ctx()); err != nil || len(cas) != 0 {
		t.Errorf("CAs after delete: %v, %v", cas, err)
	}
}

// testIssuedCertificates: an operation gets one certificate, whichever
// handle records first (the others get the one recorded); renewals (no
// operation) are each recorded; revocation is per device, in any case,
// leaves expired and revoked ones alone, and a CA's revoked list holds
// only its unexpired revoked certificates.
func testIssuedCertificates(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	now := time.Now().UTC().Truncate(time.Microsecond)
	cert := func(serial, op, device string, notAfter time.Time) dps.IssuedCertificate {
		return dps.IssuedCertificate{SerialNumber: serial, CertificateAuthority: "CA-1", Policy: "Policy-1", RegistrationID: "Reg-1",
			Hub: "Hub-A.example.net", DeviceID: device, OperationID: op, Certificate: []byte("der " + serial),
			NotBefore: now.Add(-time.Minute), NotAfter: notAfter, Issued: now}
	}
	// Several handles record a certificate for one operation at once.
	var wg sync.WaitGroup
	results := make([]dps.IssuedCertificate, 6)
	errs := make([]error, len(results))
	for i := range results {
		st := s
		if i%2 == 1 {
			st = other
		}
		wg.Go(func() {
			results[i], errs[i] = st.RecordIssuedCertificate(ctx(), cert("4"+string(rune('A'+i)), "op-1", "Dev-1", now.Add(time.Hour)))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if results[i].SerialNumber != results[0].SerialNumber || string(results[i].Certificate) != string(results[0].Certificate) {
			t.Errorf("record %d returned %s, another %s: one operation, two certificates", i, results[i].SerialNumber, results[0].SerialNumber)
		}
	}
	got, err := other.IssuedCertificate(ctx(), results[0].SerialNumber)
	if err != nil {
		t.Fatal(err)
	}
	if got.OperationID != "op-1" || got.DeviceID != "Dev-1" || got.RegistrationID != "Reg-1" || got.Policy != "Policy-1" ||
		!got.NotAfter.Equal(now.Add(time.Hour)) || !got.Revoked.IsZero() || string(got.Certificate) != "der "+got.SerialNumber {
		t.Errorf("read back %#v", got)
	}
	for i := range results {
		if serial := "4" + string(rune('A'+i)); serial != got.SerialNumber {
			if _, err := s.IssuedCertificate(ctx(), serial); dps.KindOf(err) != dps.KindNotFound {
				t.Errorf("the losing certificate %s was recorded: %v", serial, err)
			}
		}
	}
	// A retried completion that moved the device to another hub (or
	// device ID) gets the operation's certificate, re-pointed to it.
	moved := cert("4Z", "op-1", "Dev-9", now.Add(time.Hour))
	moved.Hub = "Hub-B.example.net"
	rm, err := other.RecordIssuedCertificate(ctx(), moved)
	if err != nil || rm.SerialNumber != got.SerialNumber || rm.Hub != "hub-b.example.net" || rm.DeviceID != "Dev-9" {
		t.Fatalf("record for op-1 on another hub: %+v, %v; want %s re-pointed to hub-b.example.net/Dev-9", rm, err, got.SerialNumber)
	}
	if r, err := s.IssuedCertificate(ctx(), got.SerialNumber); err != nil || r.Hub != "hub-b.example.net" || r.DeviceID != "Dev-9" {
		t.Fatalf("re-pointed certificate read back: %+v, %v", r, err)
	}
	if _, err := s.IssuedCertificate(ctx(), "4Z"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("the retry's certificate was recorded: %v", err)
	}
	back := cert("4Y", "op-1", "Dev-1", now.Add(time.Hour))
	if r, err := s.RecordIssuedCertificate(ctx(), back); err != nil || r.SerialNumber != got.SerialNumber || r.Hub != "hub-a.example.net" || r.DeviceID != "Dev-1" {
		t.Fatalf("record for op-1 back on hub-a: %+v, %v", r, err)
	}
	// Renewals are recorded each time; another device's and an expired one stay.
	for _, c := range []dps.IssuedCertificate{cert("5A", "", "Dev-1", now.Add(time.Hour)), cert("5B", "", "Dev-1", now.Add(time.Hour)),
		cert("5C", "", "Dev-2", now.Add(time.Hour)), cert("5D", "", "Dev-1", now.Add(-time.Second))} {
		if r, err := s.RecordIssuedCertificate(ctx(), c); err != nil || r.SerialNumber != c.SerialNumber {
			t.Fatalf("record renewal %s: %s, %v", c.SerialNumber, r.SerialNumber, err)
		}
	}
	n, err := other.RevokeIssuedCertificates(ctx(), "hub-a.EXAMPLE.net", "dev-1", now)
	if err != nil || n != 3 {
		t.Fatalf("revoked %d, %v; want the 3 valid certificates of Dev-1", n, err)
	}
	if n, err := s.RevokeIssuedCertificates(ctx(), "hub-a.example.net", "Dev-1", now.Add(time.Second)); err != nil || n != 0 {
		t.Errorf("revoked again: %d, %v; want 0", n, err)
	}
	r, err := s.IssuedCertificate(ctx(), "5A")
	if err != nil || !r.Revoked.Equal(now) {
		t.Errorf("revoked certificate %#v, %v: revoked at %v", r, err, now)
	}
	if r, err := s.IssuedCertificate(ctx(), "5C"); err != nil || !r.Revoked.IsZero() {
		t.Errorf("another device's certificate %#v, %v: revoked", r, err)
	}
	list, err := other.RevokedCertificates(ctx(), "ca-1", now)
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, c := range list {
		serials = append(serials, c.SerialNumber)
	}
	if want := []string{got.SerialNumber, "5A", "5B"}; len(serials) != 3 || serials[0] != want[0] || serials[1] != "5A" || serials[2] != "5B" {
		t.Errorf("revoked list %v, want %v", serials, want)
	}
	if list, err := s.RevokedCertificates(ctx(), "ca-1", now.Add(2*time.Hour)); err != nil || len(list) != 0 {
		t.Errorf("revoked list once they expired: %d, %v", len(list), err)
	}
	if list, err := s.RevokedCertificates(ctx(), "other-ca", now); err != nil || len(list) != 0 {
		t.Errorf("another CA's revoked list: %d, %v", len(list), err)
	}
}
