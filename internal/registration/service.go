package registration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/registration/engine"
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
	// RecordsDevices, when not nil, decides per hub what
	// RecordDevicesWithOperations decides for all: true for a hub whose
	// device records the store writes with the operations (a built-in
	// hub), false for one Hubs.Provision and Deprovision reach (a remote
	// hub). A device moving between the two kinds has its record written
	// or removed with the operation and the other side done through Hubs.
	RecordsDevices func(hub string) bool
	// HubEvents, when not nil, is told of the device records each
	// registration wrote with its operation, once they are committed.
	HubEvents HubEvents
	// Events, when not nil, receives what became of each register request
	// that passed authentication (events.go).
	Events EventRecorder
	// Issuer, when not nil, issues operational certificates to devices
	// that send a CSR; without it a CSR is refused.
	Issuer Issuer
}

// Service is the registration use case. Create it with New, start its
// background work (the operation engine, package engine) with Start, and
// stop it with Close.
//
// No lock is held across an allocation or a hub call: registration records
// are written compare-and-set on their ETag, so two operations of one
// device (on one node or several) never both win; the loser is computed
// again.
type Service struct {
	o   Options
	log *slog.Logger
	eng *engine.Engine // lanes, workers, leases, sweeps, retries, recent operations

	types []dps.AttestationType // of Attestors, in order (auth.go)

	origins origins // of the operations accepted here, until they finish (events.go)
	leaver  leaver  // the pending deletes of identities devices left (leave.go)
}

