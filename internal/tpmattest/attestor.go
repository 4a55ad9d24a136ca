package tpmattest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
)

// Store is what the mechanism reads and writes: individual enrollments
// (TPM devices have no groups) and the pending challenges.
type Store interface {
	// Enrollment returns an individual enrollment; dps.KindNotFound if none.
	Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error)
	// PutChallenge makes c the only challenge of its registration ID.
	PutChallenge(ctx context.Context, c dps.Challenge) error
	// Challenge returns a registration ID's challenge; dps.KindNotFound if none.
	Challenge(ctx context.Context, registrationID string) (dps.Challenge, error)
	// ConsumeChallenge deletes the challenge of registrationID if its key
	// is key, reporting whether it did.
	ConsumeChallenge(ctx context.Context, registrationID string, key dps.Key) (bool, error)
}

// Options configure an Attestor.
type Options struct {
	Store Store
	// IDScope is the instance's ID scope, part of what an activation blob
	// binds its key to.
	IDScope string
	// ChallengeTTL is how long an unused challenge stays valid (default 5
	// minutes).
	ChallengeTTL time.Duration
	// ClockSkew is how long past its expiry a token is still accepted
	// (default 5 minutes).
	ClockSkew time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// Attestor checks TPM devices. A device first registers with its TPM's
// public keys and no token, and gets a challenge: a fresh key K1 wrapped
// for its TPM (an activation blob). It registers again with a token signed
// with K1; that starts one registration, and K1 authenticates its polls.
// On its hub the device authenticates with a second key K2, which the
// registration result carries wrapped for its TPM the same way.
type Attestor struct {
	o Options
}

// New returns an Attestor.
func New(o Options) *Attestor {
	if o.ChallengeTTL <= 0 {
		o.ChallengeTTL = 5 * time.Minute
	}
	if o.ClockSkew <= 0 {
		o.ClockSkew = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Attestor{o: o}
}

// Accepts reports whether the device presented a SAS token (signed with a
// challenge key) or its TPM's keys (asking for a challenge).
func (a *Attestor) Accepts(cred dps.Credential) bool { return cred.SAS != "" || cred.TPM != nil }

func (a *Attestor) token(scope, regID string, cred dps.Credential) (sas.Token, error) {
	tok, err := sas.ParseRegistration(cred.SAS, scope, regID, a.o.Now(), a.o.ClockSkew)
	if err != nil {
		return sas.Token{}, dps.Unauthenticated(err)
	}
	return tok, nil
}

// Screen refuses a token that is malformed, expired or for another
// device, without reading anything; TPM keys without a token (a request
// for a challenge) pass.
func (a *Attestor) Screen(scope, regID string, cred dps.Credential) error {
	if cred.SAS == "" {
		return nil
	}
	_, err := a.token(scope, regID, cred)
	return err
}

// Challenge answers a register request that carries the TPM's keys and no
// token: it checks the endorsement key against the device's individual
// enrollment and returns a *dps.TPMChallenge with a fresh activation blob
// wrapping a new key K1, which becomes the only challenge of this
// registration ID.
func (a *Attestor) Challenge(ctx context.Context, scope, regID string, cred dps.Credential) error {
	if cred.TPM == nil {
		return dps.Unauthenticated(errors.New("no TPM keys presented"))
	}
	e, err := a.o.Store.Enrollment(ctx, regID)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNotFound, Message: "No enrollment for this registration ID.", Err: err}
		}
		return err
	}
	if e.Attestation.Type != dps.AttestationTPM || e.Attestation.TPM == nil {
		return errEKMismatch(errors.New("the enrollment does not use TPM attestation"))
	}
	enrolled, err1 := dps.ParseTPMPublicRSA(e.Attestation.TPM.EndorsementKey)
	sent, err2 := dps.ParseTPMPublicRSA(cred.TPM.EndorsementKey)
	if err1 != nil || err2 != nil || !bytes.Equal(enrolled, sent) {
		return errEKMismatch(errors.New("the endorsement key does not match the enrollment"))
	}
	srk := cred.TPM.StorageRootKey
	if srk == "" {
		srk = e.Attestation.TPM.StorageRootKey
	}
	if srk == "" {
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "tpm.storageRootKey is required"}
	}
	k1 := make([]byte, 32)
	rand.Read(k1)
	blob, err := wrap(e.Attestation.TPM.EndorsementKey, srk, k1, scope, regID)
	if err != nil {
		return err
	}
	now := a.o.Now().UTC()
	if err := a.o.Store.PutChallenge(ctx, dps.Challenge{
		RegistrationID: regID,
		Key:            dps.Key(base64.StdEncoding.EncodeToString(k1)),
		StorageRootKey: srk,
		Created:        now,
		Expires:        now.Add(a.o.ChallengeTTL),
	}); err != nil {
		return err
	}
	return &dps.TPMChallenge{AuthenticationKey: blob, KeyName: "registration"}
}

// errEKMismatch refuses a TPM device whose endorsement key is not its
// enrollment's with Azure's words for such a key: 400004 "Endorsement key is
// invalid, or does not match the Enrollment." (Azure/azure-iot-sdk-c#1502,
// #1955). Not a 401: every SDK's TPM path reads a 401 to this first request
// as the challenge, and one without authenticationKey is a parse error (C
// SDK: PROV_DEVICE_RESULT_PARSING; C# decodes a null key; Node: FormatError;
// aziot: a body it cannot parse). No answer reads as an authentication
// failure to all of them (the C SDK gives DEV_AUTH_ERROR only for a body
// with status "failed", which the others do not expect here), so the error
// JSON with a 400 is the plain refusal: C# and aziot report its errorCode
// and message, the C SDK (PROV_DEVICE_RESULT_TRANSPORT) and Node a failed
// request.
func errEKMismatch(cause error) error {
	return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "Endorsement key is invalid, or does not match the Enrollment.", Err: cause}
}

