package routing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
)

// Engine runs the routes of the built-in hubs on this node.
type Engine struct {
	o      Options
	routes []*runner
	mu     sync.Mutex
	wake   map[string]chan struct{} // folded hub → closed by Wake
}

// runner is one route's loop and what this node knows of it.
type runner struct {
	e *Engine
	r Route

	mu      sync.Mutex
	state   string // "standby", "delivering", "retrying", "stopped"
	holding bool
	attempt int
	retryAt time.Time
	lastErr string
	// What the route's messages came to on this node (Status).
	delivered, failed, deadLettered int64

	// sinceTrim counts the dead letters written since the route's last
	// trim (wroteDeadLetters); only the route's own goroutine uses it.
	sinceTrim int
}

// count adds to the route's counts on this node (Status).
func (rn *runner) count(delivered, failed, deadLettered int) {
	rn.set(func(rn *runner) {
		rn.delivered += int64(delivered)
		rn.failed += int64(failed)
		rn.deadLettered += int64(deadLettered)
	})
}

// New checks the routes (names unique in their hub, an endpoint each) and
// makes an engine for them.
func New(o Options) (*Engine, error) {
	o = o.withDefaults()
	if o.Store == nil {
		return nil, errors.New("routing: no store")
	}
	if o.Node == "" {
		return nil, errors.New("routing: no node name")
	}
	e := &Engine{o: o, wake: map[string]chan struct{}{}}
	seen := map[string]bool{}
	for _, r := range o.Routes {
		key := dps.FoldID(r.Hub) + "/" + strings.ToLower(r.Name)
		switch {
		case r.Name == "" || r.Hub == "":
			return nil, errors.New("routing: a route needs a hub and a name")
		case seen[key]:
			return nil, fmt.Errorf("routing: hub %s has two routes named %q", r.Hub, r.Name)
		case r.Deliver == nil:
			return nil, fmt.Errorf("routing: route %q of hub %s has no endpoint", r.Name, r.Hub)
		}
		seen[key] = true
		if r.Source == "" {
			r.Source = SourceTelemetry
		}
		e.routes = append(e.routes, &runner{e: e, r: r, state: "standby"})
	}
	if d, ok := o.Observer.(Declarer); ok {
		for _, rn := range e.routes {
			d.Declare(rn.r.Hub, rn.r.Name, ReasonRetries, ReasonMaxLag, ReasonDeleted, ReasonRefused)
		}
	}
	return e, nil
}

// Run delivers the enabled routes until ctx ends, then releases the
// leases this node holds (another node takes over at once) and returns.
// It also prunes old dead letters.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, rn := range e.routes {
		if rn.r.Enabled {
			wg.Go(func() { rn.run(ctx) })
		}
	}
	wg.Go(func() { e.pruneDeadLetters(ctx) })
	wg.Wait()
}

// Wake makes the routes of hub look for messages at once (the hub
// appended some).
func (e *Engine) Wake(hub string) {
	h := dps.FoldID(hub)
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.wake[h]; ok {
		close(c)
		delete(e.wake, h)
	}
}

func (e *Engine) woken(hub string) <-chan struct{} {
	h := dps.FoldID(hub)
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.wake[h]
	if !ok {
		c = make(chan struct{})
		e.wake[h] = c
	}
	return c
}

func (e *Engine) pruneDeadLetters(ctx context.Context) {
	every := min(e.o.DeadLetterRetention/10, time.Hour)
	for {
		for {
			n, err := e.o.Store.DeleteDeadLettersBefore(ctx, e.o.Now().Add(-e.o.DeadLetterRetention))
			if err != nil && ctx.Err() == nil {
				e.o.Logger.WarnContext(ctx, "routing: dead letter retention failed", "err", err)
			}
			if err != nil || n == 0 {
				break
			}
		}
		for _, rn := range e.routes {
			rn.trimDeadLetters(ctx)
		}
		if !sleep(ctx, every, nil) {
			return
		}
	}
}

