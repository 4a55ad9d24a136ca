package registration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/opendps/dps"
)

// Authentication has one dispatch point, authenticate: the device's
// individual enrollment, if it has one, names the attestation mechanism
// that checks its credential; otherwise every mechanism that accepts the
// credential's kind tries its enrollment groups. Polls are checked by the
// mechanism of the operation's proof, and a first TPM-style request (keys,
// no proof) by the Challenger that accepts it.

// attestorTypes returns the attestation types with an attestor, in order:
// the order in which group mechanisms are tried.
func attestorTypes(m map[dps.AttestationType]Attestor) []dps.AttestationType {
	types := make([]dps.AttestationType, 0, len(m))
	for t := range m {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// authenticate verifies the device's credential and finds its enrollment.
// An unknown device, a wrong key, a wrong scope and an expired token are all
// reported the same way (401002).
func (s *Service) authenticate(ctx context.Context, scope, regID string, cred dps.Credential) (dps.Attested, error) {
	if err := s.checkScope(scope); err != nil {
		return dps.Attested{}, err
	}
	if err := s.screen(scope, regID, cred); err != nil {
		return dps.Attested{}, err
	}
	// 1. An individual enrollment for this registration ID takes precedence.
	e, err := s.o.Store.Enrollment(ctx, regID)
	switch {
	case err == nil:
		a, ok := s.o.Attestors[e.Attestation.Type]
		if !ok {
			return dps.Attested{}, dps.Unauthenticated(fmt.Errorf("%s attestation is not enabled", e.Attestation.Type))
		}
		if !a.Accepts(cred) {
			return dps.Attested{}, dps.Unauthenticated(fmt.Errorf("the enrollment uses %s attestation, not the credential presented", e.Attestation.Type))
		}
		return a.Attest(ctx, scope, regID, cred, &e)
	case dps.KindOf(err) != dps.KindNotFound:
		return dps.Attested{}, err
	}
	// 2. Otherwise the enrollment groups of the mechanisms that accept the
	// credential.
	var firstErr error
	for _, t := range s.types {
		a := s.o.Attestors[t]
		if !a.Accepts(cred) {
			continue
		}
		at, err := a.Attest(ctx, scope, regID, cred, nil)
		if err == nil {
			return at, nil
		}
		if dps.KindOf(err) != dps.KindUnauthorized {
			return dps.Attested{}, err // the store: not the device's fault
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = dps.Unauthenticated(errors.New("no credential presented"))
	}
	return dps.Attested{}, firstErr
}

// screen refuses a credential that every mechanism accepting it screens
// out (Screener), before anything is read; a mechanism that accepts it and
// cannot screen lets it through. No mechanism accepting it is a refusal too.
func (s *Service) screen(scope, regID string, cred dps.Credential) error {
	var first error
	for _, t := range s.types {
		a := s.o.Attestors[t]
		if !a.Accepts(cred) {
			continue
		}
		sc, ok := a.(Screener)
		if !ok {
			return nil
		}
		err := sc.Screen(scope, regID, cred)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return dps.Unauthenticated(errors.New("no credential presented"))
	}
	return first
}

// checkScope refuses an ID scope that is not the instance's, as an
// unauthenticated device.
func (s *Service) checkScope(scope string) error {
	if !strings.EqualFold(scope, s.o.IDScope) {
		return dps.Unauthenticated(errors.New("unknown ID scope"))
	}
	return nil
}

// challenger returns the mechanism that answers a request presenting no
// proof but what a Challenger accepts (TPM keys), if any.
func (s *Service) challenger(cred dps.Credential) Challenger {
	if cred.SAS != "" || len(cred.Certificates) > 0 {
		return nil
	}
	for _, t := range s.types {
		if c, ok := s.o.Attestors[t].(Challenger); ok && s.o.Attestors[t].Accepts(cred) {
			return c
		}
	}
	return nil
}

// Authenticate checks a device's credential without starting a
// registration: the MQTT transport does this at CONNECT. Devices of a
// mechanism that needs a challenge round trip (TPM) are refused: the MQTT
// protocol has none.
func (s *Service) Authenticate(ctx context.Context, scope, regID string, cred dps.Credential) error {
	if err := dps.ValidateRegistrationID(regID); err != nil {
		return err
	}
	at, err := s.authenticate(ctx, scope, regID, cred)
	if err != nil {
		return err
	}
	if _, ok := s.o.Attestors[at.Proof.Type].(Challenger); ok {
		return dps.Unauthenticated(fmt.Errorf("%s attestation is not supported over MQTT; register over HTTPS", at.Proof.Type))
	}
	return nil
}
