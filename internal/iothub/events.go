package iothub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps"
)

// EventLog is the read and retention side of the hubs' event logs in the
// store (the append side is Store.AppendMessages). A hub is named in any
// case.
type EventLog interface {
	// Messages returns up to limit messages of a hub's log with a Seq
	// greater than after, in Seq order.
	Messages(ctx context.Context, hub string, after int64, limit int) ([]dps.Message, error)
	// LastMessageSeq returns the last Seq given to a message of the hub
	// (0 for none), deleted or not.
	LastMessageSeq(ctx context.Context, hub string) (int64, error)
	// DeleteMessagesBefore deletes a batch of messages from the start of
	// the hub's log that were enqueued before t, stopping at the first
	// one enqueued later, and reports how many it deleted.
	DeleteMessagesBefore(ctx context.Context, hub string, t time.Time) (int64, error)
	// TrimMessages deletes a batch of the hub's oldest messages beyond its
	// newest keep positions and reports how many it deleted.
	TrimMessages(ctx context.Context, hub string, keep int64) (int64, error)
}

// Retention is how long a hub keeps the messages of its event log, and
// how many at most. A message goes when it is older than Age or beyond the
// newest Messages positions, whichever comes first; only ever from the
// start of the log, so a reader never finds a gap after the first message
// it reads. A message enqueued before an older one's successor (a clock
// behind on another node) stays until that successor expires.
type Retention struct {
	// Age is how long a message is kept (default DefaultRetentionAge).
	Age time.Duration
	// Messages is how many of a hub's newest messages are kept at most
	// (default DefaultRetentionMessages).
	Messages int64
	// Interval is how often Sweep runs in RunRetention (default a tenth
	// of Age, between a second and a minute).
	Interval time.Duration
}

// The default retention of a hub's event log: a day, as IoT Hub's
// built-in endpoint keeps messages, and a million messages per hub.
const (
	DefaultRetentionAge      = 24 * time.Hour
	DefaultRetentionMessages = 1_000_000
)

func (r Retention) withDefaults() Retention {
	if r.Age <= 0 {
		r.Age = DefaultRetentionAge
	}
	if r.Messages <= 0 {
		r.Messages = DefaultRetentionMessages
	}
	if r.Interval <= 0 {
		r.Interval = min(max(r.Age/10, time.Second), time.Minute)
	}
	return r
}

// Read limits of Events.
const (
	// DefaultEventPage is how many messages Events returns when asked
	// for none; MaxEventPage is the most it returns.
	DefaultEventPage = 100
	MaxEventPage     = 1000
	// MaxEventPageBytes bounds the messages of one page (by Size); a
	// page holds at least one message, however large.
	MaxEventPageBytes = 4 << 20
	// MaxEventWait is the longest Events waits for a message.
	MaxEventWait = 50 * time.Second
	// eventPoll is how often a waiting Events looks into the store for
	// messages other nodes appended (this node's wake it at once).
	eventPoll = time.Second
)

// FromEnd, as Events' from, is the position after the last message: only
// messages appended later are read.
const FromEnd int64 = -1

// EventPage is one read of a hub's event log.
type EventPage struct {
	// Messages are in Seq order, consecutive.
	Messages []dps.Message
	// Next is the from of the next read: after the last message returned
	// (or where this read started when it returned none).
	Next int64
	// First is the oldest Seq the log keeps (the next Seq to be given when
	// it keeps none).
	First int64
	// Skipped is how many positions from the requested one on retention
	// removed before they were read: the read started at from + Skipped.
	Skipped int64
}

// notifier wakes the readers waiting for a hub's next message.
type notifier struct {
	mu   sync.Mutex
	ch   map[string]chan struct{} // folded hub → closed on its next append
	stop chan struct{}            // closed by EndEventWaits
}

// stopped returns a channel closed once EndEventWaits was called.
func (n *notifier) stopped() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stop == nil {
		n.stop = make(chan struct{})
	}
	return n.stop
}

// EndEventWaits ends every wait of Events, now and later: each returns
// what it has (an empty page). A server calls it when it shuts down, so
// that long polls do not hold the shutdown.
func (s *Service) EndEventWaits() {
	n := &s.events
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stop == nil {
		n.stop = make(chan struct{})
	}
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
}

// wait returns a channel closed when the hub next appends messages.
func (n *notifier) wait(hub string) <-chan struct{} {
	h := strings.ToLower(hub)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = map[string]chan struct{}{}
	}
	c, ok := n.ch[h]
	if !ok {
		c = make(chan struct{})
		n.ch[h] = c
	}
	return c
}

// notify wakes the hub's waiting readers.
func (n *notifier) notify(hub string) {
	h := strings.ToLower(hub)
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.ch[h]; ok {
		close(c)
		delete(n.ch, h)
	}
}

func (s *Service) eventLog() (EventLog, error) {
	if s.o.Events == nil {
		return nil, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint, Message: "this hub does not serve its event log"}
	}
	return s.o.Events, nil
}

