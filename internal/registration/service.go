package registration

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
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
	// Workers is how many operations are completed in the background at
	// once (default 1024).
	Workers int
	// WebhookConcurrency is how many of those may call one webhook URL at
	// once (default 128, an eighth of the default workers): a webhook that
	// hangs holds at most this many workers, and the operations of other
	// webhooks keep running. More wait their turn in memory, as operation
	// IDs.
	WebhookConcurrency int
	// RecentBytes bounds the memory of the final operations kept for polls
	// (default 32 MiB).
	RecentBytes int
	// KeepOperations is how many finished operations per registration ID
	// stay in the store (default 8); older ones are deleted when the device
	// registers again, so one device cannot fill the disk.
	KeepOperations int
	// OperationRetention is how long finished operations stay queryable
	// (default 24 hours).
	OperationRetention time.Duration
	// SweepInterval is how often unfinished operations are re-queued and old
	// ones pruned (default 5 seconds).
	SweepInterval time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Attestors are the attestation mechanisms, by type; a type without
	// one is not enabled (its devices are refused).
	Attestors map[dps.AttestationType]Attestor
	// Lease is how long a node owns an operation it processes before
	// another node may take it over (default 30s; renewed while working).
	Lease time.Duration
	// NodeID names this node as the owner of the operations it processes
	// (default: random).
	NodeID string
	// HubRetryFor is how long transient hub connector failures of one
	// operation are retried, from its first such failure, before the
	// registration fails with dps.CodeHubUnavailable (default 10 minutes).
	HubRetryFor time.Duration
	// HubRetryLimit, when positive, also ends the retries after this many
	// failed attempts.
	HubRetryLimit int
	// SingleNode says this process is the only one using Store (SQLite
	// allows one process per database), so operations are processed
	// without leases: Store.ClaimOperation is never called. Leave it false
	// when several nodes share the store (PostgreSQL).
	SingleNode bool
	// RecordDevicesWithOperations says Hubs records device identities in
	// Store itself (the built-in connector on the same store). The engine
	// then writes a registration's device records in the transaction of
	// its operation (Store.CreateOperationWithDevice,
	// CompleteOperationWithDevice) instead of calling Hubs.Provision and
	// Deprovision, so a record and its device never disagree. Leave it
	// false for a connector to real IoT hubs, or one recording elsewhere.
	RecordDevicesWithOperations bool
}

