package engine

import (
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
)

// An operation whose attempt failed transiently (Work.Complete returned a
// *RetryAfter) waits with exponential backoff, from backoffMin up to
// backoffMax between attempts; when to give up is the caller's policy.
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
	Due      time.Time // next attempt, not before (time.Now: the sweeper's clock)
	since    time.Time // when recorded (time.Now), for untrackFinished
}

// RetryAfter is a transient failure of Work.Complete: the operation is
// tried again after Wait, on this node, which keeps its lease meanwhile.
// Work records the failure with AttemptFailed before returning it (Wait is
// then the time until its Due), so sweeps leave the operation alone
// through the wait.
type RetryAfter struct {
	Wait time.Duration
	Err  error
}

func (e *RetryAfter) Error() string { return e.Err.Error() }
func (e *RetryAfter) Unwrap() error { return e.Err }

// AttemptFailed records a failed attempt of operation id at now and returns
// the operation's retry state, its next attempt due after the backoff. The
// state goes when the operation finishes (Finished).
func (e *Engine) AttemptFailed(id string, now time.Time) Retries {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.retries[id]
	if !ok {
		r = Retries{First: now, since: time.Now()}
	}
	r.Attempts++
	r.Due = time.Now().Add(min(backoffMin<<min(r.Attempts-1, 16), backoffMax))
	e.retries[id] = r
	return r
}

// Postpone moves the next attempt of operation id, which failed
// transiently, to due if that is later than its backoff (a hub's
// Retry-After).
func (e *Engine) Postpone(id string, due time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.retries[id]; ok && due.After(r.Due) {
		r.Due = due
		e.retries[id] = r
	}
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
