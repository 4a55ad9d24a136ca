package x509attest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
)

// Store is what the mechanism reads: individual enrollments (for polls),
// the X.509 groups and the CA certificates they reference.
type Store interface {
	// Enrollment returns an individual enrollment; dps.KindNotFound if none.
	Enrollment(ctx context.Context, registrationID string) (dps.Enrollment, error)
	// Groups returns the groups of an attestation type (shared: read only).
	Groups(ctx context.Context, t dps.AttestationType) ([]dps.Group, error)
	// CACertificate returns a CA certificate; dps.KindNotFound if none.
	CACertificate(ctx context.Context, name string) (dps.CACertificate, error)
}

// Options configure an Attestor.
type Options struct {
	Store Store
	// CRLs, when set, are checked for every group device's chain, and
	// reloaded (the files that changed) at most every CRLReload (default 30
	// seconds) while devices register.
	CRLs      *CRLs
	CRLReload time.Duration
	// Now returns the current time (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Attestor checks X.509 devices: the TLS client chain a device presented.
type Attestor struct {
	o Options

	reloading  sync.Mutex   // one CRL reload at a time
	lastReload atomic.Int64 // time.Now().UnixNano() of the last CRL reload
}

// New returns an Attestor.
func New(o Options) *Attestor {
	if o.CRLReload <= 0 {
		o.CRLReload = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	a := &Attestor{o: o}
	a.lastReload.Store(time.Now().UnixNano())
	return a
}

// Accepts reports whether the device presented a client certificate and
// no SAS token (a SAS token decides otherwise).
func (a *Attestor) Accepts(cred dps.Credential) bool {
	return cred.SAS == "" && len(cred.Certificates) > 0
}

// Screen refuses a leaf certificate that is not the registration ID's or
// not valid now, without reading anything.
func (a *Attestor) Screen(scope, regID string, cred dps.Credential) error {
	if len(cred.Certificates) == 0 {
		return dps.Unauthenticated(errors.New("no client certificate presented"))
	}
	if err := CheckLeaf(cred.Certificates[0], regID, a.o.Now()); err != nil {
		return dps.Unauthenticated(err)
	}
	return nil
}

// Attest matches the device's chain: against e, whose certificate must be
// the leaf, or, when e is nil, against the X.509 group whose certificate
// the chain verifies to, the most specific one (closest to the leaf)
// winning.
func (a *Attestor) Attest(ctx context.Context, scope, regID string, cred dps.Credential, e *dps.Enrollment) (dps.Attested, error) {
	if len(cred.Certificates) == 0 {
		return dps.Attested{}, dps.Unauthenticated(errors.New("no client certificate presented"))
	}
	chain := cred.Certificates
	now := a.o.Now()
	leaf := chain[0]
	if err := CheckLeaf(leaf, regID, now); err != nil {
		return dps.Attested{}, dps.Unauthenticated(err)
	}
	proof := &dps.X509Proof{Certificate: dps.InfoOf(leaf)}
	if e != nil {
		x := e.Attestation.X509
		if x != nil && x.ClientCertificates != nil && MatchesLeaf(leaf, x.ClientCertificates.Primary, x.ClientCertificates.Secondary) {
			return dps.Attested{Enrollment: e, Proof: dps.Proof{Type: dps.AttestationX509, X509: proof}}, nil
		}
		return dps.Attested{}, dps.Unauthenticated(errors.New("the certificate is not the one of the individual enrollment for this registration ID"))
	}
	groups, err := a.o.Store.Groups(ctx, dps.AttestationX509)
	if err != nil {
		return dps.Attested{}, err
	}
	var (
		best      *dps.Group
		bestChain []*x509.Certificate
		bestDepth int
		firstErr  error
	)
	for i := range groups {
		g := &groups[i] // read only: the store's shared group cache
		for _, anchor := range a.anchors(ctx, g) {
			verified, err := Chain(chain, anchor, now)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("group %s: %w", g.ID, err)
				}
				continue
			}
			if depth := len(verified); best == nil || depth < bestDepth {
				best, bestChain, bestDepth = g, verified, depth
			}
		}
	}
	if best == nil {
		if firstErr == nil {
			firstErr = errors.New("no enrollment group's certificate signs this chain")
		}
		return dps.Attested{}, dps.Unauthenticated(firstErr)
	}
	a.reloadCRLs(ctx)
	if revoked, why := a.o.CRLs.Revoked(bestChain); revoked {
		return dps.Attested{}, dps.Unauthenticated(errors.New(why))
	}
	info := dps.InfoOf(bestChain[len(bestChain)-1])
	proof.Signing = &info
	g := *best // a copy: the store's groups are shared (its group cache)
	return dps.Attested{Group: &g, Proof: dps.Proof{Type: dps.AttestationX509, X509: proof}}, nil
}