// sleep waits d, or until woken is closed; false when ctx ended.
func sleep(ctx context.Context, d time.Duration, woken <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-woken:
	}
	return true
}

func (rn *runner) set(fn func(*runner)) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	fn(rn)
}

// run claims the route's lease, delivers while it holds it, and tries to
// claim it again when another node holds it or it lost it.
func (rn *runner) run(ctx context.Context) {
	o := rn.e.o
	for ctx.Err() == nil {
		now := o.Now()
		st, ok, err := o.Store.ClaimRoute(ctx, rn.r.Hub, rn.r.Name, o.Node, now, now.Add(o.Lease))
		switch {
		case err != nil:
			if ctx.Err() == nil {
				o.Logger.WarnContext(ctx, "routing: claiming a route failed", "hub", rn.r.Hub, "route", rn.r.Name, "err", err)
			}
		case ok:
			o.Logger.InfoContext(ctx, "routing: delivering route", "hub", rn.r.Hub, "route", rn.r.Name, "checkpoint", st.Checkpoint)
			rn.set(func(rn *runner) { rn.holding, rn.state = true, "delivering" })
			err := rn.deliver(ctx, st.Checkpoint, now)
			rn.set(func(rn *runner) { rn.holding, rn.state = false, "standby" })
			if ctx.Err() != nil {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				if err := o.Store.ReleaseRoute(rctx, rn.r.Hub, rn.r.Name, o.Node); err != nil {
					o.Logger.WarnContext(rctx, "routing: releasing a route failed", "hub", rn.r.Hub, "route", rn.r.Name, "err", err)
				}
				cancel()
				rn.set(func(rn *runner) { rn.state = "stopped" })
				return
			}
			o.Logger.WarnContext(ctx, "routing: stopped delivering route", "hub", rn.r.Hub, "route", rn.r.Name, "err", err)
			continue // claim again at once: the lease may be ours still
		}
		if !sleep(ctx, o.Lease/3, nil) {
			return
		}
	}
}

