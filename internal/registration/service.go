package registration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/tpmattest"
	"github.com/opendps/dps/internal/x509attest"
)

// Options configure a Service.
type Options struct {
	IDScope       string
	LinkedHubs    []dps.LinkedHub
	DefaultPolicy dps.AllocationPolicy
	Allocators    map[dps.AllocationPolicy]Allocator
	Hubs          HubConnector
	Store         Store
	Logger        *slog.Logger
	Observer      Observer
	// Workers is how many operations are completed concurrently (default
	// 1024): operations waiting on a slow webhook do not hold up others.
	Workers int
	// ClockSkew is how long past its expiry a SAS token is still accepted
	// (default 5 minutes).
	ClockSkew time.Duration
	// OperationRetention is how long finished operations stay queryable
	// (default 24 hours).
	OperationRetention time.Duration
	// SweepInterval is how often unfinished operations are re-queued and old
	// ones pruned (default 5 seconds).
	SweepInterval time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// CRLs, when set, are checked for every X.509 group device's chain.
	CRLs *x509attest.CRLs
	// Challenges keeps TPM challenges; nil disables TPM attestation.
	Challenges ChallengeStore
	// ChallengeTTL is how long an unused TPM challenge stays valid (default 5 minutes).
	ChallengeTTL time.Duration
	// Lease is how long a node owns an operation it processes before
	// another node may take it over (default 30s; renewed while working).
	Lease time.Duration
	// NodeID names this node as the owner of the operations it processes
	// (default: random).
	NodeID string
}