// Service is the registration engine. Create it with New, start its workers
// with Start, and stop them with Close.
//
// No lock is held across an allocation or a hub call: registration records
// are written compare-and-set on their ETag, so two operations of one
// device (on one node or several) never both win; the loser is computed
// again.
type Service struct {
	o     Options
	log   *slog.Logger
	lanes *lanes

	mu sync.Mutex // guards devices and hubRetries; held while retryAfter adds to wg
	// devices maps a folded registration ID to its unfinished operation, so
	// a device that registers again meanwhile is answered with that
	// operation instead of starting another, or to the reservation of a
	// register creating one. The sweeper drops entries of operations that
	// are no longer unfinished (completed by another node).
	devices map[string]tracked
	// hubRetries holds the transient hub failures of unfinished operations,
	// by operation ID (hubretry.go).
	hubRetries map[string]hubRetry

	recent recentOps // final operations, for polls

	types []dps.AttestationType // of Attestors, in order (auth.go)

	ctx    context.Context // the workers' context, cancelled by Close
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// tracked is a device's unfinished operation and when it was recorded, or
// (id "") a reservation: a register of the device is deciding whether it
// creates one.
type tracked struct {
	id    string
	since time.Time
	// resolved is closed when the reservation is replaced by the operation
	// it created or dropped.
	resolved chan struct{}
}

// laneBacklog is how many operations may wait in memory for one webhook URL;
// beyond it they wait in the store only, for the sweeper.
const laneBacklog = 16384

// New returns a Service; call Start before accepting requests.
func New(o Options) *Service {
	if o.Workers <= 0 {
		o.Workers = 1024
	}
	if o.WebhookConcurrency <= 0 {
		o.WebhookConcurrency = 128
	}
	if o.RecentBytes <= 0 {
		o.RecentBytes = 32 << 20
	}
	if o.KeepOperations <= 0 {
		o.KeepOperations = 8
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
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Second
	}
	if o.HubRetryFor <= 0 {
		o.HubRetryFor = 10 * time.Minute
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
	s := &Service{o: o, log: o.Logger, devices: map[string]tracked{}, hubRetries: map[string]hubRetry{}, recent: recentOps{maxBytes: o.RecentBytes}, types: attestorTypes(o.Attestors)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.lanes = newLanes(o.Workers, min(o.WebhookConcurrency, o.Workers), laneBacklog, func(it laneItem, done func()) {
		s.wg.Go(func() {
			defer done()
			s.run(s.ctx, it)
		})
	})
	return s
}

type nopObserver struct{}

func (nopObserver) Completed(dps.Status, time.Duration) {}
func (nopObserver) Rejected(dps.Kind)                   {}
func (nopObserver) InFlight(int)                        {}

// Start resumes unfinished operations and starts the workers. It returns
// once the unfinished operations are queued.
func (s *Service) Start(ctx context.Context) error {
	pending, err := s.pending(ctx)
	if err != nil {
		return fmt.Errorf("registration: load unfinished operations: %w", err)
	}
	if len(pending) > 0 {
		s.log.InfoContext(ctx, "resuming unfinished operations", "count", len(pending))
	}
	for _, op := range pending { // oldest first: the newest of a device wins
		s.track(op, true)
	}
	s.wg.Go(func() { s.resumeAll(s.ctx, pending) })
	s.wg.Go(func() { s.sweep(s.ctx) })
	return nil
}

// pending lists the unfinished operations to resume: their headers only,
// as that is all resuming needs.
func (s *Service) pending(ctx context.Context) ([]dps.Operation, error) {
	return s.o.Store.PendingOperationHeaders(ctx)
}

// Close stops the workers and waits for them. Operations not finished stay
// persisted and resume at the next Start.
func (s *Service) Close() error {
	s.lanes.close()
	s.mu.Lock() // retryAfter adds to wg only before this
	s.cancel()
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// enqueue queues an operation in its lane. When the lane is full the
// operation stays in the store, and the sweeper queues it again later.
func (s *Service) enqueue(op dps.Operation, lane string) {
	s.lanes.submit(lane, laneItem{id: op.ID, regID: op.RegistrationID})
}

// resume queues a persisted operation this node did not queue itself (after
// a restart, a failed attempt, a full lane, or from another node): its lane
// needs the enrollment it matched. When that cannot be read now (a store
// error) the operation is left for the next sweep: in the default lane, a
// custom allocation's work would take the slots its webhook's lane bounds
// (a hanging webhook could then hold them all). An enrollment that no
// longer exists sends it to the default lane, where it fails with 404201.
// It returns the store error that left the operation for the next sweep.
func (s *Service) resume(ctx context.Context, op dps.Operation) error {
	if s.lanes.has(op.ID) {
		return nil
	}
	lane := ""
	switch m, err := s.rematch(ctx, op); {
	case err == nil:
		lane = s.laneOf(m.Settings())
	case dps.KindOf(err) != dps.KindNotFound:
		return err
	}
	s.enqueue(op, lane)
	return nil
}

// resumeAll resumes operations, with one log line for those left for the
// next sweep (in an outage, every one of them).
func (s *Service) resumeAll(ctx context.Context, ops []dps.Operation) {
	left, first := 0, error(nil)
	for _, op := range ops {
		if err := s.resume(ctx, op); err != nil {
			left, first = left+1, cmp.Or(first, err)
		}
	}
	if left > 0 && ctx.Err() == nil {
		s.log.WarnContext(ctx, "unfinished operations left for the next sweep: reading their enrollment failed", "count", left, logkey.Error, first)
	}
}

// laneOf returns the lane of an enrollment's background operations: its
// webhook URL (without query, where Azure Functions keys travel: one
// function is one endpoint whatever the key) for custom allocation, else
// the default lane "".
func (s *Service) laneOf(set *dps.Settings) string {
	policy := set.AllocationPolicy
	if policy == "" {
		policy = s.o.DefaultPolicy
	}
	if policy != dps.AllocationCustom || set.CustomAllocation == nil {
		return ""
	}
	raw := set.CustomAllocation.WebhookURL
	u, err := url.Parse(raw)
	if err != nil {
		return "webhook " + raw
	}
	u.User, u.RawQuery, u.Fragment, u.Host = nil, "", "", strings.ToLower(u.Host)
	return "webhook " + u.String()
}

// run completes one queued operation, read fresh from the store.
func (s *Service) run(ctx context.Context, it laneItem) {
	op, err := s.o.Store.Operation(ctx, it.id)
	switch {
	case dps.KindOf(err) == dps.KindNotFound:
		s.forget(it.regID, it.id)
		return
	case err != nil:
		if ctx.Err() == nil {
			s.log.WarnContext(ctx, "operation will be retried: read failed", logkey.OperationID, it.id, logkey.Error, err)
		}
		return
	case op.Status.Final():
		s.forget(op.RegistrationID, op.ID) // completed meanwhile, perhaps by another node
		return
	case s.backingOff(op.ID):
		return // queued (by a sweep) while its hub attempt failed: retryAfter queues it again
	}
	s.o.Observer.InFlight(1)
	defer s.o.Observer.InFlight(-1)
	s.process(ctx, op)
}

// claim returns the device's unfinished operation known to this node, if it
// has one that matched the enrollment the device authenticated against now.
// Otherwise it reserves the device's slot and returns settle, which the
// caller must call once: with the unfinished operation it created (now the
// device's), or with nil (none: failed, or already final). A register of
// the device meanwhile waits for settle (or for its ctx), so concurrent
// registers of one device create one operation, not one each.
func (s *Service) claim(ctx context.Context, regID string, m *dps.Attested) (op dps.Operation, inFlight bool, settle func(*dps.Operation), err error) {
	k := dps.FoldID(regID)
	replace := "" // the operation ID whose entry may be taken over
	for {
		s.mu.Lock()
		t, ok := s.devices[k]
		if !ok || t.resolved == nil && t.id == replace {
			r := tracked{since: time.Now(), resolved: make(chan struct{})}
			s.devices[k] = r
			s.mu.Unlock()
			return dps.Operation{}, false, s.settler(k, r.resolved), nil
		}
		s.mu.Unlock()
		if t.resolved != nil { // another register of the device is under way
			select {
			case <-t.resolved:
				continue
			case <-ctx.Done():
				return dps.Operation{}, false, nil, ctx.Err()
			}
		}
		op, err := s.o.Store.Operation(ctx, t.id)
		switch {
		case ctx.Err() != nil:
			return dps.Operation{}, false, nil, ctx.Err()
		case dps.KindOf(err) == dps.KindUnavailable:
			return dps.Operation{}, false, nil, err // it could not be created either
		case err != nil || op.Status.Final():
			replace = t.id // gone, unreadable or done: a new registration
			continue
		case op.EnrollmentGroupID != m.GroupID() || op.Proof.Type != m.Proof.Type:
			replace = t.id // the device now matches another enrollment: a new registration
			continue
		}
		op.Payload = nil
		return op, true, nil, nil
	}
}

// settler returns the settle function of the reservation resolved of the
// folded registration ID k (see claim).
func (s *Service) settler(k string, resolved chan struct{}) func(*dps.Operation) {
	var once sync.Once
	return func(op *dps.Operation) {
		once.Do(func() {
			s.mu.Lock()
			if s.devices[k].resolved == resolved {
				if op != nil {
					s.devices[k] = tracked{id: op.ID, since: time.Now()}
				} else {
					delete(s.devices, k)
				}
			}
			s.mu.Unlock()
			close(resolved)
		})
	}
}

// track records a device's unfinished operation; replace false keeps one
// already recorded. A reservation is always kept: its register decides.
func (s *Service) track(op dps.Operation, replace bool) {
	k := dps.FoldID(op.RegistrationID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.devices[k]; ok && (!replace || t.resolved != nil) {
		return
	}
	s.devices[k] = tracked{id: op.ID, since: time.Now()}
}

// forget drops a device's unfinished operation opID, once it is final.
func (s *Service) forget(regID, opID string) {
	k := dps.FoldID(regID)
	s.mu.Lock()
	if s.devices[k].id == opID {
		delete(s.devices, k)
	}
	s.mu.Unlock()
}

// untrackFinished drops the recorded operations that were recorded before
// listed and are not among the unfinished operations listed then.
func (s *Service) untrackFinished(listed time.Time, pending []dps.Operation) {
	unfinished := make(map[string]bool, len(pending))
	for _, op := range pending {
		unfinished[op.ID] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.devices {
		// An operation this node is still working on stays tracked even when
		// the listing leaves it out (on PostgreSQL it omits operations under
		// a lease, this node's included, and lists at most 10,000).
		if t.resolved == nil && t.since.Before(listed) && !unfinished[t.id] && !s.lanes.has(t.id) {
			delete(s.devices, k)
		}
	}
	for id, r := range s.hubRetries {
		// An operation backing off is in no lane and, on PostgreSQL, under
		// this node's lease (the listing omits leased operations and lists
		// at most 10,000): its retry state goes only once its next attempt
		// is a lease overdue (it finished, or another node took it over),
		// or its count would restart and the retry limit never be reached.
		if r.since.Before(listed) && !unfinished[id] && !s.lanes.has(id) && time.Now().After(r.due.Add(s.o.Lease)) {
			delete(s.hubRetries, id)
		}
	}
}

// trim deletes a device's finished operations beyond the newest
// KeepOperations.
func (s *Service) trim(ctx context.Context, regID string) {
	if _, err := s.o.Store.TrimOperations(ctx, regID, s.o.KeepOperations); err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "trim finished operations", logkey.RegistrationID, regID, logkey.Error, err)
	}
}

// sweep re-queues persisted operations that are not in flight (after a
// failed completion or a full queue) and prunes old finished operations.
func (s *Service) sweep(ctx context.Context) {
	t := time.NewTicker(s.o.SweepInterval)
	defer t.Stop()
	lastPrune := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		listed := time.Now()
		pending, err := s.pending(ctx)
		if err != nil {
			s.log.WarnContext(ctx, "sweep: list unfinished operations", logkey.Error, err)
			continue
		}
		s.untrackFinished(listed, pending)
		var due []dps.Operation
		for _, op := range pending {
			if s.o.Now().Sub(op.Created) > time.Second && !s.lanes.has(op.ID) && !s.backingOff(op.ID) {
				s.track(op, false)
				due = append(due, op)
			}
		}
		s.resumeAll(ctx, due)
		if time.Since(lastPrune) > time.Minute {
			lastPrune = time.Now()
			if n, err := s.o.Store.DeleteOperationsBefore(ctx, s.o.Now().Add(-s.o.OperationRetention)); err != nil {
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
	if c := s.challenger(req.Credential); c != nil {
		if !strings.EqualFold(req.IDScope, s.o.IDScope) {
			return dps.Operation{}, unauthorized(errors.New("unknown ID scope"))
		}
		return dps.Operation{}, c.Challenge(ctx, req.IDScope, req.RegistrationID, req.Credential)
	}
	m, err := s.authenticate(ctx, req.IDScope, req.RegistrationID, req.Credential)
	if err != nil {
		return dps.Operation{}, err
	}
	// A device that registers again while its registration is still being
	// completed gets the operation already in flight, as a fresh 202 with its
	// operationId: every SDK then polls that operation, and one device
	// cannot pile up unfinished operations. (Azure does not document this
	// case; an error here would make SDKs retry the register, and a second
	// operation would race the first for the device's record.) A TPM
	// device's challenge is not consumed then: its polls may be signed with
	// it (see tpmattest's Poll). Registers of one device that arrive
	// together wait for the first to create its operation (claim).
	prior, ok, settle, err := s.claim(ctx, req.RegistrationID, &m)
	if err != nil {
		return dps.Operation{}, err
	}
	if ok {
		return prior, nil
	}
	defer settle(nil) // unless an unfinished operation was created below
	if c, ok := s.o.Attestors[m.Proof.Type].(Challenger); ok {
		// Only the latest challenge starts one registration.
		ok, err := c.Consume(ctx, req.RegistrationID, m)
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
		EnrollmentGroupID: m.GroupID(),
		Proof:             m.Proof,
		Status:            dps.StatusAssigning,
		Payload:           req.Payload,
		Created:           now,
		Updated:           now,
	}
	if !m.Settings().Enabled() {
		op.Status = dps.StatusDisabled
		op.Result = &dps.Registration{RegistrationID: req.RegistrationID, Status: dps.StatusDisabled, EnrollmentGroupID: m.GroupID(), Proof: dps.Proof{Type: op.Proof.Type}, Updated: now}
		op.Payload = nil // a final operation does not keep the device's payload
		if _, err := s.o.Store.CreateOperation(ctx, op); err != nil {
			return dps.Operation{}, err
		}
		s.trim(ctx, req.RegistrationID)
		s.o.Observer.Completed(dps.StatusDisabled, 0)
		s.log.InfoContext(ctx, "registration refused: enrollment disabled", logkey.RegistrationID, req.RegistrationID, logkey.EnrollmentGroup, m.GroupID())
		return op, nil
	}
	var inlineErr error
	if s.inline(m) {
		done, err := s.completeInline(ctx, op, &m)
		if err == nil {
			return done, nil
		}
		inlineErr = err
	}
	if _, err := s.o.Store.CreateOperation(ctx, op); err != nil {
		return dps.Operation{}, err
	}
	settle(&op) // before it is queued: it may finish at once, and forget it
	if hr, ok := errors.AsType[*hubRetryError](inlineErr); ok {
		s.retryAfter(op, hr.wait) // the hub failed: its backoff first
	} else {
		s.enqueue(op, s.laneOf(m.Settings()))
	}
	op.Payload = nil
	return op, nil
}

// inline reports whether a registration is completed within its register
// request: every policy but custom, whose webhook may take seconds.
func (s *Service) inline(m dps.Attested) bool {
	policy := m.Settings().AllocationPolicy
	if policy == "" {
		policy = s.o.DefaultPolicy
	}
	return policy != dps.AllocationCustom
}

// completeInline completes a registration before it is accepted: the
// operation is written once, already final, with its registration record,
// in one transaction, and the device's first poll finds the result. A crash
// before that commit loses nothing that was acknowledged. An error (a
// transient failure) means the work must be retried asynchronously.
func (s *Service) completeInline(ctx context.Context, op dps.Operation, m *dps.Attested) (dps.Operation, error) {
	s.o.Observer.InFlight(1)
	defer s.o.Observer.InFlight(-1)
	stored, err := s.completeAndWrite(ctx, op, m, true)
	if err != nil {
		s.log.WarnContext(ctx, "registration continues asynchronously", logkey.RegistrationID, op.RegistrationID, logkey.Error, err)
		return op, err
	}
	return stored, nil
}

// conflictAttempts is how often an operation is computed again at once when
// another registration of the device wrote its record first (no lock
// serialises them): each conflict means another one finished.
const conflictAttempts = 8

// completeAndWrite computes an operation's final state and writes it: as a
// new operation (create, within the register request) or over the
// unfinished one. The result is written only over the registration record
// it was computed from; after a conflict it is computed again.
func (s *Service) completeAndWrite(ctx context.Context, op dps.Operation, m *dps.Attested, create bool) (dps.Operation, error) {
	var err error
	for range conflictAttempts {
		fx := s.effects()
		var final dps.Operation
		if final, err = s.complete(ctx, op, m, fx); err != nil {
			return op, err
		}
		final.Updated = s.o.Now().UTC()
		final.Payload = nil                                     // a final operation does not keep the device's payload
		again := final.Result != nil && final.Result.ETag != "" // it replaces an earlier record
		var stored dps.Operation
		switch {
		case fx != nil && fx.put != nil && create:
			stored, err = s.o.Store.CreateOperationWithDevice(ctx, final, *fx.put, fx.remove)
		case fx != nil && fx.put != nil:
			// The device records are written with the result, or not at all
			// (another operation of the device changed its record meanwhile).
			stored, err = s.o.Store.CompleteOperationWithDevice(ctx, final, *fx.put, fx.remove)
		case create:
			stored, err = s.o.Store.CreateOperation(ctx, final)
		default:
			stored, err = s.o.Store.CompleteOperation(ctx, final)
		}
		if err == nil {
			if again {
				s.trim(ctx, op.RegistrationID)
			}
			s.finished(ctx, stored)
			return stored, nil
		}
		if dps.KindOf(err) != dps.KindConflict || ctx.Err() != nil {
			break
		}
	}
	return op, err
}

// Operation returns the state of an operation after authenticating the
// device. A device is checked against the enrollment its operation matched
// (one key derivation, no scan of all groups); an unknown operation is
// reported only after a full authentication, so operation IDs cannot be
// probed without a valid credential.
func (s *Service) Operation(ctx context.Context, scope, regID, operationID string, cred dps.Credential) (dps.Operation, error) {
	if err := dps.ValidateRegistrationID(regID); err != nil {
		return dps.Operation{}, err // as register answers a bad ID
	}
	notFound := &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNotFound, Message: "operation not found"}
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
	// The mechanism that attested the operation checks its polls.
	if !strings.EqualFold(scope, s.o.IDScope) {
		return dps.Operation{}, unauthorized(errors.New("unknown ID scope"))
	}
	a, ok := s.o.Attestors[op.Proof.Type]
	if !ok {
		return dps.Operation{}, unauthorized(fmt.Errorf("%s attestation is not enabled", op.Proof.Type))
	}
	if !a.Accepts(cred) {
		return dps.Operation{}, unauthorized(fmt.Errorf("the operation was attested by %s, not the credential presented", op.Proof.Type))
	}
	if err := a.Poll(ctx, scope, regID, cred, op); err != nil {
		return dps.Operation{}, err
	}
	return op, nil
}

// Lookup returns a device's registration record after authenticating it.
func (s *Service) Lookup(ctx context.Context, scope, regID string, cred dps.Credential) (dps.Registration, error) {
	if err := dps.ValidateRegistrationID(regID); err != nil {
		return dps.Registration{}, err
	}
	if _, err := s.authenticate(ctx, scope, regID, cred); err != nil {
		return dps.Registration{}, err
	}
	r, err := s.o.Store.Registration(ctx, regID)
	if err != nil {
		if dps.KindOf(err) == dps.KindNotFound {
			return dps.Registration{}, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNotFound, Message: "registration not found", Err: err}
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

// process completes one operation. Transient failures (store errors) leave
// the operation unfinished for the sweeper to retry.
func (s *Service) process(ctx context.Context, op dps.Operation) {
	if s.o.SingleNode {
		s.work(ctx, op, func(time.Time) {}) // one node: nobody to share the work with
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
	s.work(ctx, op, func(until time.Time) {
		stopRenew()
		// Give the lease up so any node (this one included) retries at once
		// (until zero), or keep it through a hub backoff, which this node
		// waits out: other nodes would retry at once.
		s.o.Store.ClaimOperation(ctx, op.ID, s.o.NodeID, until)
	})
}

// work completes an operation; on a transient failure it logs, calls
// release with the time until which this node keeps the operation (zero:
// any node may retry at once; a hub backoff: this node retries then), and
// leaves the operation for a retry.
func (s *Service) work(ctx context.Context, op dps.Operation, release func(until time.Time)) {
	retry := func(err error) {
		if ctx.Err() != nil {
			return // shutting down: the work resumes at the next start
		}
		s.log.WarnContext(ctx, "operation will be retried", logkey.OperationID, op.ID, logkey.RegistrationID, op.RegistrationID, logkey.Error, err)
		if hr, ok := errors.AsType[*hubRetryError](err); ok {
			release(s.o.Now().Add(hr.wait))
			s.retryAfter(op, hr.wait)
			return
		}
		release(time.Time{})
	}
	if _, err := s.completeAndWrite(ctx, op, nil, false); err != nil {
		retry(err)
	}
}

// finished records a completed operation in metrics and the log.
func (s *Service) finished(ctx context.Context, stored dps.Operation) {
	s.forget(stored.RegistrationID, stored.ID)
	s.hubDone(stored.ID)
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
