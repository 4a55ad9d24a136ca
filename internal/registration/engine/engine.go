// Package engine runs registration operations in the background: the
// per-webhook lanes and their workers, the tracking of each device's
// unfinished operation, leases on operations shared by several nodes, the
// sweeper (re-queue unfinished operations, prune old final ones), the
// backoff of operations whose attempt failed transiently, and the cache of
// recent final operations for polls.
//
// It knows nothing of what completing an operation means: the registration
// use case plugs in as Work. It declares the small store interface it
// consumes (Store) and imports only the domain and leaf packages.
package engine

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
)

// Store is the persistence the engine needs. Its error contract is the
// registration store's: a missing operation is a *dps.Error of
// dps.KindNotFound, a store that cannot answer now dps.KindUnavailable (or
// any other error), which the engine treats as transient.
type Store interface {
	// Operation returns an operation by ID; KindNotFound if none.
	Operation(ctx context.Context, id string) (dps.Operation, error)
	// PendingOperationHeaders returns the unfinished operations, oldest
	// first, without their documents: only ID, RegistrationID (possibly
	// folded, dps.FoldID), EnrollmentGroupID, Status and Created are set.
	PendingOperationHeaders(ctx context.Context) ([]dps.Operation, error)
	// ClaimOperation leases an unfinished operation to owner until until
	// (a zero until gives the lease up); false, and no error, when another
	// owner holds an unexpired lease or the operation is final or absent.
	// Unused when Options.SingleNode is set.
	ClaimOperation(ctx context.Context, id, owner string, until time.Time) (bool, error)
	// DeleteOperationsBefore deletes a bounded batch (Options.PruneBatch)
	// of final operations created before t and reports how many it deleted.
	DeleteOperationsBefore(ctx context.Context, t time.Time) (int64, error)
}

// Work is what the engine runs: the registration use case.
type Work interface {
	// Lane returns the lane of a persisted unfinished operation ("" the
	// default lane); an error leaves it for the next sweep.
	Lane(ctx context.Context, op dps.Operation) (string, error)
	// Complete completes op (read fresh from the store); nil when done
	// (its final state written, and Engine.Finished called). An error is
	// transient: a *RetryAfter keeps the lease through the wait and retries
	// then; any other error gives the lease up and the sweeper retries.
	Complete(ctx context.Context, op dps.Operation) error
}

// Observer receives the engine's metrics. A nil Observer is allowed.
type Observer interface {
	// InFlight adds delta to the number of operations being processed.
	InFlight(delta int)
}