// Service is the registration engine. Create it with New, start its workers
// with Start, and stop them with Close.
type Service struct {
	o     Options
	log   *slog.Logger
	queue chan dps.Operation

	mu       sync.Mutex // guards inflight
	inflight map[string]bool

	locks [256]sync.Mutex // per registration ID, by hash

	recent recentOps // final operations, for polls

	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// New returns a Service; call Start before accepting requests.
func New(o Options) *Service {
	if o.Workers <= 0 {
		o.Workers = 1024
	}
	if o.ClockSkew <= 0 {
		o.ClockSkew = 5 * time.Minute
	}
	if o.OperationRetention <= 0 {
		o.OperationRetention = 24 * time.Hour
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.NodeID == "" {
		o.NodeID = "node-" + strings.ToLower(rand.Text()[:10])
	}
	if o.ChallengeTTL <= 0 {
		o.ChallengeTTL = 5 * time.Minute
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DefaultPolicy == "" {
		o.DefaultPolicy = dps.AllocationHashed
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	return &Service{o: o, log: o.Logger, queue: make(chan dps.Operation, 8192), inflight: map[string]bool{}}
}

type nopObserver struct{}

func (nopObserver) Completed(dps.Status, time.Duration) {}
func (nopObserver) Rejected(dps.Kind)                   {}
func (nopObserver) InFlight(int)                        {}

// Start resumes unfinished operations and starts the workers. It returns
// once the unfinished operations are queued.
func (s *Service) Start(ctx context.Context) error {
	pending, err := s.o.Store.PendingOperations(ctx)
	if err != nil {
		return fmt.Errorf("registration: load unfinished operations: %w", err)
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.wg.Go(func() { s.dispatch(wctx) })
	if len(pending) > 0 {
		s.log.InfoContext(ctx, "resuming unfinished operations", "count", len(pending))
	}
	s.wg.Go(func() {
		for _, op := range pending {
			s.enqueue(wctx, op, true)
		}
	})
	s.wg.Go(func() { s.sweep(wctx) })
	return nil
}

// Close stops the workers and waits for them. Operations not finished stay
// persisted and resume at the next Start.
func (s *Service) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	return nil
}

func (s *Service) enqueue(ctx context.Context, op dps.Operation, block bool) {
	s.mu.Lock()
	if s.inflight[op.ID] {
		s.mu.Unlock()
		return
	}
	s.inflight[op.ID] = true
	s.mu.Unlock()
	if block {
		select {
		case s.queue <- op:
			return
		case <-ctx.Done():
		}
	} else {
		select {
		case s.queue <- op:
			return
		default: // full: the sweeper picks it up from the store
		}
	}
	s.mu.Lock()
	delete(s.inflight, op.ID)
	s.mu.Unlock()
}

// dispatch runs each queued operation in its own goroutine, at most
// Workers at a time.
func (s *Service) dispatch(ctx context.Context) {
	sem := make(chan struct{}, s.o.Workers)
	for {
		var op dps.Operation
		select {
		case <-ctx.Done():
			return
		case op = <-s.queue:
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		s.wg.Go(func() {
			defer func() { <-sem }()
			s.o.Observer.InFlight(1)
			s.process(ctx, op)
			s.o.Observer.InFlight(-1)
			s.mu.Lock()
			delete(s.inflight, op.ID)
			s.mu.Unlock()
		})
	}
}

// sweep re-queues persisted operations that are not in flight (after a
// failed completion or a full queue) and prunes old finished operations.
func (s *Service) sweep(ctx context.Context) {
	t := time.NewTicker(s.o.SweepInterval)
	defer t.Stop()
	lastPrune, lastCRL := time.Time{}, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.o.CRLs != nil && time.Since(lastCRL) > 30*time.Second {
			lastCRL = time.Now()
			if err := s.o.CRLs.Reload(); err != nil {
				s.log.WarnContext(ctx, "reload CRLs", logkey.Error, err)
			}
		}
		pending, err := s.o.Store.PendingOperations(ctx)
		if err != nil {
			s.log.WarnContext(ctx, "sweep: list unfinished operations", logkey.Error, err)
			continue
		}
		for _, op := range pending {
			if s.o.Now().Sub(op.Created) > time.Second {
				s.enqueue(ctx, op, true)
			}
		}
		if p, ok := s.o.Store.(interface {
			DeleteOperationsBefore(context.Context, time.Time) (int64, error)
		}); ok && time.Since(lastPrune) > time.Minute {
			lastPrune = time.Now()
			if n, err := p.DeleteOperationsBefore(ctx, s.o.Now().Add(-s.o.OperationRetention)); err != nil {
				s.log.WarnContext(ctx, "sweep: prune operations", logkey.Error, err)
			} else if n > 0 {
				s.log.DebugContext(ctx, "pruned finished operations", "count", n)
			}
		}
	}
}

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

var errUnauthorized = &dps.Error{Kind: dps.KindUnauthorized, Code: 401002, Message: "Invalid certificate or SAS token: the device could not be authenticated."}

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

	// 2. Otherwise a symmetric-key group whose derived key signed the token.
	groups, err := s.o.Store.Groups(ctx, dps.AttestationSymmetricKey)
	if err != nil {
		return match{}, err
	}
	ids := []string{regID}
	if l := strings.ToLower(regID); l != regID {
		ids = append(ids, l)
	}
	for _, id := range ids {
		for i := range groups {
			g := &groups[i]
			sk := g.Attestation.SymmetricKey
			if sk == nil {
				continue
			}
			var derived [2]dps.Key
			ok := false
			for j, k := range []dps.Key{sk.PrimaryKey, sk.SecondaryKey} {
				if k == "" {
					continue
				}
				raw, err := sas.DecodeKey(string(k))
				if err != nil {
					continue
				}
				dk := sas.DeriveKey(raw, id)
				derived[j] = dps.Key(base64.StdEncoding.EncodeToString(dk))
				if tok.Valid(dk) {
					ok = true
				}
			}
			if ok {
				return match{group: g, deviceKeys: derived}, nil
			}
		}
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

// Register authenticates a device and accepts a registration operation.
// The operation is persisted before Register returns; it completes in the
// background. A disabled enrollment yields an operation that is already
// final with status disabled.
func (s *Service) Register(ctx context.Context, req Request) (dps.Operation, error) {
	op, err := s.register(ctx, req)
	if err != nil {
		s.o.Observer.Rejected(dps.KindOf(err))
	}
	return op, err
}

func (s *Service) register(ctx context.Context, req Request) (dps.Operation, error) {
	if err := dps.ValidateRegistrationID(req.RegistrationID); err != nil {
		return dps.Operation{}, err
	}
	if req.Credential.SAS == "" && len(req.Credential.Certificates) == 0 && req.TPM != nil {
		return dps.Operation{}, s.challenge(ctx, req)
	}
	m, err := s.authenticate(ctx, req.IDScope, req.RegistrationID, req.Credential)
	if err != nil {
		return dps.Operation{}, err
	}
	if m.tpm != nil {
		// Only the latest challenge starts one registration.
		ok, err := s.o.Challenges.ConsumeChallenge(ctx, req.RegistrationID, m.tpm.Key)
		if err != nil {
			return dps.Operation{}, err
		}
		if !ok {
			return dps.Operation{}, unauthorized(errors.New("the TPM challenge was superseded"))
		}
	}
	now := s.o.Now().UTC()
	op := dps.Operation{
		ID:                newOperationID(),
		RegistrationID:    req.RegistrationID,
		EnrollmentGroupID: m.groupID(),
		Attestation:       m.attestation(),
		X509:              m.x509,
		Status:            dps.StatusAssigning,
		Payload:           req.Payload,
		Created:           now,
		Updated:           now,
	}
	if m.tpm != nil {
		op.TPMKey, op.TPMStorageRootKey = m.tpm.Key, m.tpm.StorageRootKey
	}
	if !m.settings().Enabled() {
		op.Status = dps.StatusDisabled
		op.Result = &dps.Registration{RegistrationID: req.RegistrationID, Status: dps.StatusDisabled, EnrollmentGroupID: m.groupID(), Attestation: op.Attestation, Updated: now}
		if _, err := s.o.Store.CreateOperation(ctx, op); err != nil {
			return dps.Operation{}, err
		}
		s.o.Observer.Completed(dps.StatusDisabled, 0)
		s.log.InfoContext(ctx, "registration refused: enrollment disabled", logkey.RegistrationID, req.RegistrationID, logkey.EnrollmentGroup, m.groupID())
		return op, nil
	}
	if s.inline(m) {
		if done, ok := s.completeInline(ctx, op, &m); ok {
			return done, nil
		}
	}
	if _, err := s.o.Store.CreateOperation(ctx, op); err != nil {
		return dps.Operation{}, err
	}
	s.enqueue(ctx, op, false)
	return op, nil
}

// hubEffects are the device records a registration produced, when the
// store writes them with the operation (the built-in hub connector).
type hubEffects struct {
	put    *dps.HubDevice
	remove *dps.HubDevice // hub and device ID only
}

// DeviceRecorder is an optional Store ability: create an operation together
// with the hub device records it produced (put, and remove when the device
// moved), in one transaction.
type DeviceRecorder interface {
	CreateOperationWithDevice(ctx context.Context, op dps.Operation, put dps.HubDevice, remove *dps.HubDevice) (dps.Operation, error)
}

// recorder reports whether device records can be written with operations:
// the hub connector records devices in the registration store itself (the
// built-in connector) and the store can write both at once.
func (s *Service) recorder() (DeviceRecorder, bool) {
	hc, ok := s.o.Hubs.(interface{ RecordsIn() any })
	if !ok || hc.RecordsIn() != any(s.o.Store) {
		return nil, false
	}
	rec, ok := s.o.Store.(DeviceRecorder)
	return rec, ok
}

// inline reports whether a registration is completed within its register
// request: every policy but custom, whose webhook may take seconds.
func (s *Service) inline(m match) bool {
	policy := m.settings().AllocationPolicy
	if policy == "" {
		policy = s.o.DefaultPolicy
	}
	return policy != dps.AllocationCustom
}

// completeInline completes a registration before it is accepted: the
// operation is written once, already final, with its registration record,
// in one transaction, and the device's first poll finds the result. A crash
// before that commit loses nothing that was acknowledged. ok is false when
// the work must be retried asynchronously (a transient failure).
func (s *Service) completeInline(ctx context.Context, op dps.Operation, m *match) (dps.Operation, bool) {
	l := s.lockFor(op.RegistrationID)
	l.Lock()
	defer l.Unlock()
	s.o.Observer.InFlight(1)
	defer s.o.Observer.InFlight(-1)
	rec, recording := s.recorder()
	var fx *hubEffects
	if recording {
		fx = &hubEffects{}
	}
	final, err := s.complete(ctx, op, m, fx)
	if err != nil {
		s.log.WarnContext(ctx, "registration continues asynchronously", logkey.RegistrationID, op.RegistrationID, logkey.Error, err)
		return op, false
	}
	final.Updated = s.o.Now().UTC()
	var stored dps.Operation
	if fx != nil && fx.put != nil {
		stored, err = rec.CreateOperationWithDevice(ctx, final, *fx.put, fx.remove)
	} else {
		stored, err = s.o.Store.CreateOperation(ctx, final)
	}
	if err != nil {
		s.log.WarnContext(ctx, "registration continues asynchronously", logkey.RegistrationID, op.RegistrationID, logkey.Error, err)
		return op, false
	}
	s.finished(ctx, stored)
	return stored, true
}

// Operation returns the state of an operation after authenticating the
// device. A device is checked against the enrollment its operation matched
// (one key derivation, no scan of all groups); an unknown operation is
// reported only after a full authentication, so operation IDs cannot be
// probed without a valid credential.
func (s *Service) Operation(ctx context.Context, scope, regID, operationID string, cred Credential) (dps.Operation, error) {
	notFound := &dps.Error{Kind: dps.KindNotFound, Code: 404201, Message: "operation not found"}
	op, ok := s.recent.get(operationID, s.o.Now().Add(-s.o.OperationRetention))
	var err error
	if !ok {
		op, err = s.o.Store.Operation(ctx, operationID)
		if err != nil && dps.KindOf(err) != dps.KindNotFound {
			return dps.Operation{}, err
		}
		if err == nil && op.Status.Final() {
			s.recent.put(op)
		}
	}
	if err != nil || !strings.EqualFold(op.RegistrationID, regID) {
		if _, err := s.authenticate(ctx, scope, regID, cred); err != nil {
			return dps.Operation{}, err
		}
		return dps.Operation{}, notFound
	}
	if cred.SAS == "" && len(cred.Certificates) > 0 {
		// X.509: the chain is checked again (a revoked or expired
		// certificate stops polling too).
		if _, err := s.authenticateX509(ctx, scope, regID, cred.Certificates); err != nil {
			return dps.Operation{}, err
		}
		return op, nil
	}
	if op.Attestation == dps.AttestationTPM {
		if err := s.authenticateTPMPoll(scope, regID, op, cred); err != nil {
			return dps.Operation{}, err
		}
		return op, nil
	}
	if err := s.authenticateFor(ctx, scope, regID, op.EnrollmentGroupID, cred); err != nil {
		return dps.Operation{}, err
	}
	return op, nil
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

// Lookup returns a device's registration record after authenticating it.
func (s *Service) Lookup(ctx context.Context, scope, regID string, cred Credential) (dps.Registration, error) {
	if err := dps.ValidateRegistrationID(regID); err != nil {
		return dps.Registration{}, err
	}
	if _, err := s.authenticate(ctx, scope, regID, cred); err != nil {
		return dps.Registration{}, err
	}
	r, err := s.o.Store.Registration(ctx, regID)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return dps.Registration{}, &dps.Error{Kind: dps.KindNotFound, Code: 404201, Message: "registration not found", Err: err}
		}
		return dps.Registration{}, err
	}
	return r, nil
}

func newOperationID() string {
	var b [24]byte
	rand.Read(b[:])
	u := b[8:]
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u)
	return "1." + hex.EncodeToString(b[:8]) + "." + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (s *Service) lockFor(regID string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(dps.FoldID(regID)))
	return &s.locks[h.Sum32()%uint32(len(s.locks))]
}

// process completes one operation. Transient failures (store errors) leave
// the operation unfinished for the sweeper to retry.
func (s *Service) process(ctx context.Context, op dps.Operation) {
	l := s.lockFor(op.RegistrationID)
	l.Lock()
	defer l.Unlock()
	if sn, ok := s.o.Store.(interface{ SingleNode() bool }); ok && sn.SingleNode() {
		s.work(ctx, op, func() {}) // one node: nobody to share the work with
		return
	}
	// Own the operation for the time of the work; another node takes it
	// over only if this one stops renewing.
	owned, err := s.o.Store.ClaimOperation(ctx, op.ID, s.o.NodeID, s.o.Now().Add(s.o.Lease))
	if err != nil || !owned {
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "operation will be retried: claim failed", logkey.OperationID, op.ID, logkey.Error, err)
		}
		return
	}
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	go func() {
		t := time.NewTicker(s.o.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-t.C:
				s.o.Store.ClaimOperation(renewCtx, op.ID, s.o.NodeID, s.o.Now().Add(s.o.Lease))
			}
		}
	}()
	s.work(ctx, op, func() {
		stopRenew()
		// Give the lease up so any node (this one included) retries at once.
		s.o.Store.ClaimOperation(ctx, op.ID, s.o.NodeID, time.Time{})
	})
}

