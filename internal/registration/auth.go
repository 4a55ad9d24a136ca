package registration

import (
	"context"
	"errors"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
)

// match is the enrollment a device authenticated against.
type match struct {
	enrollment *dps.Enrollment
	group      *dps.Group
	// deviceKeys are the device's symmetric keys (individual keys, or keys
	// derived from the group's keys), base64.
	deviceKeys [2]dps.Key
	// x509 is set for X.509 devices.
	x509 *dps.X509Proof
	// tpm is the challenge a TPM device answered.
	tpm *dps.Challenge
}

func (m *match) attestation() dps.AttestationType {
	switch {
	case m.x509 != nil:
		return dps.AttestationX509
	case m.tpm != nil:
		return dps.AttestationTPM
	}
	return dps.AttestationSymmetricKey
}

func (m *match) settings() *dps.Settings {
	if m.enrollment != nil {
		return &m.enrollment.Settings
	}
	return &m.group.Settings
}

func (m *match) groupID() string {
	if m.group != nil {
		return m.group.ID
	}
	return ""
}

var errUnauthorized = &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized, Message: "Invalid certificate or SAS token: the device could not be authenticated."}

func unauthorized(cause error) error {
	e := *errUnauthorized
	e.Err = cause
	return &e
}

// token parses the device's SAS token and checks everything but the
// signature: scope, resource, expiry (with clock skew) and key name.
func (s *Service) token(scope, regID string, cred Credential) (sas.Token, error) {
	if !strings.EqualFold(scope, s.o.IDScope) {
		return sas.Token{}, unauthorized(errors.New("unknown ID scope"))
	}
	if cred.SAS == "" {
		return sas.Token{}, unauthorized(errors.New("no credential presented"))
	}
	tok, err := sas.Parse(cred.SAS)
	if err != nil {
		return sas.Token{}, unauthorized(err)
	}
	if !strings.EqualFold(tok.Resource, scope+"/registrations/"+regID) {
		return sas.Token{}, unauthorized(sas.ErrResource)
	}
	if err := tok.CheckExpiry(s.o.Now(), s.o.ClockSkew); err != nil {
		return sas.Token{}, unauthorized(err)
	}
	if tok.KeyName != "" && !strings.EqualFold(tok.KeyName, "registration") {
		return sas.Token{}, unauthorized(errors.New("unexpected skn"))
	}
	return tok, nil
}

// authenticate verifies the device's credential and finds its enrollment.
// An unknown device, a wrong key, a wrong scope and an expired token are all
// reported the same way (401002).
func (s *Service) authenticate(ctx context.Context, scope, regID string, cred Credential) (match, error) {
	if cred.SAS == "" && len(cred.Certificates) > 0 {
		return s.authenticateX509(ctx, scope, regID, cred.Certificates)
	}
	tok, err := s.token(scope, regID, cred)
	if err != nil {
		return match{}, err
	}

	// 1. An individual enrollment for this registration ID takes precedence.
	e, err := s.o.Store.Enrollment(ctx, regID)
	switch {
	case err == nil:
		if e.Attestation.Type == dps.AttestationTPM {
			return s.answerChallenge(ctx, &e, tok)
		}
		if e.Attestation.Type != dps.AttestationSymmetricKey || e.Attestation.SymmetricKey == nil {
			return match{}, unauthorized(errors.New("enrollment does not use symmetric keys"))
		}
		sk := e.Attestation.SymmetricKey
		for _, k := range []dps.Key{sk.PrimaryKey, sk.SecondaryKey} {
			if k == "" {
				continue
			}
			raw, err := sas.DecodeKey(string(k))
			if err == nil && tok.Valid(raw) {
				return match{enrollment: &e, deviceKeys: [2]dps.Key{sk.PrimaryKey, sk.SecondaryKey}}, nil
			}
		}
		return match{}, unauthorized(sas.ErrSignature)
	case dps.KindOf(err) != dps.KindNotFound:
		return match{}, err
	}

	// 2. Otherwise a symmetric-key group whose derived key signed the token
	// (groupkeys.go: the groups come prepared, so refusing an unknown device
	// costs only the hashing).
	groups, err := s.symmetricGroups(ctx)
	if err != nil {
		return match{}, err
	}
	if m, ok := groups.match(tok, regID); ok {
		return m, nil
	}
	return match{}, unauthorized(errors.New("no enrollment matches"))
}

// Authenticate checks a device's credential without starting a
// registration: the MQTT transport does this at CONNECT. TPM devices are
// refused: TPM attestation is not part of the MQTT protocol.
func (s *Service) Authenticate(ctx context.Context, scope, regID string, cred Credential) error {
	if err := dps.ValidateRegistrationID(regID); err != nil {
		return err
	}
	m, err := s.authenticate(ctx, scope, regID, cred)
	if err == nil && m.tpm != nil {
		return unauthorized(errors.New("TPM attestation is not supported over MQTT; register over HTTPS"))
	}
	return err
}

// authenticateFor verifies a credential against one known enrollment: the
// group groupID, or the individual enrollment of regID when groupID is "".
func (s *Service) authenticateFor(ctx context.Context, scope, regID, groupID string, cred Credential) error {
	tok, err := s.token(scope, regID, cred)
	if err != nil {
		return err
	}
	var keys []dps.Key
	derive := false
	if groupID == "" {
		e, err := s.o.Store.Enrollment(ctx, regID)
		if err != nil {
			if dps.KindOf(err) == dps.KindNotFound {
				return unauthorized(err)
			}
			return err
		}
		if sk := e.Attestation.SymmetricKey; sk != nil {
			keys = []dps.Key{sk.PrimaryKey, sk.SecondaryKey}
		}
	} else {
		g, err := s.o.Store.Group(ctx, groupID)
		if err != nil {
			if dps.KindOf(err) == dps.KindNotFound {
				return unauthorized(err)
			}
			return err
		}
		if sk := g.Attestation.SymmetricKey; sk != nil {
			keys, derive = []dps.Key{sk.PrimaryKey, sk.SecondaryKey}, true
		}
	}
	ids := []string{regID}
	if l := strings.ToLower(regID); derive && l != regID {
		ids = append(ids, l)
	}
	for _, k := range keys {
		raw, err := sas.DecodeKey(string(k))
		if k == "" || err != nil {
			continue
		}
		if !derive {
			if tok.Valid(raw) {
				return nil
			}
			continue
		}
		for _, id := range ids {
			if tok.Valid(sas.DeriveKey(raw, id)) {
				return nil
			}
		}
	}
	return unauthorized(sas.ErrSignature)
}