// Events reads a built-in hub's event log from position from (the Seq of
// the first message wanted; FromEnd for only what comes next): up to max
// messages (0: DefaultEventPage; at most MaxEventPage, and MaxEventPageBytes
// of them). With wait > 0 (at most MaxEventWait) and no message there yet,
// it waits until one is appended — woken at once by Send on this node,
// else finding it in the store within about a second — or wait passes,
// and then returns an empty page. A from older than the log keeps starts
// at its oldest message, and the page says so (Skipped).
func (s *Service) Events(ctx context.Context, hub string, from int64, limit int, wait time.Duration) (EventPage, error) {
	log, err := s.eventLog()
	if err != nil {
		return EventPage{}, err
	}
	h, ok := s.Hub(hub)
	if !ok {
		return EventPage{}, dps.Errorf(dps.KindNotFound, "%q is not a built-in hub", hub)
	}
	if limit < 0 || limit > MaxEventPage {
		return EventPage{}, dps.Errorf(dps.KindInvalid, "max must be between 1 and %d", MaxEventPage)
	}
	if limit == 0 {
		limit = DefaultEventPage
	}
	if from < FromEnd {
		return EventPage{}, dps.Errorf(dps.KindInvalid, "from must be a position (a sequence number, from 1)")
	}
	if from == FromEnd {
		last, err := log.LastMessageSeq(ctx, h)
		if err != nil {
			return EventPage{}, err
		}
		from = last + 1
	}
	from = max(from, 1)
	wait = min(wait, MaxEventWait)
	stopped := s.events.stopped()
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		woken := s.events.wait(h) // before reading: an append after the read wakes us
		p, err := s.readEvents(ctx, log, h, from, limit)
		if err != nil || len(p.Messages) > 0 || wait <= 0 {
			return p, err
		}
		poll := time.NewTimer(eventPoll)
		select {
		case <-woken:
		case <-poll.C:
		case <-deadline:
			poll.Stop()
			return p, nil
		case <-stopped:
			poll.Stop()
			return p, nil
		case <-ctx.Done():
			poll.Stop()
			return EventPage{}, ctx.Err()
		}
		poll.Stop()
	}
}

func (s *Service) readEvents(ctx context.Context, log EventLog, hub string, from int64, limit int) (EventPage, error) {
	msgs, err := log.Messages(ctx, hub, from-1, limit)
	if err != nil {
		return EventPage{}, err
	}
	size := 0
	for i, m := range msgs {
		if size += Size(m); size > MaxEventPageBytes && i > 0 {
			msgs = msgs[:i]
			break
		}
	}
	p := EventPage{Messages: msgs, Next: from}
	head, err := log.Messages(ctx, hub, 0, 1)
	if err != nil {
		return EventPage{}, err
	}
	if len(head) > 0 {
		p.First = head[0].Seq
	} else {
		last, err := log.LastMessageSeq(ctx, hub)
		if err != nil {
			return EventPage{}, err
		}
		p.First = last + 1
	}
	if len(msgs) > 0 {
		// The sweep may have removed the first message between the reads.
		p.First = min(p.First, msgs[0].Seq)
		p.Skipped = msgs[0].Seq - from
		p.Next = msgs[len(msgs)-1].Seq + 1
	} else if p.First > from {
		p.Skipped, p.Next = p.First-from, p.First
	}
	return p, nil
}

// Sweep applies the retention to every built-in hub's event log once:
// it deletes the messages older than Retention.Age and those beyond the
// newest Retention.Messages, from the start of each log, batch after
// batch, and logs (at debug) how many went.
func (s *Service) Sweep(ctx context.Context) error {
	log, err := s.eventLog()
	if err != nil {
		return err
	}
	r := s.o.Retention.withDefaults()
	for _, hub := range s.o.Hubs {
		var byAge, byCount int64
		deleteBefore, trim, err := s.routedRetention(ctx, log, hub, r.Messages)
		if err != nil {
			return fmt.Errorf("iothub: event retention of %s: %w", hub, err)
		}
		for {
			n, err := deleteBefore(ctx)
			if err != nil {
				return fmt.Errorf("iothub: event retention of %s: %w", hub, err)
			}
			if byAge += n; n == 0 {
				break
			}
		}
		for {
			n, err := trim(ctx)
			if err != nil {
				return fmt.Errorf("iothub: event retention of %s: %w", hub, err)
			}
			if byCount += n; n == 0 {
				break
			}
		}
		if byAge > 0 || byCount > 0 {
			s.o.Logger.DebugContext(ctx, "event log retention", "hub", hub, "deleted_by_age", byAge, "deleted_by_count", byCount,
				"retention", r.Age.String(), "retention_messages", r.Messages)
		}
	}
	return nil
}

// RunRetention sweeps the event logs every Retention.Interval, the first
// time at once, until ctx ends. A failed sweep is logged and tried again
// at the next interval. Without Options.Events it returns at once.
func (s *Service) RunRetention(ctx context.Context) {
	if s.o.Events == nil {
		return
	}
	r := s.o.Retention.withDefaults()
	t := time.NewTicker(r.Interval)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.o.Logger.WarnContext(ctx, "event log retention failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