// work completes an operation; on a transient failure it logs, calls
// release, and leaves the operation for a retry.
func (s *Service) work(ctx context.Context, op dps.Operation, release func()) {
	retry := func(err error) {
		if ctx.Err() != nil {
			return // shutting down: the work resumes at the next start
		}
		s.log.WarnContext(ctx, "operation will be retried", logkey.OperationID, op.ID, logkey.RegistrationID, op.RegistrationID, logkey.Error, err)
		release()
	}
	final, err := s.complete(ctx, op, nil, nil)
	if err != nil {
		retry(err)
		return
	}
	final.Updated = s.o.Now().UTC()
	stored, err := s.o.Store.CompleteOperation(ctx, final)
	if err != nil {
		retry(err)
		return
	}
	s.finished(ctx, stored)
}

// finished records a completed operation in metrics and the log.
func (s *Service) finished(ctx context.Context, stored dps.Operation) {
	s.recent.put(stored)
	latency := stored.Updated.Sub(stored.Created)
	s.o.Observer.Completed(stored.Status, latency)
	attrs := []any{logkey.OperationID, stored.ID, logkey.RegistrationID, stored.RegistrationID, logkey.Status, stored.Status, logkey.Duration, latency}
	if r := stored.Result; r != nil {
		if r.AssignedHub != "" {
			attrs = append(attrs, logkey.Hub, r.AssignedHub)
		}
		if r.ErrorCode != 0 {
			attrs = append(attrs, logkey.ErrorCode, r.ErrorCode, "error_message", r.ErrorMessage)
		}
	}
	s.log.InfoContext(ctx, "registration finished", attrs...)
}

