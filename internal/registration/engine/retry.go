package engine

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
)

// An operation whose attempt failed transiently (Work.Complete returned a
// *RetryAfter) waits with exponential backoff, from backoffMin up to
// backoffMax between attempts, plus a random jitter of up to a quarter of
// the wait (so devices that failed together do not come back together);
// when to give up is the caller's policy.
const (
	backoffMin = time.Second
	backoffMax = time.Minute
)

// Retries is what this node knows of an operation's transient failures. It
// is kept in memory: after a restart, or on another node, an operation's
// retries start counting again.
type Retries struct {
	First    time.Time // first failure (the caller's clock)
	Attempts int       // failed attempts
	// Wait is how long the next attempt waits from the failure just
	// recorded: the backoff (at least the caller's floor) and its jitter.
	Wait  time.Duration
	Due   time.Time // next attempt, not before (time.Now: the sweeper's clock)
	since time.Time // when recorded (time.Now), for untrackFinished
}

// RetryAfter is a transient failure of Work.Complete: the operation is
// tried again after Wait, on this node, which keeps its lease meanwhile.
// Work records the failure with AttemptFailed before returning it (Wait is
// then the Retries' Wait), so sweeps leave the operation alone through the
// wait.
type RetryAfter struct {
	Wait time.Duration
	Err  error
}

func (e *RetryAfter) Error() string { return e.Err.Error() }
func (e *RetryAfter) Unwrap() error { return e.Err }

// AttemptFailed records a failed attempt of operation id at now and returns
// the operation's retry state: its next attempt waits the backoff, or
// floor when that is longer (a hub's Retry-After), plus a jitter of up to
// a quarter of that, so the attempt is never before floor — but never
// past budget from the first failure (budget is the caller's retry budget;
// 0: none): the last wait is cut to what is left of it, so an operation
// that gives up at its budget does so on time, not a backoff later. The
// wait and the due time are the engine's clock's (time.Now), the one its
// sweeps and timers use. The state goes when the operation finishes
// (Finished).
func (e *Engine) AttemptFailed(id string, now time.Time, floor, budget time.Duration) Retries {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.retries[id]
	if !ok {
		r = Retries{First: now, since: time.Now()}
	}
	r.Attempts++
	r.Wait = Backoff(r.Attempts, floor)
	if budget > 0 {
		r.Wait = min(r.Wait, max(budget-now.Sub(r.First), 0))
	}
	r.Due = time.Now().Add(r.Wait)
	e.retries[id] = r
	return r
}

// Backoff is the wait before the attempt after the attempts-th failed one:
// 1 s doubling up to a minute, or floor when longer, plus a random jitter
// in [0, a quarter of that).
func Backoff(attempts int, floor time.Duration) time.Duration {
	d := max(min(backoffMin<<min(max(attempts, 1)-1, 16), backoffMax), floor)
	return d + rand.N(d/4+1)
}

// backingOff reports whether operation id waits for its next attempt.
func (e *Engine) backingOff(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.retries[id]
	return ok && time.Now().Before(r.Due)
}

// retryDone forgets the failures of a finished operation.
func (e *Engine) retryDone(id string) {
	e.mu.Lock()
	delete(e.retries, id)
	e.mu.Unlock()
}

// Requeue queues op again after wait (its backoff), unless the engine
// closes first; the sweeper leaves it alone meanwhile (backingOff).
func (e *Engine) Requeue(op dps.Operation, wait time.Duration) {
	op = dps.Operation{ID: op.ID, RegistrationID: op.RegistrationID, EnrollmentGroupID: op.EnrollmentGroupID,
		Status: op.Status, Created: op.Created} // the header fields: resume needs no more, not the payload
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx.Err() != nil {
		return // closed: the operation resumes at the next start
	}
	e.wg.Go(func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-e.ctx.Done():
		case <-t.C:
			if err := e.resume(e.ctx, op); err != nil && e.ctx.Err() == nil {
				e.log.WarnContext(e.ctx, "operation left for the next sweep", logkey.OperationID, op.ID, logkey.Error, err)
			}
		}
	})
}

// Go runs f in the background with the engine's context, which Close
// cancels before it waits for f to return: work that follows an
// operation's commit (the deletion of an identity the device left on a
// remote hub). False, and f is not run, once the engine is closed.
func (e *Engine) Go(f func(ctx context.Context)) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ctx.Err() != nil {
		return false
	}
	e.wg.Go(func() { f(e.ctx) })
	return true
}