// deliver runs the route from checkpoint while this node holds its lease
// (claimed at renewed); it returns when ctx ends or the lease is lost.
func (rn *runner) deliver(ctx context.Context, checkpoint int64, renewed time.Time) error {
	o, r := rn.e.o, rn.r
	var (
		pending []dps.Message // the batch being delivered
		through int64         // the checkpoint once pending is delivered
		since   time.Time     // when pending first failed
		attempt int
	)
	for ctx.Err() == nil {
		if now := o.Now(); now.Sub(renewed) >= o.Lease/3 {
			_, ok, err := o.Store.ClaimRoute(ctx, r.Hub, r.Name, o.Node, now, now.Add(o.Lease))
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("another node took the route's lease over")
			}
			renewed = now
		}
		woken := rn.e.woken(r.Hub)
		if pending == nil {
			batch, upto, wait, err := rn.next(ctx, checkpoint)
			if err != nil {
				if isLeaseLost(err) {
					return err
				}
				o.Logger.WarnContext(ctx, "routing: reading the event log failed", "hub", r.Hub, "route", r.Name, "err", err)
				if !sleep(ctx, o.Poll, nil) {
					return ctx.Err()
				}
				continue
			}
			if wait > 0 {
				// Linger: appends do not cut the wait short, or a route
				// would read the log again after every message.
				if !sleep(ctx, wait, nil) {
					return ctx.Err()
				}
				continue
			}
			if len(batch) == 0 {
				if upto > checkpoint {
					if err := o.Store.AdvanceRoute(ctx, r.Hub, r.Name, o.Node, upto, "", o.Now()); err != nil {
						return err
					}
					checkpoint = upto
					continue
				}
				rn.lag(ctx, checkpoint, nil)
				if !sleep(ctx, o.Poll, woken) {
					return ctx.Err()
				}
				continue
			}
			pending, through = batch, upto
		}
		rn.lag(ctx, checkpoint, pending)
		dctx, cancel := context.WithTimeout(ctx, o.DeliverTimeout)
		err := r.Deliver.Deliver(dctx, pending)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		now := o.Now()
		if err == nil {
			if err := o.Store.AdvanceRoute(ctx, r.Hub, r.Name, o.Node, through, "", now); err != nil {
				return err
			}
			o.Observer.Delivered(r.Hub, r.Name, len(pending))
			rn.count(len(pending), 0, 0)
			checkpoint, pending, attempt, since = through, nil, 0, time.Time{}
			rn.set(func(rn *runner) { rn.state, rn.attempt, rn.retryAt = "delivering", 0, time.Time{} })
			continue
		}
		if IsPermanent(err) {
			// Refused for good: one by one, so that only the messages the
			// endpoint will never take are dead-lettered, now.
			rest, cp, failure, ierr := rn.isolate(ctx, pending, checkpoint, err)
			if ierr != nil {
				return ierr
			}
			checkpoint = cp
			if len(rest) == 0 {
				if err := o.Store.AdvanceRoute(ctx, r.Hub, r.Name, o.Node, through, "", o.Now()); err != nil {
					return err
				}
				checkpoint, pending, attempt, since = through, nil, 0, time.Time{}
				rn.set(func(rn *runner) { rn.state, rn.attempt, rn.retryAt = "delivering", 0, time.Time{} })
				continue
			}
			// A transient failure among them, or every one refused (the
			// endpoint's failure, not the messages'): retried as usual,
			// with that error.
			pending, err, now = rest, failure, o.Now()
		}
		o.Observer.Failed(r.Hub, r.Name, len(pending))
		rn.count(0, len(pending), 0)
		if since.IsZero() {
			since = now
		}
		attempt++
		msg := err.Error()
		if aerr := o.Store.AdvanceRoute(ctx, r.Hub, r.Name, o.Node, checkpoint, msg, now); aerr != nil {
			return aerr
		}
		if now.Sub(since) >= o.RetryBudget {
			reason := fmt.Sprintf("not delivered to endpoint %s in %v (%d attempts): %s", r.Endpoint, o.RetryBudget, attempt, msg)
			if err := o.Store.DeadLetterMessages(ctx, r.Hub, r.Name, o.Node, pending, reason, now); err != nil {
				return err
			}
			if err := o.Store.AdvanceRoute(ctx, r.Hub, r.Name, o.Node, through, "", now); err != nil {
				return err
			}
			o.Observer.DeadLettered(r.Hub, r.Name, ReasonRetries, len(pending))
			rn.count(0, 0, len(pending))
			o.Logger.WarnContext(ctx, "routing: messages dead-lettered", "hub", r.Hub, "route", r.Name, "messages", len(pending),
				"first_seq", pending[0].Seq, "last_seq", pending[len(pending)-1].Seq, "reason", reason)
			rn.wroteDeadLetters(ctx, len(pending))
			checkpoint, pending, attempt, since = through, nil, 0, time.Time{}
			rn.set(func(rn *runner) { rn.state, rn.attempt, rn.retryAt = "delivering", 0, time.Time{} })
			continue
		}
		wait := rn.backoff(attempt)
		o.Logger.WarnContext(ctx, "routing: delivery failed", "hub", r.Hub, "route", r.Name, "endpoint", r.Endpoint,
			"messages", len(pending), "attempt", attempt, "retry_in", wait.String(), "err", msg)
		rn.set(func(rn *runner) {
			rn.state, rn.attempt, rn.retryAt, rn.lastErr = "retrying", attempt, now.Add(wait), msg
		})
		// Renew the lease while backing off: sleep at most a third of it
		// at a time.
		for wait > 0 {
			step := min(wait, o.Lease/3)
			if !sleep(ctx, step, nil) {
				return ctx.Err()
			}
			wait -= step
			if wait > 0 {
				now := o.Now()
				_, ok, err := o.Store.ClaimRoute(ctx, r.Hub, r.Name, o.Node, now, now.Add(o.Lease))
				if err != nil {
					return err
				}
				if !ok {
					return errors.New("another node took the route's lease over")
				}
				renewed = now
			}
		}
	}
	return ctx.Err()
}