// complete computes an operation's final state. It returns an error only for
// transient failures that should be retried.
func (s *Service) complete(ctx context.Context, op dps.Operation, known *match, fx *hubEffects) (dps.Operation, error) {
	now := s.o.Now().UTC()
	m := known
	if m == nil {
		rm, err := s.rematch(ctx, op)
		if err != nil {
			if dps.KindOf(err) == dps.KindNotFound {
				return s.fail(op, nil, now, 404201, "the enrollment this registration matched no longer exists"), nil
			}
			return op, err
		}
		m = &rm
	}
	set := m.settings()
	if !set.Enabled() {
		op.Status = dps.StatusDisabled
		op.Result = &dps.Registration{RegistrationID: op.RegistrationID, Status: dps.StatusDisabled, EnrollmentGroupID: op.EnrollmentGroupID, Attestation: op.Attestation, Updated: now}
		return op, nil
	}
	var prev *dps.Registration
	if r, err := s.o.Store.Registration(ctx, op.RegistrationID); err == nil {
		prev = &r
	} else if dps.KindOf(err) != dps.KindNotFound {
		return op, err
	}
	reassigning := prev != nil && prev.AssignedHub != ""

	deviceID := op.RegistrationID
	if m.enrollment != nil && m.enrollment.DeviceID != "" {
		deviceID = m.enrollment.DeviceID
	}

	var asg dps.Assignment
	if reassigning && !set.Reprovision().UpdateHubAssignment {
		asg.Hub = prev.AssignedHub // never re-provision: the device stays
	} else {
		policy := set.AllocationPolicy
		if policy == "" {
			policy = s.o.DefaultPolicy
		}
		alloc, ok := s.o.Allocators[policy]
		if !ok {
			return s.fail(op, prev, now, 400004, fmt.Sprintf("allocation policy %q is not available on this instance", policy)), nil
		}
		cands, err := s.candidates(set)
		if err != nil {
			return s.fail(op, prev, now, 400004, err.Error()), nil
		}
		req := dps.AllocationRequest{
			RegistrationID: op.RegistrationID,
			Candidates:     cands,
			Enrollment:     m.enrollment,
			Group:          m.group,
			Attestation:    op.Attestation,
			Payload:        op.Payload,
		}
		if reassigning {
			req.CurrentHub, req.CurrentDeviceID = prev.AssignedHub, prev.DeviceID
		}
		asg, err = alloc.Allocate(ctx, req)
		if err != nil {
			if f, ok := errors.AsType[*dps.AllocationFailure](err); ok {
				return s.fail(op, prev, now, f.Code, f.Message), nil
			}
			if ctx.Err() != nil {
				return op, err
			}
			return s.fail(op, prev, now, 500001, "allocation failed: "+dps.AsError(err).Message), nil
		}
		if !containsHub(cands, asg.Hub) {
			return s.fail(op, prev, now, 400207, fmt.Sprintf("allocation chose %q, which is not a candidate hub", asg.Hub)), nil
		}
		asg.Hub = canonicalHub(cands, asg.Hub)
	}

	moved := reassigning && (!strings.EqualFold(prev.AssignedHub, asg.Hub) || !strings.EqualFold(prev.DeviceID, deviceID))
	substatus := dps.SubstatusInitialAssignment
	initialHub := asg.Hub
	created := now
	if prev != nil {
		created = prev.Created
		if prev.InitialHub != "" {
			initialHub = prev.InitialHub
		}
	}
	twin := set.InitialTwin
	switch {
	case len(asg.InitialTwin) > 0:
		twin = asg.InitialTwin // the webhook's twin overrides migration settings
	case reassigning && !moved:
		if t, ok := s.readTwin(ctx, prev.AssignedHub, prev.DeviceID); ok {
			twin = t
		}
	case moved && set.Reprovision().MigrateDeviceData:
		if t, ok := s.readTwin(ctx, prev.AssignedHub, prev.DeviceID); ok {
			twin = t
		}
	}
	switch {
	case reassigning && !moved:
		if prev.Substatus != "" {
			substatus = prev.Substatus
		}
	case moved && strings.EqualFold(asg.Hub, initialHub) && !strings.EqualFold(prev.AssignedHub, initialHub):
		substatus = dps.SubstatusReprovisionedToInitialAssignment
	case moved && set.Reprovision().MigrateDeviceData:
		substatus = dps.SubstatusDeviceDataMigrated
	case moved:
		substatus = dps.SubstatusDeviceDataReset
	}

	hd := dps.HubDevice{
		Hub:          asg.Hub,
		DeviceID:     deviceID,
		AuthKind:     op.Attestation,
		PrimaryKey:   m.deviceKeys[0],
		SecondaryKey: m.deviceKeys[1],
		IoTEdge:      set.IoTEdge,
		Twin:         twin,
		Updated:      now,
	}
	var tpmBlob string
	if op.Attestation == dps.AttestationTPM {
		k2, blob, err := s.hubKeyBlob(op, m.enrollment)
		if err != nil {
			return s.fail(op, prev, now, 400004, err.Error()), nil
		}
		hd.PrimaryKey, hd.SecondaryKey, tpmBlob = k2, "", blob
	}
	if op.X509 != nil {
		if m.group != nil {
			hd.X509CASigned = true
		} else {
			hd.X509Thumbprint = op.X509.Certificate.SHA256Thumbprint
		}
	}
	if fx != nil {
		// The store writes the device records with the operation.
		fx.put = &hd
		if moved {
			fx.remove = &dps.HubDevice{Hub: prev.AssignedHub, DeviceID: prev.DeviceID}
		}
	} else {
		if err := s.o.Hubs.Provision(ctx, hd); err != nil {
			return op, fmt.Errorf("hub connector: provision on %s: %w", asg.Hub, err)
		}
		if moved {
			if err := s.o.Hubs.Deprovision(ctx, prev.AssignedHub, prev.DeviceID); err != nil {
				return op, fmt.Errorf("hub connector: deprovision from %s: %w", prev.AssignedHub, err)
			}
		}
	}
	op.Status = dps.StatusAssigned
	op.Result = &dps.Registration{
		RegistrationID:    op.RegistrationID,
		DeviceID:          deviceID,
		AssignedHub:       asg.Hub,
		InitialHub:        initialHub,
		Status:            dps.StatusAssigned,
		Substatus:         substatus,
		Payload:           asg.Payload,
		EnrollmentGroupID: op.EnrollmentGroupID,
		Attestation:       op.Attestation,
		X509:              op.X509,
		Created:           created,
		Updated:           now,

		TPMAuthenticationKey: tpmBlob,
	}
	return op, nil
}

