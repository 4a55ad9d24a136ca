// Package symkey is the symmetric-key attestation mechanism: a device signs
// a SAS token with its key, which is its individual enrollment's key or a
// key derived from its enrollment group's key and its registration ID
// (HMAC-SHA256). On its hub the device authenticates with the same keys.
//
// It imports only the domain and the SAS codec.
package symkey

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/sas"
)

// Store is what the mechanism reads: the enrollment an operation matched
// (for its polls) and the symmetric-key groups.
type Store interface {
	// Enrollment returns an individual enrollment; dps.KindNotFound if none.
	Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error)
	// Group returns an enrollment group; dps.KindNotFound if none.
	Group(ctx context.Context, id string) (dps.Group, error)
	// Groups returns the groups of an attestation type (shared: read only).
	Groups(ctx context.Context, t dps.AttestationType) ([]dps.Group, error)
	// GroupsVersion changes whenever any group changes.
	GroupsVersion(ctx context.Context) (int64, error)
}

// Options configure an Attestor.
type Options struct {
	Store Store
	// ClockSkew is how long past its expiry a token is still accepted
	// (default 5 minutes).
	ClockSkew time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// Attestor checks symmetric-key devices.
type Attestor struct {
	o     Options
	cache groupCache // prepared symmetric-key groups (groups.go)
}

// New returns an Attestor.
func New(o Options) *Attestor {
	if o.ClockSkew <= 0 {
		o.ClockSkew = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Attestor{o: o}
}

// Accepts reports whether the device presented a SAS token.
func (a *Attestor) Accepts(cred dps.Credential) bool { return cred.SAS != "" }

func (a *Attestor) token(scope, regID string, cred dps.Credential) (sas.Token, error) {
	tok, err := sas.ParseRegistration(cred.SAS, scope, regID, a.o.Now(), a.o.ClockSkew)
	if err != nil {
		return sas.Token{}, dps.Unauthenticated(err)
	}
	return tok, nil
}

// Screen refuses a token that is malformed, expired or for another
// device, without reading anything.
func (a *Attestor) Screen(scope, regID string, cred dps.Credential) error {
	_, err := a.token(scope, regID, cred)
	return err
}

// Attest checks the device's token against e's keys or, when e is nil,
// finds the first symmetric-key group (in ID order) whose derived key
// signed it: the groups come prepared (groups.go), so refusing an unknown
// device costs only the hashing.
func (a *Attestor) Attest(ctx context.Context, scope, regID string, cred dps.Credential, e *dps.Enrollment) (dps.Attested, error) {
	tok, err := a.token(scope, regID, cred)
	if err != nil {
		return dps.Attested{}, err
	}
	if e != nil {
		sk := e.Attestation.SymmetricKey
		if sk == nil {
			return dps.Attested{}, dps.Unauthenticated(errors.New("enrollment does not use symmetric keys"))
		}
		for _, k := range []dps.Key{sk.PrimaryKey, sk.SecondaryKey} {
			if k == "" {
				continue
			}
			raw, err := sas.DecodeKey(string(k))
			if err == nil && tok.Valid(raw) {
				return dps.Attested{Enrollment: e, Proof: dps.Proof{Type: dps.AttestationSymmetricKey},
					Hub: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: sk.PrimaryKey, SecondaryKey: sk.SecondaryKey}}, nil
			}
		}
		return dps.Attested{}, dps.Unauthenticated(sas.ErrSignature)
	}
	groups, err := a.groups(ctx)
	if err != nil {
		return dps.Attested{}, err
	}
	if at, ok := groups.match(tok, regID); ok {
		return at, nil
	}
	return dps.Attested{}, dps.Unauthenticated(errors.New("no enrollment matches"))
}

// Poll checks the token of a poll of op against the one enrollment op
// matched: one key derivation, no scan of the groups.
func (a *Attestor) Poll(ctx context.Context, scope, regID string, cred dps.Credential, op dps.Operation) error {
	tok, err := a.token(scope, regID, cred)
	if err != nil {
		return err
	}
	var keys []dps.Key
	derive := false
	if op.EnrollmentGroupID == "" {
		e, err := a.o.Store.Enrollment(ctx, regID)
		if err != nil {
			if dps.KindOf(err) == dps.KindNotFound {
				return dps.Unauthenticated(err)
			}
			return err
		}
		if sk := e.Attestation.SymmetricKey; sk != nil {
			keys = []dps.Key{sk.PrimaryKey, sk.SecondaryKey}
		}
	} else {
		g, err := a.o.Store.Group(ctx, op.EnrollmentGroupID)
		if err != nil {
			if dps.KindOf(err) == dps.KindNotFound {
				return dps.Unauthenticated(err)
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
	return dps.Unauthenticated(sas.ErrSignature)
}

// Hub returns the device's keys for its hub: those its attestation found
// (at.Hub), or, for an operation completed in the background, its
// individual enrollment's keys or the keys derived from its group's keys.
func (a *Attestor) Hub(ctx context.Context, op dps.Operation, at dps.Attested) (dps.HubAuth, dps.Proof, error) {
	p := dps.Proof{Type: dps.AttestationSymmetricKey}
	if at.Hub.Type != "" {
		return at.Hub, p, nil
	}
	h := dps.HubAuth{Type: dps.HubAuthSAS}
	switch {
	case at.Group != nil:
		if sk := at.Group.Attestation.SymmetricKey; sk != nil {
			for j, k := range []dps.Key{sk.PrimaryKey, sk.SecondaryKey} {
				if raw, err := sas.DecodeKey(string(k)); err == nil && k != "" {
					setKey(&h, j, sas.DeriveKey(raw, op.RegistrationID))
				}
			}
		}
	case at.Enrollment != nil:
		if sk := at.Enrollment.Attestation.SymmetricKey; sk != nil {
			h.PrimaryKey, h.SecondaryKey = sk.PrimaryKey, sk.SecondaryKey
		}
	}
	return h, p, nil
}

// setKey sets h's primary (j 0) or secondary (j 1) key to key, in base64.
func setKey(h *dps.HubAuth, j int, key []byte) {
	k := dps.Key(base64.StdEncoding.EncodeToString(key))
	if j == 0 {
		h.PrimaryKey = k
	} else {
		h.SecondaryKey = k
	}
}
