package registration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/registration/engine"
)

// The identity a device leaves on a hub the store does not record (a
// remote hub) is deleted once the operation that moved the device
// committed, in the background, never in the registration's path: per
// hub, at most leaveConcurrency deletes run at once and the others wait
// their turn in memory (at most maxLeaving per hub); a delete that fails
// transiently is tried again with the hub retries' backoff until
// Options.HubRetryFor has passed.
//
// The identity is deleted only if it is still the one the device left:
// its ETag, read before the move committed (DeviceRemover), guards the
// delete (DELETE with If-Match), and before each attempt the device's
// registration is read again: a device assigned to that hub again keeps
// its identity there. The pending deletes are kept in memory only: after
// a crash, the identities they were to delete stay on their hubs.
const (
	leaveConcurrency = 4
	maxLeaving       = 10_000
	// leaveReadTimeout bounds the read of the identity a device leaves (its
	// ETag), which is in the registration's path (the device's register
	// request, or a worker) for the sake of the clean-up alone: a hub that
	// does not answer in time keeps the identity (logged).
	leaveReadTimeout = 5 * time.Second
)

// leaver holds the pending deletes of identities devices left, by hub.
type leaver struct {
	mu     sync.Mutex
	hubs   map[string]*leaveQueue // by dps.FoldID(hub)
	closed bool
}

// leaveQueue is one hub's pending deletes.
type leaveQueue struct {
	due     []*leaveJob               // to try now, in order
	running int                       // workers draining due (at most leaveConcurrency)
	held    int                       // jobs due, being tried or waiting for a retry
	waiting map[*leaveJob]*time.Timer // jobs backing off, until their timer queues them again
}

// leaveJob is the delete of one identity a device left.
type leaveJob struct {
	opID, regID string
	old         dps.HubDevice // Hub, DeviceID, Replaces (its ETag before the move; "": unguarded)
	attempts    int           // failed attempts
	first       time.Time     // first failure
	err         error         // the last failure
}

// attrs are j's log attributes, and more; its last failure, if any.
func (j *leaveJob) attrs(more ...any) []any {
	a := append([]any{logkey.OperationID, j.opID, logkey.RegistrationID, j.regID, logkey.Hub, j.old.Hub, logkey.DeviceID, j.old.DeviceID}, more...)
	if j.err != nil {
		a = append(a, logkey.Error, j.err)
	}
	return a
}

// leaving reads the identity prev names on a hub the store does not
// record (removal), within leaveReadTimeout.
func (s *Service) leaving(ctx context.Context, prev *dps.Registration) (*dps.HubDevice, error) {
	rctx, cancel := context.WithTimeout(ctx, leaveReadTimeout)
	defer cancel()
	return s.removal(rctx, prev)
}

// leave has the identity old that the device of op left deleted, once op
// committed: queued for its hub's background deletes; unread is the
// failure to read it before the commit: then it is kept, and logged for
// the operator, rather than deleted whatever it became since.
func (s *Service) leave(ctx context.Context, op dps.Operation, old dps.HubDevice, unread error) {
	j := &leaveJob{opID: op.ID, regID: op.RegistrationID, old: old}
	if unread != nil {
		j.err = unread
		s.log.ErrorContext(ctx, "the identity the device left was not deleted: it could not be read before the move; delete it on its hub", j.attrs()...)
		return
	}
	l := &s.leaver
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queue(old.Hub)
	switch {
	case l.closed:
		s.log.ErrorContext(ctx, "the identity the device left was not deleted (shutting down): delete it on its hub", j.attrs()...)
	case q.held >= maxLeaving:
		s.log.ErrorContext(ctx, "the identity the device left was not deleted: too many deletes pending on its hub; delete it there", j.attrs("pending", q.held)...)
	default:
		q.held++
		s.due(q, j)
	}
}

// queue returns hub's queue (l.mu held).
func (l *leaver) queue(hub string) *leaveQueue {
	key := dps.FoldID(hub)
	q, ok := l.hubs[key]
	if !ok {
		if l.hubs == nil {
			l.hubs = map[string]*leaveQueue{}
		}
		q = &leaveQueue{waiting: map[*leaveJob]*time.Timer{}}
		l.hubs[key] = q
	}
	return q
}

// due queues j to be tried now, and starts a worker for q if it has fewer
// than leaveConcurrency (l.mu held). A job queued once the engine is
// closed stays in q for closeLeaving.
func (s *Service) due(q *leaveQueue, j *leaveJob) {
	q.due = append(q.due, j)
	if q.running < leaveConcurrency && s.eng.Go(func(ctx context.Context) { s.drain(ctx, q) }) {
		q.running++
	}
}