// backoff is the wait before retry attempt (1, 2, …): MinBackoff doubled
// per attempt up to MaxBackoff, less up to a fifth at random.
func (rn *runner) backoff(attempt int) time.Duration {
	o := rn.e.o
	d := o.MinBackoff
	for i := 1; i < attempt && d < o.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, o.MaxBackoff)
	j := rand.Float64
	if o.Jitter != nil {
		j = o.Jitter
	}
	return d - time.Duration(float64(d)/5*j())
}

// next reads the next batch after checkpoint: the messages of the
// route's source its condition matches, at most BatchSize, and upto, the
// checkpoint once they are delivered (the last message looked at). wait >
// 0 asks to read again after it: the batch is not full and its oldest
// message is younger than Linger. A route further behind than MaxLag
// dead-letters its oldest messages first.
func (rn *runner) next(ctx context.Context, checkpoint int64) (batch []dps.Message, upto int64, wait time.Duration, err error) {
	o, r := rn.e.o, rn.r
	last, err := o.Store.LastMessageSeq(ctx, r.Hub)
	if err != nil {
		return nil, 0, 0, err
	}
	if last-checkpoint > o.MaxLag {
		// The route goes on from where overflow left it (it advanced the
		// stored checkpoint), not from checkpoint again.
		if err := rn.overflow(ctx, checkpoint, last-o.MaxLag); err != nil {
			return nil, 0, 0, err
		}
		return nil, last - o.MaxLag, 0, nil
	}
	upto = checkpoint
	for len(batch) < o.BatchSize && upto < last {
		msgs, err := o.Store.Messages(ctx, r.Hub, upto, o.BatchSize)
		if err != nil {
			return nil, 0, 0, err
		}
		if len(msgs) == 0 {
			break
		}
		if msgs[0].Seq > upto+1 && upto == checkpoint {
			o.Logger.WarnContext(ctx, "routing: messages were deleted from the event log before the route delivered them",
				"hub", r.Hub, "route", r.Name, "first_missing", upto+1, "last_missing", msgs[0].Seq-1)
			o.Observer.DeadLettered(r.Hub, r.Name, ReasonDeleted, int(msgs[0].Seq-1-upto))
		}
		for _, m := range msgs {
			upto = m.Seq
			if SourceOf(m) == r.Source && r.Cond.Match(m) {
				batch = append(batch, m)
				if len(batch) == o.BatchSize {
					break
				}
			}
		}
	}
	if len(batch) > 0 && len(batch) < o.BatchSize && o.Linger > 0 {
		if age := o.Now().Sub(batch[0].Enqueued); age >= 0 && age < o.Linger {
			return nil, checkpoint, o.Linger - age, nil
		}
	}
	return batch, upto, 0, nil
}

