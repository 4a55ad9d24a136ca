package registration

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/x509attest"
)

// authenticateX509 matches a device's TLS client chain: an individual
// enrollment for the registration ID first (its certificate must be the
// leaf), else the enrollment group whose certificate the chain verifies to,
// the most specific one (closest to the leaf) winning.
func (s *Service) authenticateX509(ctx context.Context, scope, regID string, chain []*x509.Certificate) (match, error) {
	if !strings.EqualFold(scope, s.o.IDScope) {
		return match{}, unauthorized(errors.New("unknown ID scope"))
	}
	now := s.o.Now()
	leaf := chain[0]
	if err := x509attest.CheckLeaf(leaf, regID, now); err != nil {
		return match{}, unauthorized(err)
	}
	proof := &dps.X509Proof{Certificate: dps.InfoOf(leaf)}
	e, err := s.o.Store.Enrollment(ctx, regID)
	switch {
	case err == nil:
		x := e.Attestation.X509
		if e.Attestation.Type == dps.AttestationX509 && x != nil && x.ClientCertificates != nil &&
			x509attest.MatchesLeaf(leaf, x.ClientCertificates.Primary, x.ClientCertificates.Secondary) {
			return match{enrollment: &e, x509: proof}, nil
		}
		return match{}, unauthorized(errors.New("the certificate is not the one of the individual enrollment for this registration ID"))
	case dps.KindOf(err) != dps.KindNotFound:
		return match{}, err
	}
	groups, err := s.o.Store.Groups(ctx, dps.AttestationX509)
	if err != nil {
		return match{}, err
	}
	var (
		best      *dps.Group
		bestChain []*x509.Certificate
		bestDepth int
		firstErr  error
	)
	for i := range groups {
		g := &groups[i] // read only: the store's shared group cache
		for _, anchor := range s.anchors(ctx, g) {
			verified, err := x509attest.Chain(chain, anchor, now)
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
		return match{}, unauthorized(firstErr)
	}
	if revoked, why := s.o.CRLs.Revoked(bestChain); revoked {
		return match{}, unauthorized(errors.New(why))
	}
	info := dps.InfoOf(bestChain[len(bestChain)-1])
	proof.Signing = &info
	g := *best // a copy: the store's groups are shared (its group cache)
	return match{group: &g, x509: proof}, nil
}

// anchors returns the certificates an X.509 group's devices chain up to:
// its uploaded signing certificates and its verified CA references.
func (s *Service) anchors(ctx context.Context, g *dps.Group) []*x509.Certificate {
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
			ca, err := s.o.Store.CACertificate(ctx, name)
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
