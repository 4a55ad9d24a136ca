package registration_test

import (
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/tpmattest"
)

func tpmEnrollment(id, ek string) dps.Enrollment {
	return dps.Enrollment{RegistrationID: id, Settings: dps.Settings{
		Attestation:        dps.Attestation{Type: dps.AttestationTPM, TPM: &dps.TPMAttestation{EndorsementKey: ek}},
		ProvisioningStatus: dps.ProvisioningEnabled,
	}}
}

// k1 reads the key of the latest challenge from the store: what a device
// would recover from the blob with its TPM.
func k1(t *testing.T, db *sqlite.DB, id string) []byte {
	t.Helper()
	c, err := db.Challenge(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := base64.StdEncoding.DecodeString(string(c.Key))
	return b
}

func tpmSAS(id string, key []byte, expiry time.Time) dps.Credential {
	return dps.Credential{SAS: sas.New(scope+"/registrations/"+id, key, "registration", expiry)}
}

func challenge(t *testing.T, s *registration.Service, id, ek, srk string) string {
	t.Helper()
	_, err := s.Register(context.Background(), registration.Request{IDScope: scope, RegistrationID: id, Credential: dps.Credential{TPM: &dps.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}}})
	ch, ok := errors.AsType[*dps.TPMChallenge](err)
	if !ok || ch.AuthenticationKey == "" || ch.KeyName != "registration" {
		t.Fatalf("Register without SAS = %v, want a TPM challenge", err)
	}
	blob, _ := base64.StdEncoding.DecodeString(ch.AuthenticationKey)
	if _, err := tpmattest.Parts(blob); err != nil {
		t.Fatalf("challenge blob: %v", err)
	}
	return ch.AuthenticationKey
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

func TestTPMChallengeFlow(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Now()}
	now := clock.Now()
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil, func(o *registration.Options) { o.Now = clock.Now })
	ek, srk := dpstest.SoftwareTPMKeys(t)
	dpstest.MustPutEnrollment(t, db, tpmEnrollment("tpm-1", ek))

	b1 := challenge(t, s, "tpm-1", ek, srk)
	b2 := challenge(t, s, "tpm-1", ek, srk)
	if b1 == b2 {
		t.Fatal("two challenges produced the same blob")
	}
	key := k1(t, db, "tpm-1")

	// The second PUT may omit the tpm object (aziot).
	c := tpmSAS("tpm-1", key, now.Add(time.Hour))
	op, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: "tpm-1", Credential: c})
	if err != nil {
		t.Fatalf("Register with the challenge key: %v", err)
	}
	// The challenge is consumed: it cannot start a second registration.
	if _, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: "tpm-1", Credential: c}); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("reused challenge: %v, want unauthorized", err)
	}
	// K1 authenticates the operation's polls.
	var final dps.Operation
	for range 500 {
		final, err = s.Operation(ctx, scope, "tpm-1", op.ID, c)
		if err != nil {
			t.Fatalf("poll with K1: %v", err)
		}
		if final.Status.Final() {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if final.Status != dps.StatusAssigned || final.Result.Proof.TPM == nil || final.Result.Proof.TPM.AuthenticationKey == "" || final.Result.Proof.TPM.AuthenticationKey == b2 {
		t.Fatalf("final = %+v / %+v", final, final.Result)
	}
	hd, err := db.HubDevice(ctx, final.Result.AssignedHub, "tpm-1")
	if err != nil || hd.Auth.Type != dps.HubAuthSAS || hd.Auth.PrimaryKey == "" || string(hd.Auth.PrimaryKey) == base64.StdEncoding.EncodeToString(key) {
		t.Errorf("hub device = %+v, %v (the hub key must be a new key)", hd, err)
	}
	// A poll signed with another key is refused.
	if _, err := s.Operation(ctx, scope, "tpm-1", op.ID, tpmSAS("tpm-1", make([]byte, 32), now.Add(time.Hour))); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("poll with another key: %v", err)
	}
	// Long after the operation ended, K1 no longer authenticates.
	now = clock.Add(time.Hour)
	if _, err := s.Operation(ctx, scope, "tpm-1", op.ID, tpmSAS("tpm-1", key, now.Add(time.Hour))); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("poll an hour after the end: %v", err)
	}
}

