package registration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
)

// Transient hub connector failures are retried with exponential backoff,
// from hubBackoffMin up to hubBackoffMax between attempts, until
// Options.HubRetryFor has passed since an operation's first failure (or
// HubRetryLimit attempts failed); then the registration fails.
const (
	hubBackoffMin = time.Second
	hubBackoffMax = time.Minute
)

// hubRetry is what this node knows of an operation's transient hub
// failures. It is kept in memory: after a restart, or on another node, an
// operation's retries start counting again.
type hubRetry struct {
	first    time.Time // first failure (Options.Now)
	attempts int       // failed attempts
	due      time.Time // next attempt, not before (time.Now: the sweeper's clock)
	since    time.Time // when recorded (time.Now), for untrackFinished
}

// hubRetryError is a transient hub failure: the operation is tried again
// after wait.
type hubRetryError struct {
	wait time.Duration
	err  error
}

func (e *hubRetryError) Error() string { return e.err.Error() }
func (e *hubRetryError) Unwrap() error { return e.err }

// hubFailed ends op as failed for a hub connector error err while trying to
// do what: at once for a *dps.HubFailure, or for a transient error once the
// retry limit is reached; otherwise it records the attempt and returns a
// *hubRetryError.
func (s *Service) hubFailed(ctx context.Context, op dps.Operation, prev *dps.Registration, now time.Time, what string, err error) (dps.Operation, error) {
	if f, ok := errors.AsType[*dps.HubFailure](err); ok {
		// A connector's code must be a 4xxxxx refusal (a permanent failure
		// is not the service being unavailable); anything else is reported
		// as CodeHubRejected, and the device always gets a message.
		code := f.Code
		if status := code / 1000; status < 400 || status > 499 {
			code = dps.CodeHubRejected
		}
		msg := cmp.Or(f.Message, "The IoT hub refused to "+what+".")
		return s.fail(op, prev, now, code, msg), nil
	}
	if ctx.Err() != nil {
		return op, err // shutting down: not the hub's failure
	}
	r := s.hubAttempt(op.ID, now)
	if now.Sub(r.first) >= s.o.HubRetryFor || s.o.HubRetryLimit > 0 && r.attempts >= s.o.HubRetryLimit {
		// The cause stays in the log: a connector's error may name its
		// internals; a domain error's message is safe to show.
		msg := fmt.Sprintf("The IoT hub connector could not %s: %d attempts over %s failed. Register again later.",
			what, r.attempts, now.Sub(r.first).Round(time.Second))
		if e, ok := errors.AsType[*dps.Error](err); ok && e.Kind != dps.KindInternal {
			msg += " Last error: " + e.Message // internal errors are never shown to devices
		}
		s.log.WarnContext(ctx, "registration failed: hub connector retries exhausted", logkey.OperationID, op.ID, logkey.RegistrationID, op.RegistrationID, "attempts", r.attempts, logkey.Error, err)
		return s.fail(op, prev, now, dps.CodeHubUnavailable, msg), nil
	}
	return op, &hubRetryError{wait: time.Until(r.due), err: fmt.Errorf("hub connector: %s (attempt %d): %w", what, r.attempts, err)}
}

// hubAttempt records a failed hub attempt of operation id and returns the
// operation's retry state.
func (s *Service) hubAttempt(id string, now time.Time) hubRetry {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.hubRetries[id]
	if !ok {
		r = hubRetry{first: now, since: time.Now()}
	}
	r.attempts++
	r.due = time.Now().Add(min(hubBackoffMin<<min(r.attempts-1, 16), hubBackoffMax))
	s.hubRetries[id] = r
	return r
}

// backingOff reports whether operation id waits for its next hub attempt.
func (s *Service) backingOff(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.hubRetries[id]
	return ok && time.Now().Before(r.due)
}

// hubDone forgets the hub failures of a finished operation.
func (s *Service) hubDone(id string) {
	s.mu.Lock()
	delete(s.hubRetries, id)
	s.mu.Unlock()
}

// retryAfter queues op again after wait (its backoff), unless the service
// closes first; the sweeper leaves it alone meanwhile (backingOff).
func (s *Service) retryAfter(op dps.Operation, wait time.Duration) {
	op = dps.Operation{ID: op.ID, RegistrationID: op.RegistrationID, EnrollmentGroupID: op.EnrollmentGroupID,
		Proof: dps.Proof{Type: op.Proof.Type}, Status: op.Status, Created: op.Created} // resume needs no more: not the payload
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx.Err() != nil {
		return // closed: the operation resumes at the next start
	}
	s.wg.Go(func() {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-s.ctx.Done():
		case <-t.C:
			if err := s.resume(s.ctx, op); err != nil && s.ctx.Err() == nil {
				s.log.WarnContext(s.ctx, "operation left for the next sweep", logkey.OperationID, op.ID, logkey.Error, err)
			}
		}
	})
}