func (s *Service) readTwin(ctx context.Context, hub, deviceID string) (json.RawMessage, bool) {
	tr, ok := s.o.Hubs.(TwinReader)
	if !ok {
		return nil, false
	}
	t, err := tr.Twin(ctx, hub, deviceID)
	if err != nil || len(t) == 0 {
		return nil, false
	}
	return t, true
}

// fail ends op as failed with a DPS error code. The registration record
// keeps the previous assignment so a later re-registration still knows the
// device's current hub.
func (s *Service) fail(op dps.Operation, prev *dps.Registration, now time.Time, code int, msg string) dps.Operation {
	r := &dps.Registration{
		RegistrationID:    op.RegistrationID,
		Status:            dps.StatusFailed,
		ErrorCode:         code,
		ErrorMessage:      msg,
		EnrollmentGroupID: op.EnrollmentGroupID,
		Attestation:       op.Attestation,
		Created:           now,
		Updated:           now,
	}
	if prev != nil {
		r.Created = prev.Created
		r.AssignedHub, r.DeviceID, r.InitialHub, r.Substatus = prev.AssignedHub, prev.DeviceID, prev.InitialHub, prev.Substatus
	}
	op.Status = dps.StatusFailed
	op.Result = r
	return op
}

// rematch reloads the enrollment an operation matched at register time.
func (s *Service) rematch(ctx context.Context, op dps.Operation) (match, error) {
	if op.EnrollmentGroupID != "" {
		g, err := s.o.Store.Group(ctx, op.EnrollmentGroupID)
		if err != nil {
			return match{}, err
		}
		m := match{group: &g}
		if sk := g.Attestation.SymmetricKey; sk != nil {
			for j, k := range []dps.Key{sk.PrimaryKey, sk.SecondaryKey} {
				if raw, err := sas.DecodeKey(string(k)); err == nil && k != "" {
					m.deviceKeys[j] = dps.Key(base64.StdEncoding.EncodeToString(sas.DeriveKey(raw, op.RegistrationID)))
				}
			}
		}
		return m, nil
	}
	e, err := s.o.Store.Enrollment(ctx, op.RegistrationID)
	if err != nil {
		return match{}, err
	}
	m := match{enrollment: &e}
	if sk := e.Attestation.SymmetricKey; sk != nil {
		m.deviceKeys = [2]dps.Key{sk.PrimaryKey, sk.SecondaryKey}
	}
	return m, nil
}