// wrap builds a base64 activation blob wrapping key for the TPM of ek and
// srk (base64 TPM2B_PUBLIC).
func wrap(ek, srk string, key []byte, scope, regID string) (string, error) {
	ekb, err := base64.StdEncoding.DecodeString(ek)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "tpm.endorsementKey is not base64"}
	}
	srkb, err := base64.StdEncoding.DecodeString(srk)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "tpm.storageRootKey is not base64"}
	}
	b, err := ActivationBlob(nil, ekb, srkb, key, []byte(scope+"/registrations/"+regID))
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "the TPM keys cannot wrap a key: " + err.Error(), Err: err}
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// Attest verifies the device's token with the key of its latest, unexpired
// challenge. TPM devices have individual enrollments only: with e nil
// nothing matches.
func (a *Attestor) Attest(ctx context.Context, scope, regID string, cred dps.Credential, e *dps.Enrollment) (dps.Attested, error) {
	if e == nil {
		return dps.Attested{}, dps.Unauthenticated(errors.New("TPM devices need an individual enrollment"))
	}
	tok, err := a.token(scope, regID, cred)
	if err != nil {
		return dps.Attested{}, err
	}
	c, err := a.o.Store.Challenge(ctx, e.RegistrationID)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return dps.Attested{}, dps.Unauthenticated(errors.New("no pending TPM challenge"))
		}
		return dps.Attested{}, err
	}
	if a.o.Now().After(c.Expires) {
		return dps.Attested{}, dps.Unauthenticated(errors.New("the TPM challenge expired"))
	}
	k1, err := base64.StdEncoding.DecodeString(string(c.Key))
	if err != nil || !tok.Valid(k1) {
		return dps.Attested{}, dps.Unauthenticated(sas.ErrSignature)
	}
	return dps.Attested{Enrollment: e, Proof: dps.Proof{Type: dps.AttestationTPM, TPM: &dps.TPMProof{Key: c.Key, StorageRootKey: c.StorageRootKey}}}, nil
}

// Consume spends the challenge an attestation answered, as it starts a new
// registration: only the latest challenge starts one. False when it was
// superseded meanwhile.
func (a *Attestor) Consume(ctx context.Context, regID string, at dps.Attested) (bool, error) {
	if at.Proof.TPM == nil {
		return false, nil
	}
	return a.o.Store.ConsumeChallenge(ctx, regID, at.Proof.TPM.Key)
}

// pollGrace is how long after its end an operation's TPM key still
// authenticates polls, so the device can read the result.
const pollGrace = 10 * time.Minute

// Poll verifies a poll of a TPM operation with the key K1 that started it,
// while the operation runs and shortly after it ends. A device that
// registered again while the operation ran was answered with this
// operation and keeps the challenge it answered then (unconsumed): the key
// of its latest unexpired challenge authenticates the poll too, since only
// its TPM could recover that key.
func (a *Attestor) Poll(ctx context.Context, scope, regID string, cred dps.Credential, op dps.Operation) error {
	tok, err := a.token(scope, regID, cred)
	if err != nil {
		return err
	}
	if op.Status.Final() && a.o.Now().Sub(op.Updated) > pollGrace {
		return dps.Unauthenticated(errors.New("the operation's TPM key expired"))
	}
	if p := op.Proof.TPM; p != nil {
		if k1, err := base64.StdEncoding.DecodeString(string(p.Key)); err == nil && tok.Valid(k1) {
			return nil
		}
	}
	c, err := a.o.Store.Challenge(ctx, regID)
	if err != nil && dps.KindOf(err) != dps.KindNotFound {
		return err
	}
	if k, derr := base64.StdEncoding.DecodeString(string(c.Key)); err == nil && derr == nil && !a.o.Now().After(c.Expires) && tok.Valid(k) {
		return nil
	}
	return dps.Unauthenticated(sas.ErrSignature)
}

// Hub makes the device's hub key K2 and wraps it for its TPM: the device
// authenticates to its hub with K2, which the registration result carries
// as the activation blob.
func (a *Attestor) Hub(ctx context.Context, op dps.Operation, at dps.Attested) (dps.HubAuth, dps.Proof, error) {
	e := at.Enrollment
	if e == nil || e.Attestation.TPM == nil {
		return dps.HubAuth{}, dps.Proof{}, errors.New("the enrollment no longer uses TPM attestation")
	}
	srk := ""
	if op.Proof.TPM != nil {
		srk = op.Proof.TPM.StorageRootKey
	}
	k2 := make([]byte, 32)
	rand.Read(k2)
	blob, err := wrap(e.Attestation.TPM.EndorsementKey, srk, k2, a.o.IDScope, op.RegistrationID)
	if err != nil {
		return dps.HubAuth{}, dps.Proof{}, err
	}
	return dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: dps.Key(base64.StdEncoding.EncodeToString(k2))},
		dps.Proof{Type: dps.AttestationTPM, TPM: &dps.TPMProof{AuthenticationKey: blob}}, nil
}
