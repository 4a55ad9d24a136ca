package registration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/registration/engine"
)

// Transient hub connector failures are retried with the engine's
// exponential backoff and jitter (engine.Engine.AttemptFailed: 1 s
// doubling up to a minute between attempts, never less than the hub's
// Retry-After, plus up to a quarter more at random), until
// Options.HubRetryFor has passed since an operation's first failure (or
// HubRetryLimit attempts failed); then the registration fails.

// hubFailed ends op as failed for a hub connector error err while trying to
// do what: at once for a *dps.HubFailure, or for a transient error once the
// retry limit is reached; otherwise it records the attempt and returns an
// *engine.RetryAfter.
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
	var floor time.Duration
	if ra, ok := errors.AsType[retryAfterer](err); ok {
		// The hub said when to come back (Retry-After), within reason.
		floor = min(ra.RetryAfter(), maxHubRetryAfter)
	}
	r := s.eng.AttemptFailed(op.ID, now, floor, s.o.HubRetryFor)
	if now.Sub(r.First) >= s.o.HubRetryFor || s.o.HubRetryLimit > 0 && r.Attempts >= s.o.HubRetryLimit {
		// The cause stays in the log: a connector's error may name its
		// internals; a domain error's message is safe to show.
		msg := fmt.Sprintf("The IoT hub connector could not %s: %d attempts over %s failed. Register again later.",
			what, r.Attempts, now.Sub(r.First).Round(time.Second))
		if e, ok := errors.AsType[*dps.Error](err); ok && e.Kind != dps.KindInternal {
			msg += " Last error: " + e.Message // internal errors are never shown to devices
		}
		s.log.WarnContext(ctx, "registration failed: hub connector retries exhausted", logkey.OperationID, op.ID, logkey.RegistrationID, op.RegistrationID, "attempts", r.Attempts, logkey.Error, err)
		return s.fail(op, prev, now, dps.CodeHubUnavailable, msg), nil
	}
	return op, &engine.RetryAfter{Wait: r.Wait, Err: fmt.Errorf("hub connector: %s (attempt %d): %w", what, r.Attempts, err)}
}

// retryAfterer is a transient connector error that says how long to wait
// before the next attempt (a hub's Retry-After): the floor of the
// backoff, up to maxHubRetryAfter.
type retryAfterer interface {
	error
	RetryAfter() time.Duration
}

const maxHubRetryAfter = 5 * time.Minute