// New returns a Service; call Start before accepting requests.
func New(o Options) *Service {
	if o.KeepOperations <= 0 {
		o.KeepOperations = 8
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
	if o.Events == nil {
		o.Events = nopRecorder{}
	}
	s := &Service{o: o, log: o.Logger, types: attestorTypes(o.Attestors)}
	// The engine applies the defaults of the options only it uses.
	s.eng = engine.New(engine.Options{
		Store:              o.Store,
		Work:               work{s},
		Logger:             o.Logger,
		Observer:           o.Observer,
		Workers:            o.Workers,
		PerLane:            o.WebhookConcurrency,
		RecentBytes:        o.RecentBytes,
		OperationRetention: o.OperationRetention,
		SweepInterval:      o.SweepInterval,
		Lease:              o.Lease,
		NodeID:             o.NodeID,
		SingleNode:         o.SingleNode,
		Now:                o.Now,
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
	if err := s.eng.Start(ctx); err != nil {
		return fmt.Errorf("registration: load unfinished operations: %w", err)
	}
	return nil
}

// Close stops the workers and waits for them. Operations not finished stay
// persisted and resume at the next Start; deletes of identities devices
// left that are still pending are logged, and not done (leave.go).
func (s *Service) Close() error {
	s.eng.Close()
	s.closeLeaving(context.Background())
	return nil
}

// work is the registration use case as the engine runs it.
type work struct{ s *Service }

// Lane returns the lane of a persisted operation this node did not queue
// itself (after a restart, a failed attempt, a full lane, or from another
// node): it needs the enrollment the operation matched. When that cannot
// be read now (a store error) the operation is left for the next sweep: in
// the default lane, a custom allocation's work would take the slots its
// webhook's lane bounds (a hanging webhook could then hold them all). An
// enrollment that no longer exists sends it to the default lane, where it
// fails with 404201.
func (w work) Lane(ctx context.Context, op dps.Operation) (string, error) {
	switch m, err := w.s.rematch(ctx, op); {
	case err == nil:
		return w.s.laneOf(m.Settings()), nil
	case dps.KindOf(err) != dps.KindNotFound:
		return "", err
	}
	return "", nil
}

// Complete completes an unfinished operation read from the store.
func (w work) Complete(ctx context.Context, op dps.Operation) error {
	_, err := w.s.completeAndWrite(ctx, op, nil, false, nil)
	return err
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

// trim deletes a device's finished operations beyond the newest
// KeepOperations.
func (s *Service) trim(ctx context.Context, regID string) {
	if _, err := s.o.Store.TrimOperations(ctx, regID, s.o.KeepOperations); err != nil && ctx.Err() == nil {
		s.log.WarnContext(ctx, "trim finished operations", logkey.RegistrationID, regID, logkey.Error, err)
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
		if err := s.checkScope(req.IDScope); err != nil {
			return dps.Operation{}, err
		}
		return dps.Operation{}, c.Challenge(ctx, req.IDScope, req.RegistrationID, req.Credential)
	}
	m, err := s.authenticate(ctx, req.IDScope, req.RegistrationID, req.Credential)
	if err != nil {
		return dps.Operation{}, err
	}
	if req.CSRRefused != nil {
		return dps.Operation{}, req.CSRRefused
	}
	// A CSR is checked now, so that a device learns at once that it will
	// not get a certificate (never assigned without one it asked for).
	var csr []byte
	if req.CSR != "" && m.Settings().Enabled() {
		if s.o.Issuer == nil {
			return dps.Operation{}, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeIssuanceNotEnabled, Message: "csr: certificate issuance is not enabled on this instance"}
		}
		if csr, err = s.o.Issuer.Check(ctx, m.Settings(), req.RegistrationID, req.CSR); err != nil {
			return dps.Operation{}, err
		}
	}
	// A device that registers again while its registration is still being
	// completed gets the operation already in flight, as a fresh 202 with its
	// operationId: every SDK then polls that operation, and one device
	// cannot pile up unfinished operations. (Azure does not document this
	// case; an error here would make SDKs retry the register, and a second
	// operation would race the first for the device's record.) A TPM
	// device's challenge is not consumed then: its polls may be signed with
	// it (see tpmattest's Poll). Registers of one device that arrive
	// together wait for the first to create its operation (engine.Engine.Claim).
	// The operation in flight answers only if it matched the enrollment the
	// device authenticated against now; otherwise this is a new registration.
	reusable := func(op dps.Operation) bool {
		return op.EnrollmentGroupID == m.GroupID() && op.Proof.Type == m.Proof.Type && bytes.Equal(op.CSR, csr)
	}
	prior, ok, settle, err := s.eng.Claim(ctx, req.RegistrationID, reusable)
	if err != nil {
		return dps.Operation{}, err
	}
	if ok {
		accepted := event(dps.EventAccepted, prior, req.Origin)
		accepted.Payload = req.Payload
		s.o.Events.Record(accepted)
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
			return dps.Operation{}, dps.Unauthenticated(errors.New("the TPM challenge was superseded"))
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
		CSR:               csr,
		Created:           now,
		Updated:           now,
	}
	if !m.Settings().Enabled() {
		op.Status = dps.StatusDisabled
		op.Result = &dps.Registration{RegistrationID: req.RegistrationID, Status: dps.StatusDisabled, EnrollmentGroupID: m.GroupID(), Proof: dps.Proof{Type: op.Proof.Type}, Updated: now}
		op.Payload, op.CSR = nil, nil // a final operation does not keep the device's payload and CSR
		if _, err := s.o.Store.CreateOperation(ctx, op); err != nil {
			return dps.Operation{}, err
		}
		s.trim(ctx, req.RegistrationID)
		s.o.Observer.Completed(dps.StatusDisabled, 0)
		disabled := outcome(op, req.Origin)
		disabled.Payload = req.Payload
		s.o.Events.Record(disabled)
		s.log.InfoContext(ctx, "registration refused: enrollment disabled", logkey.RegistrationID, req.RegistrationID, logkey.EnrollmentGroup, m.GroupID())
		return op, nil
	}
	// The register is accepted once its operation is stored (completed
	// inline, or created for the background): a register whose operation
	// the store did not take is refused, not accepted.
	accepted := event(dps.EventAccepted, op, req.Origin)
	accepted.Payload = req.Payload
	recordAccepted := func() { s.o.Events.Record(accepted) }
	s.origins.put(op.ID, req.Origin) // for its outcome's event
	var inlineErr error
	if s.inline(m) {
		done, err := s.completeInline(ctx, op, &m, recordAccepted)
		if err == nil {
			return done, nil
		}
		inlineErr = err
	}
	if _, err := s.o.Store.CreateOperation(ctx, op); err != nil {
		s.origins.take(op.ID)
		return dps.Operation{}, err
	}
	recordAccepted()
	settle(&op) // before it is queued: it may finish at once, and forget it
	if ra, ok := errors.AsType[*engine.RetryAfter](inlineErr); ok {
		s.eng.Requeue(op, ra.Wait) // the hub failed: its backoff first
	} else {
		s.eng.Enqueue(op, s.laneOf(m.Settings()))
	}
	op.Payload, op.CSR = nil, nil
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
// written is called once the operation is stored, before its outcome is
// recorded.
func (s *Service) completeInline(ctx context.Context, op dps.Operation, m *dps.Attested, written func()) (dps.Operation, error) {
	s.o.Observer.InFlight(1)
	defer s.o.Observer.InFlight(-1)
	stored, err := s.completeAndWrite(ctx, op, m, true, written)
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
// it was computed from; after a conflict it is computed again. written
// (when set) is called once it is stored, before anything else.
func (s *Service) completeAndWrite(ctx context.Context, op dps.Operation, m *dps.Attested, create bool, written func()) (dps.Operation, error) {
	var err error
	for range conflictAttempts {
		fx := s.effects()
		var final dps.Operation
		if final, err = s.complete(ctx, op, m, fx); err != nil {
			return op, err
		}
		final.Updated = s.o.Now().UTC()
		final.Payload, final.CSR = nil, nil                     // a final operation does not keep the device's payload and CSR
		again := final.Result != nil && final.Result.ETag != "" // it replaces an earlier record
		var stored dps.Operation
		switch {
		case fx.any() && create:
			stored, err = s.o.Store.CreateOperationWithDevice(ctx, final, fx.putOrNone(), fx.remove)
		case fx.any():
			// The device records are written with the result, or not at all
			// (another operation of the device changed its record meanwhile).
			stored, err = s.o.Store.CompleteOperationWithDevice(ctx, final, fx.putOrNone(), fx.remove)
		case create:
			stored, err = s.o.Store.CreateOperation(ctx, final)
		default:
			stored, err = s.o.Store.CompleteOperation(ctx, final)
		}
		if err == nil {
			if written != nil {
				written()
			}
			if again {
				s.trim(ctx, op.RegistrationID)
			}
			if fx.any() && s.o.HubEvents != nil {
				s.o.HubEvents.Provisioned(ctx, fx.putOrNone(), fx.remove)
			}
			s.finished(ctx, stored)
			if fx.leave != nil && sameAssignment(stored, final) {
				s.leave(ctx, stored, *fx.leave, fx.leaveErr) // committed: the device has its new identity
			}
			return stored, nil
		}
		if dps.KindOf(err) != dps.KindConflict || ctx.Err() != nil {
			break
		}
	}
	return op, err
}

// sameAssignment reports whether the stored operation assigns its device
// where final does (final was written, or another node wrote the same).
func sameAssignment(stored, final dps.Operation) bool {
	a, b := stored.Result, final.Result
	return stored.Status == dps.StatusAssigned && a != nil && b != nil &&
		strings.EqualFold(a.AssignedHub, b.AssignedHub) && strings.EqualFold(a.DeviceID, b.DeviceID)
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
	op, ok := s.eng.Recent(operationID)
	var err error
	if !ok {
		op, err = s.o.Store.Operation(ctx, operationID)
		if err != nil && dps.KindOf(err) != dps.KindNotFound {
			return dps.Operation{}, err
		}
		if err == nil && op.Status.Final() {
			s.eng.Remember(op)
		}
	}
	if err != nil || !strings.EqualFold(op.RegistrationID, regID) {
		if _, err := s.authenticate(ctx, scope, regID, cred); err != nil {
			return dps.Operation{}, err
		}
		return dps.Operation{}, notFound
	}
	// The mechanism that attested the operation checks its polls.
	if err := s.checkScope(scope); err != nil {
		return dps.Operation{}, err
	}
	a, ok := s.o.Attestors[op.Proof.Type]
	if !ok {
		return dps.Operation{}, dps.Unauthenticated(fmt.Errorf("%s attestation is not enabled", op.Proof.Type))
	}
	if !a.Accepts(cred) {
		return dps.Operation{}, dps.Unauthenticated(fmt.Errorf("the operation was attested by %s, not the credential presented", op.Proof.Type))
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

// finished records a completed operation in metrics and the log.
func (s *Service) finished(ctx context.Context, stored dps.Operation) {
	s.eng.Finished(stored)
	latency := stored.Updated.Sub(stored.Created)
	s.o.Observer.Completed(stored.Status, latency)
	s.o.Events.Record(outcome(stored, s.origins.take(stored.ID)))
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