func TestTPMRefusals(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{t: time.Now()}
	now := clock.Now()
	db := dpstest.NewSQLite(t)
	s := newService(t, db, nil, func(o *registration.Options) { o.Now = clock.Now })
	ek, srk := dpstest.SoftwareTPMKeys(t)
	otherEK, _ := dpstest.SoftwareTPMKeys(t)
	dpstest.MustPutEnrollment(t, db, tpmEnrollment("tpm-r", ek))
	dpstest.MustPutEnrollment(t, db, dpstest.SymmetricKeyEnrollment("sym-r"))

	refuse := func(name string, err error, kind dps.Kind, code int) {
		t.Helper()
		e := dps.AsError(err)
		if err == nil || e.Kind != kind || e.Code != code {
			t.Errorf("%s: err = %v, want %v %d", name, err, kind, code)
		}
	}
	reg := func(id string, tpm *dps.TPMAttestation, c dps.Credential) error {
		c.TPM = tpm
		_, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: id, Credential: c})
		return err
	}
	refuse("unknown registration", reg("tpm-nobody", &dps.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}, dps.Credential{}), dps.KindNotFound, 404201)
	// Not a 401: SDKs read every 401 to a TPM's first request as the challenge.
	refuse("EK mismatch", reg("tpm-r", &dps.TPMAttestation{EndorsementKey: otherEK, StorageRootKey: srk}, dps.Credential{}), dps.KindInvalid, 400004)
	refuse("not a TPM enrollment", reg("sym-r", &dps.TPMAttestation{EndorsementKey: ek, StorageRootKey: srk}, dps.Credential{}), dps.KindInvalid, 400004)
	refuse("no challenge yet", reg("tpm-r", nil, tpmSAS("tpm-r", make([]byte, 32), now.Add(time.Hour))), dps.KindUnauthorized, 401002)

	challenge(t, s, "tpm-r", ek, srk)
	oldKey := k1(t, db, "tpm-r")
	challenge(t, s, "tpm-r", ek, srk) // supersedes
	refuse("superseded challenge", reg("tpm-r", nil, tpmSAS("tpm-r", oldKey, now.Add(time.Hour))), dps.KindUnauthorized, 401002)
	key := k1(t, db, "tpm-r")
	tampered := tpmSAS("tpm-r", key, now.Add(time.Hour))
	tampered.SAS = tampered.SAS[:len(tampered.SAS)-20] + "AAAA" + tampered.SAS[len(tampered.SAS)-16:]
	refuse("tampered SAS", reg("tpm-r", nil, tampered), dps.KindUnauthorized, 401002)
	refuse("expired SAS", reg("tpm-r", nil, tpmSAS("tpm-r", key, now.Add(-time.Hour))), dps.KindUnauthorized, 401002)
	// MQTT: a TPM device is refused at CONNECT even with a valid challenge key.
	refuse("TPM over MQTT", s.Authenticate(ctx, scope, "tpm-r", tpmSAS("tpm-r", key, now.Add(time.Hour))), dps.KindUnauthorized, 401002)
	now = clock.Add(6 * time.Minute)
	refuse("expired challenge", reg("tpm-r", nil, tpmSAS("tpm-r", key, now.Add(time.Hour))), dps.KindUnauthorized, 401002)
	if ops, _ := db.PendingOperations(ctx); len(ops) != 0 {
		t.Errorf("refusals stored %d operations", len(ops))
	}
	if _, err := db.Registration(ctx, "tpm-r"); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("refusals stored a registration: %v", err)
	}
}

// TestTPMRegisterAgainWhileInFlight: a TPM device that answers a new
// challenge while its registration is still running gets the operation in
// flight, and may poll it with the key of the challenge it answered last.
func TestTPMRegisterAgainWhileInFlight(t *testing.T) {
	ctx := context.Background()
	db := dpstest.NewSQLite(t)
	g := newGate(t)
	s := newService(t, db, nil, func(o *registration.Options) { o.Allocators[dps.AllocationCustom] = g })
	ek, srk := dpstest.SoftwareTPMKeys(t)
	e := tpmEnrollment("tpm-again", ek)
	e.AllocationPolicy = dps.AllocationCustom
	e.CustomAllocation = &dps.CustomAllocation{WebhookURL: "https://hook.example/hang", APIVersion: "2021-10-01"}
	dpstest.MustPutEnrollment(t, db, e)

	challenge(t, s, "tpm-again", ek, srk)
	c1 := tpmSAS("tpm-again", k1(t, db, "tpm-again"), time.Now().Add(time.Hour))
	first, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: "tpm-again", Credential: c1})
	if err != nil {
		t.Fatal(err)
	}
	<-g.started
	challenge(t, s, "tpm-again", ek, srk)
	c2 := tpmSAS("tpm-again", k1(t, db, "tpm-again"), time.Now().Add(time.Hour))
	again, err := s.Register(ctx, registration.Request{IDScope: scope, RegistrationID: "tpm-again", Credential: c2})
	if err != nil || again.ID != first.ID {
		t.Fatalf("register again = %s, %v; want the operation in flight %s", again.ID, err, first.ID)
	}
	if op, err := s.Operation(ctx, scope, "tpm-again", first.ID, c2); err != nil || op.Status != dps.StatusAssigning {
		t.Fatalf("poll with the latest challenge's key = %+v, %v", op, err)
	}
	g.release()
	if op := waitFinal(t, s, "tpm-again", first.ID, c2); op.Status != dps.StatusAssigned || op.Result.Proof.TPM == nil || op.Result.Proof.TPM.AuthenticationKey == "" {
		t.Fatalf("final = %+v / %+v", op, op.Result)
	}
	if _, err := s.Operation(ctx, scope, "tpm-again", first.ID, tpmSAS("tpm-again", make([]byte, 32), time.Now().Add(time.Hour))); dps.KindOf(err) != dps.KindUnauthorized {
		t.Errorf("poll with another key: %v", err)
	}
}