// drain tries q's due deletes one after the other until there are none
// (or the engine closes).
func (s *Service) drain(ctx context.Context, q *leaveQueue) {
	l := &s.leaver
	for {
		l.mu.Lock()
		if len(q.due) == 0 || ctx.Err() != nil {
			q.running--
			l.mu.Unlock()
			return
		}
		j := q.due[0]
		q.due[0] = nil
		q.due = q.due[1:]
		l.mu.Unlock()
		if again := s.tryLeave(ctx, j); !again {
			l.mu.Lock()
			q.held--
			l.mu.Unlock()
			continue
		}
		s.backOff(ctx, q, j)
	}
}

// tryLeave makes one attempt at deleting j's identity; true when it
// failed transiently and is to be tried again (j.err).
func (s *Service) tryLeave(ctx context.Context, j *leaveJob) bool {
	// A device assigned to that hub again has its identity there; the ETag
	// guards the delete as well, but a hub may keep an identity's ETag when
	// a provisioning writes it over unchanged.
	reg, err := s.previous(ctx, j.regID)
	if err != nil {
		j.err = err
		return true
	}
	if reg != nil && strings.EqualFold(reg.AssignedHub, j.old.Hub) && strings.EqualFold(reg.DeviceID, j.old.DeviceID) {
		s.log.InfoContext(ctx, "the identity the device left is kept: the device is assigned to that hub again", j.attrs("attempts", j.attempts)...)
		return false
	}
	err = s.removeLeft(ctx, j.old)
	switch {
	case err == nil:
		if j.attempts > 0 {
			s.log.InfoContext(ctx, "the identity the device left was deleted", j.attrs("attempts", j.attempts+1)...)
		}
		return false
	case dps.KindOf(err) == dps.KindConflict:
		s.log.InfoContext(ctx, "the identity the device left is kept: it changed on its hub since the device left it", j.attrs("attempts", j.attempts+1, "why", err.Error())...)
		return false
	}
	j.err = err
	return true
}

// removeLeft deletes old if it did not change since it was read
// (DeviceRemover, DeviceDeleter), else whatever it is.
func (s *Service) removeLeft(ctx context.Context, old dps.HubDevice) error {
	if r, ok := s.o.Hubs.(DeviceDeleter); ok {
		return r.Remove(ctx, old)
	}
	return s.o.Hubs.Deprovision(ctx, old.Hub, old.DeviceID)
}

// backOff gives up on j (a permanent failure, its retries exhausted, a
// shutdown), logging it for the operator, or has it queued again after
// the backoff, which never ends past Options.HubRetryFor from the first
// failure.
func (s *Service) backOff(ctx context.Context, q *leaveQueue, j *leaveJob) {
	l := &s.leaver
	now := time.Now()
	j.attempts++
	if j.attempts == 1 {
		j.first = now
	}
	left := s.o.HubRetryFor - now.Sub(j.first)
	_, permanent := errors.AsType[*dps.HubFailure](j.err)
	msg := ""
	switch {
	case ctx.Err() != nil:
		msg = "the identity the device left was not deleted (shutting down): delete it on its hub"
	case permanent || left <= 0:
		msg = "the identity the device left was not deleted: delete it on its hub"
	}
	if msg != "" {
		s.log.ErrorContext(ctx, msg, j.attrs("attempts", j.attempts)...)
		l.mu.Lock()
		q.held--
		l.mu.Unlock()
		return
	}
	var floor time.Duration
	if ra, ok := errors.AsType[retryAfterer](j.err); ok {
		floor = min(ra.RetryAfter(), maxHubRetryAfter)
	}
	wait := min(engine.Backoff(j.attempts, floor), left)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		s.log.ErrorContext(ctx, "the identity the device left was not deleted (shutting down): delete it on its hub", j.attrs("attempts", j.attempts)...)
		q.held--
		return
	}
	q.waiting[j] = time.AfterFunc(wait, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := q.waiting[j]; !ok {
			return // closeLeaving logged it
		}
		delete(q.waiting, j)
		s.due(q, j)
	})
}

// closeLeaving logs the deletes still pending once the engine closed
// (its workers returned): the identities they were to delete stay on
// their hubs.
func (s *Service) closeLeaving(ctx context.Context) {
	l := &s.leaver
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, q := range l.hubs {
		pending := q.due
		for j, t := range q.waiting {
			t.Stop()
			pending = append(pending, j)
		}
		for _, j := range pending {
			s.log.ErrorContext(ctx, "the identity the device left was not deleted (shutting down): delete it on its hub", j.attrs("attempts", j.attempts)...)
		}
		q.due, q.waiting, q.held = nil, map[*leaveJob]*time.Timer{}, 0
	}
}
