package iothub

import (
	"context"
	"time"

	"github.com/opendps/dps"
)

// Named consumers of a hub's event log: a reader that names itself
// resumes from its checkpoint, the last sequence number it said it is
// done with, kept in the store.

// EventCheckpoints keeps the consumers' checkpoints (the stores'
// hub_event_checkpoints). Options.Events serves them when it implements
// it (the SQLite and PostgreSQL stores do).
type EventCheckpoints interface {
	// EventCheckpoint returns a consumer's checkpoint; ok is false when
	// it has none.
	EventCheckpoint(ctx context.Context, hub, consumer string) (seq int64, ok bool, err error)
	// SetEventCheckpoint stores it (forward or back).
	SetEventCheckpoint(ctx context.Context, hub, consumer string, seq int64, now time.Time) error
}

// MaxConsumerName is the longest consumer name.
const MaxConsumerName = 128

// ValidConsumer checks a consumer's name: 1 to MaxConsumerName ASCII
// letters, digits, '.', '_' and '-'. It is KindInvalid otherwise.
func ValidConsumer(name string) error {
	ok := name != "" && len(name) <= MaxConsumerName
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return dps.Errorf(dps.KindInvalid, "consumer %q: want 1 to %d letters, digits, '.', '_' or '-'", name, MaxConsumerName)
	}
	return nil
}

func (s *Service) checkpoints(hub string) (EventCheckpoints, string, error) {
	log, err := s.eventLog()
	if err != nil {
		return nil, "", err
	}
	cp, ok := log.(EventCheckpoints)
	if !ok {
		return nil, "", &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint, Message: "this hub keeps no consumer checkpoints"}
	}
	h, ok := s.Hub(hub)
	if !ok {
		return nil, "", dps.Errorf(dps.KindNotFound, "%q is not a built-in hub", hub)
	}
	return cp, h, nil
}

// Checkpoint returns a consumer's checkpoint of the hub's event log: the
// last sequence number it is done with; ok is false when it has none.
func (s *Service) Checkpoint(ctx context.Context, hub, consumer string) (seq int64, ok bool, err error) {
	if err := ValidConsumer(consumer); err != nil {
		return 0, false, err
	}
	cp, h, err := s.checkpoints(hub)
	if err != nil {
		return 0, false, err
	}
	return cp.EventCheckpoint(ctx, h, consumer)
}

// SetCheckpoint stores a consumer's checkpoint: seq is the last sequence
// number it is done with (0: none, it starts again at the oldest kept).
func (s *Service) SetCheckpoint(ctx context.Context, hub, consumer string, seq int64) error {
	if err := ValidConsumer(consumer); err != nil {
		return err
	}
	if seq < 0 {
		return dps.Errorf(dps.KindInvalid, "sequenceNumber must be 0 or more")
	}
	cp, h, err := s.checkpoints(hub)
	if err != nil {
		return err
	}
	return cp.SetEventCheckpoint(ctx, h, consumer, seq, s.o.Now().UTC())
}

// ConsumerFrom is where a consumer resumes reading: after its checkpoint,
// or at the oldest message kept (1) when it has none.
func (s *Service) ConsumerFrom(ctx context.Context, hub, consumer string) (int64, error) {
	seq, _, err := s.Checkpoint(ctx, hub, consumer)
	if err != nil {
		return 0, err
	}
	return seq + 1, nil
}

// EventWaitsEnded is closed once EndEventWaits was called: a stream of
// the event log ends then.
func (s *Service) EventWaitsEnded() <-chan struct{} { return s.events.stopped() }
