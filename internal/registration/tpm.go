package registration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/tpmattest"
)

// challenge answers a TPM device's register request that has no SAS: it
// checks the EK against the device's individual enrollment and returns a
// fresh activation blob wrapping a new key K1, which becomes the only
// challenge of this registration ID.
func (s *Service) challenge(ctx context.Context, req Request) error {
	if s.o.Challenges == nil {
		return unauthorized(errors.New("TPM attestation is not enabled"))
	}
	if !strings.EqualFold(req.IDScope, s.o.IDScope) {
		return unauthorized(errors.New("unknown ID scope"))
	}
	e, err := s.o.Store.Enrollment(ctx, req.RegistrationID)
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
	sent, err2 := dps.ParseTPMPublicRSA(req.TPM.EndorsementKey)
	if err1 != nil || err2 != nil || !bytes.Equal(enrolled, sent) {
		return errEKMismatch(errors.New("the endorsement key does not match the enrollment"))
	}
	srk := req.TPM.StorageRootKey
	if srk == "" {
		srk = e.Attestation.TPM.StorageRootKey
	}
	if srk == "" {
		return &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "tpm.storageRootKey is required"}
	}
	k1 := make([]byte, 32)
	rand.Read(k1)
	blob, err := s.blob(e.Attestation.TPM.EndorsementKey, srk, k1, req.IDScope, req.RegistrationID)
	if err != nil {
		return err
	}
	now := s.o.Now().UTC()
	if err := s.o.Challenges.PutChallenge(ctx, dps.Challenge{
		RegistrationID: req.RegistrationID,
		Key:            dps.Key(base64.StdEncoding.EncodeToString(k1)),
		StorageRootKey: srk,
		Created:        now,
		Expires:        now.Add(s.o.ChallengeTTL),
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

// blob builds a base64 activation blob wrapping key for the TPM of ek and srk.
func (s *Service) blob(ek, srk string, key []byte, scope, regID string) (string, error) {
	ekb, err := base64.StdEncoding.DecodeString(ek)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "tpm.endorsementKey is not base64"}
	}
	srkb, err := base64.StdEncoding.DecodeString(srk)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "tpm.storageRootKey is not base64"}
	}
	b, err := tpmattest.ActivationBlob(nil, ekb, srkb, key, []byte(scope+"/registrations/"+regID))
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeInvalid, Message: "the TPM keys cannot wrap a key: " + err.Error(), Err: err}
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// answerChallenge verifies a TPM device's SAS with the key of its latest,
// unexpired challenge.
func (s *Service) answerChallenge(ctx context.Context, e *dps.Enrollment, tok sas.Token) (match, error) {
	if s.o.Challenges == nil {
		return match{}, unauthorized(errors.New("TPM attestation is not enabled"))
	}
	c, err := s.o.Challenges.Challenge(ctx, e.RegistrationID)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return match{}, unauthorized(errors.New("no pending TPM challenge"))
		}
		return match{}, err
	}
	if s.o.Now().After(c.Expires) {
		return match{}, unauthorized(errors.New("the TPM challenge expired"))
	}
	k1, err := base64.StdEncoding.DecodeString(string(c.Key))
	if err != nil || !tok.Valid(k1) {
		return match{}, unauthorized(sas.ErrSignature)
	}
	return match{enrollment: e, tpm: &c}, nil
}

// tpmPollGrace is how long after its end an operation's TPM key still
// authenticates polls, so the device can read the result.
const tpmPollGrace = 10 * time.Minute

// authenticateTPMPoll verifies a poll of a TPM operation with the key K1
// that started it, while the operation runs and shortly after it ends. A
// device that registered again while the operation ran was answered with
// this operation and keeps the challenge it answered then (unconsumed): the
// key of its latest unexpired challenge authenticates the poll too, since
// only its TPM could recover that key.
func (s *Service) authenticateTPMPoll(ctx context.Context, scope, regID string, op dps.Operation, cred Credential) error {
	tok, err := s.token(scope, regID, cred)
	if err != nil {
		return err
	}
	if op.Status.Final() && s.o.Now().Sub(op.Updated) > tpmPollGrace {
		return unauthorized(errors.New("the operation's TPM key expired"))
	}
	if k1, err := base64.StdEncoding.DecodeString(string(op.TPMKey)); err == nil && tok.Valid(k1) {
		return nil
	}
	if s.o.Challenges != nil {
		c, err := s.o.Challenges.Challenge(ctx, regID)
		if err != nil && dps.KindOf(err) != dps.KindNotFound {
			return err
		}
		if k, derr := base64.StdEncoding.DecodeString(string(c.Key)); err == nil && derr == nil && !s.o.Now().After(c.Expires) && tok.Valid(k) {
			return nil
		}
	}
	return unauthorized(sas.ErrSignature)
}

// hubKeyBlob makes the TPM device's hub key K2 and wraps it for its TPM.
func (s *Service) hubKeyBlob(op dps.Operation, e *dps.Enrollment) (dps.Key, string, error) {
	if e == nil || e.Attestation.TPM == nil {
		return "", "", errors.New("the enrollment no longer uses TPM attestation")
	}
	k2 := make([]byte, 32)
	rand.Read(k2)
	blob, err := s.blob(e.Attestation.TPM.EndorsementKey, op.TPMStorageRootKey, k2, s.o.IDScope, op.RegistrationID)
	if err != nil {
		return "", "", err
	}
	return dps.Key(base64.StdEncoding.EncodeToString(k2)), blob, nil
}