// Options configure an Engine.
type Options struct {
	Store    Store
	Work     Work
	Logger   *slog.Logger
	Observer Observer
	// Workers is how many operations are completed at once (default 1024).
	Workers int
	// PerLane is how many of those may run in one lane at once (default
	// 128, at most Workers).
	PerLane int
	// RecentBytes bounds the memory of the final operations kept for polls
	// (default 32 MiB).
	RecentBytes int
	// OperationRetention is how long final operations stay queryable
	// (default 24 hours); older ones are pruned.
	OperationRetention time.Duration
	// SweepInterval is how often unfinished operations are re-queued and old
	// ones pruned (default 5 seconds).
	SweepInterval time.Duration
	// PruneBatch is the size of a full batch of Store.DeleteOperationsBefore
	// (default 5000): after a full one the sweeper prunes again at its next
	// tick rather than a minute later.
	PruneBatch int
	// Lease is how long a node owns an operation it processes before
	// another node may take it over (default 30s; renewed while working).
	Lease time.Duration
	// NodeID names this node as the owner of the operations it processes
	// (default: random).
	NodeID string
	// SingleNode says this process is the only one using Store: operations
	// are processed without leases, and Store.ClaimOperation is never
	// called.
	SingleNode bool
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

// Engine runs operations in the background. Create it with New, start it
// with Start, and stop it with Close.
type Engine struct {
	o     Options
	log   *slog.Logger
	lanes *lanes

	mu sync.Mutex // guards devices and retries; held while Requeue adds to wg
	// devices maps a folded registration ID to its unfinished operation, so
	// a device that registers again meanwhile is answered with that
	// operation instead of starting another, or to the reservation of a
	// register creating one. The sweeper drops entries of operations that
	// are no longer unfinished (completed by another node).
	devices map[string]tracked
	// retries holds the transient failures of unfinished operations, by
	// operation ID (retry.go).
	retries map[string]Retries

	recent recentOps // final operations, for polls

	ctx    context.Context // the workers' context, cancelled by Close
	wg     sync.WaitGroup
	cancel context.CancelFunc
}

// laneBacklog is how many operations may wait in memory for one lane;
// beyond it they wait in the store only, for the sweeper.
const laneBacklog = 16384

// defaultPruneBatch is Options.PruneBatch's default: the stores' batch.
const defaultPruneBatch = 5000

// New returns an Engine; call Start before submitting operations.
func New(o Options) *Engine {
	if o.Workers <= 0 {
		o.Workers = 1024
	}
	if o.PerLane <= 0 {
		o.PerLane = 128
	}
	if o.RecentBytes <= 0 {
		o.RecentBytes = 32 << 20
	}
	if o.OperationRetention <= 0 {
		o.OperationRetention = 24 * time.Hour
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Second
	}
	if o.PruneBatch <= 0 {
		o.PruneBatch = defaultPruneBatch
	}
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.NodeID == "" {
		o.NodeID = "node-" + strings.ToLower(rand.Text()[:10])
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	e := &Engine{o: o, log: o.Logger, devices: map[string]tracked{}, retries: map[string]Retries{}, recent: recentOps{maxBytes: o.RecentBytes}}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.lanes = newLanes(o.Workers, min(o.PerLane, o.Workers), laneBacklog, func(it laneItem, done func()) {
		e.wg.Go(func() {
			defer done()
			e.run(e.ctx, it)
		})
	})
	return e
}

type nopObserver struct{}

func (nopObserver) InFlight(int) {}

// Start resumes unfinished operations and starts the sweeper. It returns
// once the unfinished operations are queued; its error is the store's,
// listing them.
func (e *Engine) Start(ctx context.Context) error {
	pending, err := e.pending(ctx)
	if err != nil {
		return err
	}
	if len(pending) > 0 {
		e.log.InfoContext(ctx, "resuming unfinished operations", "count", len(pending))
	}
	for _, op := range pending { // oldest first: the newest of a device wins
		e.track(op, true)
	}
	e.wg.Go(func() { e.resumeAll(e.ctx, pending) })
	e.wg.Go(func() { e.sweep(e.ctx) })
	return nil
}

// pending lists the unfinished operations to resume: their headers only,
// as that is all resuming needs.
func (e *Engine) pending(ctx context.Context) ([]dps.Operation, error) {
	return e.o.Store.PendingOperationHeaders(ctx)
}

// Close stops the workers and waits for them. Operations not finished stay
// persisted and resume at the next Start.
func (e *Engine) Close() {
	e.lanes.close()
	e.mu.Lock() // Requeue adds to wg only before this
	e.cancel()
	e.mu.Unlock()
	e.wg.Wait()
}

// Enqueue queues an operation in its lane. When the lane is full the
// operation stays in the store, and the sweeper queues it again later.
func (e *Engine) Enqueue(op dps.Operation, lane string) {
	e.lanes.submit(lane, laneItem{id: op.ID, regID: op.RegistrationID})
}

// resume queues a persisted operation this node did not queue itself (after
// a restart, a failed attempt, a full lane, or from another node) in the
// lane Work.Lane gives it. It returns the error that left the operation for
// the next sweep.
func (e *Engine) resume(ctx context.Context, op dps.Operation) error {
	if e.lanes.has(op.ID) {
		return nil
	}
	lane, err := e.o.Work.Lane(ctx, op)
	if err != nil {
		return err
	}
	e.Enqueue(op, lane)
	return nil
}

// resumeAll resumes operations, with one log line for those left for the
// next sweep (in an outage, every one of them).
func (e *Engine) resumeAll(ctx context.Context, ops []dps.Operation) {
	left, first := 0, error(nil)
	for _, op := range ops {
		if err := e.resume(ctx, op); err != nil {
			left, first = left+1, cmp.Or(first, err)
		}
	}
	if left > 0 && ctx.Err() == nil {
		e.log.WarnContext(ctx, "unfinished operations left for the next sweep: choosing their lane failed", "count", left, logkey.Error, first)
	}
}

// run completes one queued operation, read fresh from the store.
func (e *Engine) run(ctx context.Context, it laneItem) {
	op, err := e.o.Store.Operation(ctx, it.id)
	switch {
	case dps.KindOf(err) == dps.KindNotFound:
		e.forget(it.regID, it.id)
		return
	case err != nil:
		if ctx.Err() == nil {
			e.log.WarnContext(ctx, "operation will be retried: read failed", logkey.OperationID, it.id, logkey.Error, err)
		}
		return
	case op.Status.Final():
		e.forget(op.RegistrationID, op.ID) // completed meanwhile, perhaps by another node
		return
	case e.backingOff(op.ID):
		return // queued (by a sweep) while its attempt failed: Requeue queues it again
	}
	e.o.Observer.InFlight(1)
	defer e.o.Observer.InFlight(-1)
	e.process(ctx, op)
}

// process completes one operation. Transient failures (store errors) leave
// the operation unfinished for the sweeper to retry.
func (e *Engine) process(ctx context.Context, op dps.Operation) {
	if e.o.SingleNode {
		e.work(ctx, op, func(time.Time) {}) // one node: nobody to share the work with
		return
	}
	// Own the operation for the time of the work; another node takes it
	// over only if this one stops renewing.
	owned, err := e.o.Store.ClaimOperation(ctx, op.ID, e.o.NodeID, e.o.Now().Add(e.o.Lease))
	if err != nil || !owned {
		if err != nil && ctx.Err() == nil {
			e.log.WarnContext(ctx, "operation will be retried: claim failed", logkey.OperationID, op.ID, logkey.Error, err)
		}
		return
	}
	renewCtx, stopRenew := context.WithCancel(ctx)
	defer stopRenew()
	go func() {
		t := time.NewTicker(e.o.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-t.C:
				e.o.Store.ClaimOperation(renewCtx, op.ID, e.o.NodeID, e.o.Now().Add(e.o.Lease))
			}
		}
	}()
	e.work(ctx, op, func(until time.Time) {
		stopRenew()
		// Give the lease up so any node (this one included) retries at once
		// (until zero), or keep it through a backoff, which this node waits
		// out: other nodes would retry at once.
		e.o.Store.ClaimOperation(ctx, op.ID, e.o.NodeID, until)
	})
}

// work completes an operation; on a transient failure it logs, calls
// release with the time until which this node keeps the operation (zero:
// any node may retry at once; a backoff: this node retries then), and
// leaves the operation for a retry.
func (e *Engine) work(ctx context.Context, op dps.Operation, release func(until time.Time)) {
	retry := func(err error) {
		if ctx.Err() != nil {
			return // shutting down: the work resumes at the next start
		}
		e.log.WarnContext(ctx, "operation will be retried", logkey.OperationID, op.ID, logkey.RegistrationID, op.RegistrationID, logkey.Error, err)
		if ra, ok := errors.AsType[*RetryAfter](err); ok {
			release(e.o.Now().Add(ra.Wait))
			e.Requeue(op, ra.Wait)
			return
		}
		release(time.Time{})
	}
	if err := e.o.Work.Complete(ctx, op); err != nil {
		retry(err)
	}
}

// Finished records that op is final: the device's slot is free, the
// operation's retry state goes, and polls find it in memory.
func (e *Engine) Finished(op dps.Operation) {
	e.forget(op.RegistrationID, op.ID)
	e.retryDone(op.ID)
	e.recent.put(op)
}

// Recent returns a final operation kept in memory, if it is not older than
// Options.OperationRetention (older ones may have been pruned from the
// store).
func (e *Engine) Recent(id string) (dps.Operation, bool) {
	return e.recent.get(id, e.o.Now().Add(-e.o.OperationRetention))
}

// Remember keeps a final operation read from the store in memory for the
// next polls; an unfinished one is not kept.
func (e *Engine) Remember(op dps.Operation) {
	e.recent.put(op)
}
