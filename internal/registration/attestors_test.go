package registration_test

import (
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/registration"
	"github.com/opendps/dps/internal/symkey"
	"github.com/opendps/dps/internal/tpmattest"
	"github.com/opendps/dps/internal/x509attest"
)

// attestStore is what the three attestation mechanisms read.
type attestStore interface {
	symkey.Store
	x509attest.Store
	tpmattest.Store
}

// mechanisms configure the attestors of a test: the engine's clock (nil:
// time.Now), CRLs and the TPM challenge lifetime (0: the default).
type mechanisms struct {
	now          func() time.Time
	crls         *x509attest.CRLs
	challengeTTL time.Duration
}

// attestors are the three mechanisms on st, as dpsd wires them.
func attestors(st attestStore, m mechanisms) map[dps.AttestationType]registration.Attestor {
	return map[dps.AttestationType]registration.Attestor{
		dps.AttestationSymmetricKey: symkey.New(symkey.Options{Store: st, Now: m.now}),
		dps.AttestationX509:         x509attest.New(x509attest.Options{Store: st, CRLs: m.crls, Now: m.now}),
		dps.AttestationTPM:          tpmattest.New(tpmattest.Options{Store: st, IDScope: scope, ChallengeTTL: m.challengeTTL, Now: m.now}),
	}
}