// reloadCRLs reloads the CRL files that changed, when the last reload is
// CRLReload old; a device that arrives during a reload is checked against
// the lists loaded before.
func (a *Attestor) reloadCRLs(ctx context.Context) {
	if a.o.CRLs == nil || time.Since(time.Unix(0, a.lastReload.Load())) < a.o.CRLReload || !a.reloading.TryLock() {
		return
	}
	defer a.reloading.Unlock()
	a.lastReload.Store(time.Now().UnixNano())
	if err := a.o.CRLs.Reload(); err != nil {
		// The lists loaded before stay in force.
		a.o.Logger.WarnContext(ctx, "reload CRLs", logkey.Error, err)
	}
}

// Poll checks the chain of a poll again, as a register: a revoked or
// expired certificate stops polling too.
func (a *Attestor) Poll(ctx context.Context, scope, regID string, cred dps.Credential, op dps.Operation) error {
	var e *dps.Enrollment
	switch got, err := a.o.Store.Enrollment(ctx, regID); {
	case err == nil:
		e = &got
	case dps.KindOf(err) != dps.KindNotFound:
		return err
	}
	_, err := a.Attest(ctx, scope, regID, cred, e)
	return err
}

// Hub returns the device's authentication on its hub as Azure DPS writes
// it, for individual and group devices alike: selfSigned with the leaf's
// SHA-256 thumbprint as both primary and secondary thumbprint (a group
// device's hub then needs no CA of its own). The registration record
// keeps the certificates' details.
func (a *Attestor) Hub(ctx context.Context, op dps.Operation, at dps.Attested) (dps.HubAuth, dps.Proof, error) {
	x := op.Proof.X509
	if x == nil || x.Certificate.SHA256Thumbprint == "" {
		return dps.HubAuth{}, dps.Proof{}, errors.New("the operation holds no certificate details")
	}
	tp := x.Certificate.SHA256Thumbprint
	return dps.HubAuth{Type: dps.HubAuthSelfSigned, PrimaryThumbprint: tp, SecondaryThumbprint: tp}, op.Proof, nil
}

// anchors returns the certificates an X.509 group's devices chain up to:
// its uploaded signing certificates and its verified CA references.
func (a *Attestor) anchors(ctx context.Context, g *dps.Group) []*x509.Certificate {
	x := g.Attestation.X509
	if x == nil {
		return nil
	}
	var out []*x509.Certificate
	if sc := x.SigningCertificates; sc != nil {
		for _, p := range []string{sc.Primary, sc.Secondary} {
			if c, err := dps.ParseCertificate(p); err == nil && p != "" {
				out = append(out, c)
			}
		}
	}
	if r := x.CAReferences; r != nil {
		for _, name := range []string{r.Primary, r.Secondary} {
			if name == "" {
				continue
			}
			ca, err := a.o.Store.CACertificate(ctx, name)
			if err != nil || !ca.Verified {
				continue // only verified CAs authorise devices
			}
			if c, err := dps.ParseCertificate(ca.Certificate); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
