package registration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
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
				if n >= 5000 {
					lastPrune = time.Time{} // a full batch: more wait, prune again at the next tick
				}
			}
		}
	}
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
	rec, fx := s.recorder()
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
	rec, fx := s.recorder()
	final, err := s.complete(ctx, op, nil, fx)
	if err != nil {
		retry(err)
		return
	}
	final.Updated = s.o.Now().UTC()
	var stored dps.Operation
	if fx != nil && fx.put != nil {
		// The device records are written with the result, or not at all
		// (another operation of the device changed its record meanwhile).
		stored, err = rec.CompleteOperationWithDevice(ctx, final, *fx.put, fx.remove)
	} else {
		stored, err = s.o.Store.CompleteOperation(ctx, final)
	}
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
