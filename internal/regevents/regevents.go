// Package regevents is the registration-events feed: what happened to
// each register and poll (accepted, refused, assigned, failed, webhook
// calls), recorded by the transports and the registration use case,
// kept for a bounded time in the store, and read back by the service
// API, dpsctl events and the web console.
//
// A Log is both ends. Record never blocks and never fails a
// registration: events go through a bounded queue to one goroutine that
// appends them in batches; when the queue is full an event is dropped and
// counted (Observer.EventsDropped). Read and Follow read the store, so a
// node sees every node's events (PostgreSQL): its own at once, the others'
// within Options.PollInterval.
package regevents

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps"
)

// Feed is the registration-events feed as its readers (the service API,
// the web console) use it.
type Feed interface {
	// Read returns up to q.Limit events (0: 100; at most MaxLimit) with a
	// Seq greater than q.After that match q.Filter, oldest first; none
	// when there are no more.
	Read(ctx context.Context, q Query) ([]dps.RegistrationEvent, error)
	// Follow is Read, but when no event matches yet it waits up to wait
	// for one (an empty result after wait is no error). A reader follows
	// the feed by calling it again with q.After set to the last Seq it
	// got. It returns ErrClosed once the feed is shutting down.
	Follow(ctx context.Context, q Query, wait time.Duration) ([]dps.RegistrationEvent, error)
	// Latest returns up to q.Limit events (as Read) with a Seq less than
	// q.Before (0: from the newest) that match q.Filter, newest first; q.After
	// is ignored. Latest with Limit 1 and no filter gives the newest Seq,
	// where a reader that wants only new events starts following.
	Latest(ctx context.Context, q Query) ([]dps.RegistrationEvent, error)
}

// Query selects events of the feed.
type Query struct {
	After  int64 // only events with a greater Seq (0: from the oldest kept)
	Before int64 // Latest: only events with a smaller Seq (0: from the newest)
	Limit  int   // at most this many (0: DefaultLimit)
	Filter dps.RegistrationEventFilter
}

// DefaultLimit and MaxLimit bound a Read.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// ErrClosed is returned by Follow once the Log is closed or its follows
// were ended (EndFollows).
var ErrClosed = errors.New("regevents: the feed is closed")

// Store is the persistence the feed needs; both stores provide it.
type Store interface {
	// AppendRegistrationEvents appends events, each with the next Seq,
	// and returns them as stored.
	AppendRegistrationEvents(ctx context.Context, events []dps.RegistrationEvent) ([]dps.RegistrationEvent, error)
	// RegistrationEvents returns up to limit events after after matching
	// f, in Seq order.
	RegistrationEvents(ctx context.Context, after int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error)
	// LatestRegistrationEvents returns up to limit events before before
	// (≤ 0: from the newest) matching f, newest first.
	LatestRegistrationEvents(ctx context.Context, before int64, limit int, f dps.RegistrationEventFilter) ([]dps.RegistrationEvent, error)
	// DeleteRegistrationEventsBefore deletes a bounded batch of the events
	// older than t, reporting how many; called again while it deletes some.
	DeleteRegistrationEventsBefore(ctx context.Context, t time.Time) (int64, error)
	// TrimRegistrationEvents deletes a bounded batch of the events beyond
	// the newest keep, reporting how many; called again while it deletes some.
	TrimRegistrationEvents(ctx context.Context, keep int64) (int64, error)
}

// Observer is told what the feed records (internal/prom implements it:
// the metrics derived from events). Its methods must not block.
type Observer interface {
	// Event is called for every event recorded, before it is queued (a
	// dropped event is observed too).
	Event(e dps.RegistrationEvent)
	// EventsDropped counts events lost: the queue was full, or the store
	// did not take a batch.
	EventsDropped(n int)
}

// Options configure a Log.
type Options struct {
	Store Store
	// Node names this node in the events it records.
	Node string
	// PayloadLimit is the largest device payload kept in an event, in
	// bytes (default 4096); a larger one is left out and the event marked
	// PayloadTruncated.
	PayloadLimit int
	// Retention is how long events are kept (default 24h); MaxEvents how
	// many at most (default 100000). Both are enforced every
	// PruneInterval (default 1 minute).
	Retention     time.Duration
	MaxEvents     int64
	PruneInterval time.Duration
	// QueueSize bounds the events waiting to be appended (default 10000);
	// BatchSize how many one append takes at most (default 500).
	QueueSize int
	BatchSize int
	// PollInterval is how often a Follow that is waiting reads the store
	// for other nodes' events (default 1s); this node's are seen at once.
	PollInterval time.Duration
	Observer     Observer
	Logger       *slog.Logger
	Now          func() time.Time
}

// Defaults of Options.
const (
	DefaultPayloadLimit = 4096
	DefaultRetention    = 24 * time.Hour
	DefaultMaxEvents    = 100_000
)

// Log records events and reads them back. Create it with New, start it
// with Start, and stop it with Close.
type Log struct {
	o     Options
	queue chan dps.RegistrationEvent

	mu       sync.Mutex
	appended chan struct{} // closed (and replaced) after each append
	ended    chan struct{} // closed by EndFollows
	endOnce  sync.Once

	dropped atomic.Int64
	stop    context.CancelFunc
	done    chan struct{}
}

type nopObserver struct{}

func (nopObserver) Event(dps.RegistrationEvent) {}
func (nopObserver) EventsDropped(int)           {}