// overflow gives up on the route's messages after checkpoint up to
// through (MaxLag behind the log's end): those of the last MaxDeadLetters
// positions become dead letters, the older ones are only counted
// (DeadLettersDropped), since the cap would delete them at once.
func (rn *runner) overflow(ctx context.Context, checkpoint, through int64) error {
	o, r := rn.e.o, rn.r
	reason := fmt.Sprintf("the route fell more than %d messages behind the event log (routing.maxLag)", o.MaxLag)
	keepFrom := through - int64(o.MaxDeadLetters) // positions after it are kept
	kept, dropped, gone := 0, 0, int64(0)
	for checkpoint < through {
		msgs, err := o.Store.Messages(ctx, r.Hub, checkpoint, o.BatchSize)
		if err != nil {
			return err
		}
		// Messages the retention deleted already (it keeps no more than
		// maxLag behind the log's end, Floor): lost to the route, counted.
		switch {
		case len(msgs) == 0:
			gone += through - checkpoint
		case msgs[0].Seq > checkpoint+1:
			gone += min(msgs[0].Seq-1, through) - checkpoint
		}
		var give []dps.Message
		next := through
		for _, m := range msgs {
			if m.Seq > through {
				break
			}
			next = m.Seq
			if SourceOf(m) != r.Source || !r.Cond.Match(m) {
				continue
			}
			if m.Seq <= keepFrom {
				dropped++
			} else {
				give = append(give, m)
			}
		}
		if len(give) > 0 {
			if err := o.Store.DeadLetterMessages(ctx, r.Hub, r.Name, o.Node, give, reason, o.Now()); err != nil {
				return err
			}
		}
		if err := o.Store.AdvanceRoute(ctx, r.Hub, r.Name, o.Node, next, "", o.Now()); err != nil {
			return err
		}
		kept += len(give)
		checkpoint = next
	}
	total := kept + dropped
	o.Observer.DeadLettered(r.Hub, r.Name, ReasonMaxLag, total)
	rn.count(0, 0, total)
	o.Logger.WarnContext(ctx, "routing: route too far behind, oldest messages dead-lettered", "hub", r.Hub, "route", r.Name,
		"messages", total, "max_lag", o.MaxLag, "checkpoint", checkpoint)
	if dropped > 0 {
		o.Observer.DeadLettersDropped(r.Hub, r.Name, dropped)
		o.Logger.WarnContext(ctx, "routing: dead letters dropped past the route's cap (routing.maxDeadLetters): only the newest of the messages given up on were kept",
			"hub", r.Hub, "route", r.Name, "dropped", dropped, "kept", kept, "max_dead_letters", o.MaxDeadLetters)
	}
	rn.wroteDeadLetters(ctx, kept)
	if gone > 0 {
		o.Observer.DeadLettered(r.Hub, r.Name, ReasonDeleted, int(gone))
		o.Logger.WarnContext(ctx, "routing: messages past the route's cap were deleted by the event log's retention before they could be dead-lettered",
			"hub", r.Hub, "route", r.Name, "positions", gone, "max_lag", o.MaxLag)
	}
	return nil
}

// wroteDeadLetters notes n new dead letters of the route and trims its
// dead letters after every tenth of MaxDeadLetters new ones (the periodic
// pass of pruneDeadLetters trims what is left over).
func (rn *runner) wroteDeadLetters(ctx context.Context, n int) {
	rn.sinceTrim += n
	if rn.sinceTrim >= max(rn.e.o.MaxDeadLetters/10, 1) {
		rn.sinceTrim = 0
		rn.trimDeadLetters(ctx)
	}
}

// trimDeadLetters deletes the route's oldest dead letters beyond
// MaxDeadLetters, a batch at a time while the store deletes full batches
// (PruneBatch).
func (rn *runner) trimDeadLetters(ctx context.Context) {
	o, r := rn.e.o, rn.r
	var deleted int64
	for {
		n, err := o.Store.TrimDeadLetters(ctx, r.Hub, r.Name, o.MaxDeadLetters)
		if err != nil {
			if ctx.Err() == nil {
				o.Logger.WarnContext(ctx, "routing: trimming dead letters failed", "hub", r.Hub, "route", r.Name, "err", err)
			}
			break
		}
		if deleted += n; n < int64(o.PruneBatch) {
			break
		}
	}
	if deleted > 0 {
		o.Observer.DeadLettersDropped(r.Hub, r.Name, int(deleted))
		o.Logger.WarnContext(ctx, "routing: dead letters dropped past the route's cap (routing.maxDeadLetters): its oldest were deleted", "hub", r.Hub, "route", r.Name,
			"dropped", deleted, "max_dead_letters", o.MaxDeadLetters)
	}
}