// candidates returns the hubs a device of this enrollment may be assigned
// to: the enrollment's iotHubs (or legacy iotHubHostName) that are linked, or
// else every linked hub that participates in allocation.
func (s *Service) candidates(set *dps.Settings) ([]dps.LinkedHub, error) {
	names := set.IoTHubs
	if len(names) == 0 && set.IoTHubHostName != "" {
		names = []string{set.IoTHubHostName}
	}
	var out []dps.LinkedHub
	if len(names) == 0 {
		for _, h := range s.o.LinkedHubs {
			if h.ApplyAllocationPolicy {
				out = append(out, h)
			}
		}
		if len(out) == 0 {
			return nil, errors.New("no linked IoT hub participates in allocation")
		}
		return out, nil
	}
	for _, n := range names {
		for _, h := range s.o.LinkedHubs {
			if strings.EqualFold(h.HostName, n) {
				out = append(out, h)
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("none of the enrollment's IoT hubs (%s) is linked to this instance", strings.Join(names, ", "))
	}
	return out, nil
}

func containsHub(hs []dps.LinkedHub, name string) bool {
	for _, h := range hs {
		if strings.EqualFold(h.HostName, name) {
			return true
		}
	}
	return false
}

func canonicalHub(hs []dps.LinkedHub, name string) string {
	for _, h := range hs {
		if strings.EqualFold(h.HostName, name) {
			return h.HostName
		}
	}
	return name
}

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
		g := &groups[i]
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
	return match{group: best, x509: proof}, nil
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
			return &dps.Error{Kind: dps.KindNotFound, Code: 404201, Message: "No enrollment for this registration ID.", Err: err}
		}
		return err
	}
	if e.Attestation.Type != dps.AttestationTPM || e.Attestation.TPM == nil {
		return unauthorized(errors.New("the enrollment does not use TPM attestation"))
	}
	enrolled, err1 := dps.ParseTPMPublicRSA(e.Attestation.TPM.EndorsementKey)
	sent, err2 := dps.ParseTPMPublicRSA(req.TPM.EndorsementKey)
	if err1 != nil || err2 != nil || !bytes.Equal(enrolled, sent) {
		return unauthorized(errors.New("the endorsement key does not match the enrollment"))
	}
	srk := req.TPM.StorageRootKey
	if srk == "" {
		srk = e.Attestation.TPM.StorageRootKey
	}
	if srk == "" {
		return &dps.Error{Kind: dps.KindInvalid, Code: 400004, Message: "tpm.storageRootKey is required"}
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

// blob builds a base64 activation blob wrapping key for the TPM of ek and srk.
func (s *Service) blob(ek, srk string, key []byte, scope, regID string) (string, error) {
	ekb, err := base64.StdEncoding.DecodeString(ek)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: 400004, Message: "tpm.endorsementKey is not base64"}
	}
	srkb, err := base64.StdEncoding.DecodeString(srk)
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: 400004, Message: "tpm.storageRootKey is not base64"}
	}
	b, err := tpmattest.ActivationBlob(nil, ekb, srkb, key, []byte(scope+"/registrations/"+regID))
	if err != nil {
		return "", &dps.Error{Kind: dps.KindInvalid, Code: 400004, Message: "the TPM keys cannot wrap a key: " + err.Error(), Err: err}
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
// that started it, while the operation runs and shortly after it ends.
func (s *Service) authenticateTPMPoll(scope, regID string, op dps.Operation, cred Credential) error {
	tok, err := s.token(scope, regID, cred)
	if err != nil {
		return err
	}
	if op.Status.Final() && s.o.Now().Sub(op.Updated) > tpmPollGrace {
		return unauthorized(errors.New("the operation's TPM key expired"))
	}
	k1, err := base64.StdEncoding.DecodeString(string(op.TPMKey))
	if err != nil || !tok.Valid(k1) {
		return unauthorized(sas.ErrSignature)
	}
	return nil
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

// recentOps keeps the latest final operations in memory so polls need no
// read: a final operation never changes, so serving it from memory is
// correct on any node. It holds at most recentCap operations.
type recentOps struct {
	mu   sync.Mutex // guards m, ring, next
	m    map[string]dps.Operation
	ring []string
	next int
}

const recentCap = 1 << 16

func (r *recentOps) put(op dps.Operation) {
	if !op.Status.Final() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]dps.Operation, 1024)
		r.ring = make([]string, recentCap)
	}
	if _, ok := r.m[op.ID]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.m, old)
	}
	r.ring[r.next] = op.ID
	r.next = (r.next + 1) % recentCap
	r.m[op.ID] = op
}

// get returns a final operation created after notBefore (older ones may
// have been pruned from the store).
func (r *recentOps) get(id string, notBefore time.Time) (dps.Operation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	op, ok := r.m[id]
	if !ok || op.Created.Before(notBefore) {
		return dps.Operation{}, false
	}
	return op, true
}