// New returns a Log; Record queues events until Start.
func New(o Options) *Log {
	if o.PayloadLimit <= 0 {
		o.PayloadLimit = DefaultPayloadLimit
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = time.Minute
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Log{o: o, queue: make(chan dps.RegistrationEvent, o.QueueSize), appended: make(chan struct{}), ended: make(chan struct{})}
}

// Record queues e for the feed: its Time (when not set) is now, its Node
// this node's, and a payload over Options.PayloadLimit is left out
// (PayloadTruncated). It never blocks: when the queue is full, e is
// dropped and counted. Safe on a nil Log (no feed: nothing is recorded).
func (l *Log) Record(e dps.RegistrationEvent) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.o.Now()
	}
	e.Time = e.Time.UTC()
	if e.Node == "" {
		e.Node = l.o.Node
	}
	if len(e.Payload) > l.o.PayloadLimit {
		e.Payload, e.PayloadTruncated = nil, true
	}
	l.o.Observer.Event(e)
	select {
	case l.queue <- e:
	default:
		l.drop(1)
	}
}

// Dropped reports how many events were lost since New.
func (l *Log) Dropped() int64 { return l.dropped.Load() }

func (l *Log) drop(n int) {
	l.dropped.Add(int64(n))
	l.o.Observer.EventsDropped(n)
}

// Start starts appending queued events and pruning old ones, until Close.
// Pruning has its own goroutine: a long prune (a large backlog to delete)
// does not hold up the appends.
func (l *Log) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.stop, l.done = cancel, make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { l.run(ctx) })
	wg.Go(func() { l.pruneLoop(ctx) })
	go func() {
		wg.Wait()
		close(l.done)
	}()
}

// Close ends the follows, appends what is still queued (for up to five
// seconds) and stops.
func (l *Log) Close() {
	l.EndFollows()
	if l.stop == nil {
		return
	}
	l.stop()
	<-l.done
}

// EndFollows makes every Follow, waiting or to come, return ErrClosed:
// event streams end, so that an HTTP server shutting down is not held by
// them.
func (l *Log) EndFollows() { l.endOnce.Do(func() { close(l.ended) }) }

// pruneLoop prunes at once and then every PruneInterval, until ctx ends.
func (l *Log) pruneLoop(ctx context.Context) {
	tick := time.NewTicker(l.o.PruneInterval)
	defer tick.Stop()
	for {
		l.prune(ctx)
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

// run appends batches as they come; once ctx ends it drains the queue.
func (l *Log) run(ctx context.Context) {
	batch := make([]dps.RegistrationEvent, 0, l.o.BatchSize)
	for {
		select {
		case e := <-l.queue:
			batch = append(batch[:0], e)
			batch = l.fill(batch)
			l.append(context.WithoutCancel(ctx), batch) // a batch taken is written, even while closing
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for len(l.queue) > 0 && dctx.Err() == nil {
				l.append(dctx, l.fill(batch[:0]))
			}
			if n := len(l.queue); n > 0 {
				l.drop(n)
			}
			return
		}
	}
}

// fill adds what is queued to batch, up to BatchSize.
func (l *Log) fill(batch []dps.RegistrationEvent) []dps.RegistrationEvent {
	for len(batch) < l.o.BatchSize {
		select {
		case e := <-l.queue:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

// append writes a batch; one the store does not take is dropped (the
// feed is best effort: a registration never waits for it).
func (l *Log) append(ctx context.Context, batch []dps.RegistrationEvent) {
	if len(batch) == 0 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := l.o.Store.AppendRegistrationEvents(actx, batch); err != nil {
		l.drop(len(batch))
		l.o.Logger.Warn("registration events dropped: the store did not take them", "count", len(batch), "err", err)
		return
	}
	l.mu.Lock()
	close(l.appended)
	l.appended = make(chan struct{})
	l.mu.Unlock()
}

// prune enforces the retention: events older than Retention, then those
// beyond the newest MaxEvents, a batch at a time.
func (l *Log) prune(ctx context.Context) {
	before := l.o.Now().Add(-l.o.Retention)
	for _, del := range []func() (int64, error){
		func() (int64, error) { return l.o.Store.DeleteRegistrationEventsBefore(ctx, before) },
		func() (int64, error) { return l.o.Store.TrimRegistrationEvents(ctx, l.o.MaxEvents) },
	} {
		for ctx.Err() == nil {
			n, err := del()
			if err != nil {
				if ctx.Err() == nil {
					l.o.Logger.Warn("registration events: prune failed", "err", err)
				}
				return
			}
			if n == 0 {
				break
			}
		}
	}
}

// Read returns events of the feed (Feed.Read).
func (l *Log) Read(ctx context.Context, q Query) ([]dps.RegistrationEvent, error) {
	return l.o.Store.RegistrationEvents(ctx, q.After, readLimit(q.Limit), q.Filter)
}

// Latest returns events of the feed, newest first (Feed.Latest).
func (l *Log) Latest(ctx context.Context, q Query) ([]dps.RegistrationEvent, error) {
	return l.o.Store.LatestRegistrationEvents(ctx, q.Before, readLimit(q.Limit), q.Filter)
}

func readLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultLimit
	case limit > MaxLimit:
		return MaxLimit
	}
	return limit
}

// Follow reads events of the feed, waiting for one (Feed.Follow).
func (l *Log) Follow(ctx context.Context, q Query, wait time.Duration) ([]dps.RegistrationEvent, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(l.o.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-l.ended:
			return nil, ErrClosed
		default:
		}
		l.mu.Lock()
		appended := l.appended
		l.mu.Unlock()
		events, err := l.Read(ctx, q)
		if err != nil || len(events) > 0 {
			return events, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.ended:
			return nil, ErrClosed
		case <-deadline.C:
			return nil, nil
		case <-appended:
		case <-poll.C:
		}
	}
}

var _ Feed = (*Log)(nil)