func (rn *runner) lag(ctx context.Context, checkpoint int64, pending []dps.Message) {
	o, r := rn.e.o, rn.r
	last, err := o.Store.LastMessageSeq(ctx, r.Hub)
	if err != nil {
		return
	}
	var age time.Duration
	if len(pending) > 0 {
		age = o.Now().Sub(pending[0].Enqueued)
	} else if last > checkpoint {
		if m, err := o.Store.Messages(ctx, r.Hub, checkpoint, 1); err == nil && len(m) > 0 {
			age = o.Now().Sub(m[0].Enqueued)
		}
	}
	o.Observer.Lag(r.Hub, r.Name, max(last-checkpoint, 0), max(age, 0))
}

func isLeaseLost(err error) bool { return dps.KindOf(err) == dps.KindPrecondition }

// isolate delivers msgs one at a time after a permanent refusal of the
// batch (first): a message delivered advances the checkpoint to it, one
// refused for good is dead-lettered at once — once the endpoint took some
// message of the batch: while it took none, the refused ones are held
// back, and when it refuses every message of a batch of several that is
// the endpoint's failure (its credentials, permissions, configuration),
// not the messages': nothing is dead-lettered and the whole batch is
// returned to be retried with failure. A batch of one refused is
// dead-lettered. It stops at the first transient failure and returns the
// messages still to deliver (the held ones first), the checkpoint reached
// and that failure.
func (rn *runner) isolate(ctx context.Context, msgs []dps.Message, checkpoint int64, first error) (rest []dps.Message, cp int64, failure, err error) {
	o, r := rn.e.o, rn.r
	type refusal struct {
		m   dps.Message
		err error
	}
	var held []refusal // refused while the endpoint took nothing of the batch
	taken := false
	deadLetter := func(m dps.Message, refused error) error {
		reason := fmt.Sprintf("refused for good by endpoint %s: %s", r.Endpoint, refused)
		if err := o.Store.DeadLetterMessages(ctx, r.Hub, r.Name, o.Node, []dps.Message{m}, reason, o.Now()); err != nil {
			return err
		}
		o.Observer.DeadLettered(r.Hub, r.Name, ReasonRefused, 1)
		rn.count(0, 0, 1)
		o.Logger.WarnContext(ctx, "routing: a message the endpoint refused for good was dead-lettered", "hub", r.Hub, "route", r.Name,
			"seq", m.Seq, "reason", reason)
		rn.wroteDeadLetters(ctx, 1)
		return nil
	}
	for i, m := range msgs {
		var derr error
		if len(msgs) == 1 {
			derr = first // a batch of one was refused already
		} else {
			dctx, cancel := context.WithTimeout(ctx, o.DeliverTimeout)
			derr = r.Deliver.Deliver(dctx, msgs[i:i+1])
			cancel()
			if ctx.Err() != nil {
				return nil, checkpoint, nil, ctx.Err()
			}
		}
		switch {
		case derr == nil:
			for _, h := range held {
				if err := deadLetter(h.m, h.err); err != nil {
					return nil, checkpoint, nil, err
				}
			}
			held, taken = nil, true
			o.Observer.Delivered(r.Hub, r.Name, 1)
			rn.count(1, 0, 0)
		case IsPermanent(derr) && (taken || len(msgs) == 1):
			if err := deadLetter(m, derr); err != nil {
				return nil, checkpoint, nil, err
			}
		case IsPermanent(derr):
			held = append(held, refusal{m, derr})
			continue // the checkpoint stays before it
		default:
			return msgs[i-len(held):], checkpoint, derr, nil
		}
		if err := o.Store.AdvanceRoute(ctx, r.Hub, r.Name, o.Node, m.Seq, "", o.Now()); err != nil {
			return nil, checkpoint, nil, err
		}
		checkpoint = m.Seq
	}
	if len(held) > 0 { // every message refused: the endpoint's failure
		return msgs, checkpoint, fmt.Errorf("endpoint %s refused each of the batch's %d messages, taken for an outage of the endpoint: %w",
			r.Endpoint, len(msgs), held[len(held)-1].err), nil
	}
	return nil, checkpoint, nil, nil
}
