package iothub

import (
	"context"
	"fmt"
	"math"
	"time"
)

// RouteFloor is how far the message routes let the retention delete a
// hub's event log (internal/routing's Engine.Floor): messages after
// through stay, whatever their age or number; ok false when no route
// reads the hub.
type RouteFloor interface {
	Floor(ctx context.Context, hub string) (through int64, ok bool, err error)
}

// RoutedEventLog is an EventLog that deletes by age only up to a
// position (the stores' DeleteRoutedMessagesBefore).
type RoutedEventLog interface {
	DeleteRoutedMessagesBefore(ctx context.Context, hub string, t time.Time, through int64) (int64, error)
}

// routedRetention returns the sweep's deletion by age and its trim by
// count for hub: as configured without Options.RouteFloor; with it,
// neither deletes a message after the slowest route's checkpoint (the
// routes dead-letter what falls further behind than their cap, which moves
// the floor on). The trim's bound is fixed when the sweep starts: messages
// appended during the sweep never make it delete more.
func (s *Service) routedRetention(ctx context.Context, log EventLog, hub string, keep int64) (byAge, trim func(context.Context) (int64, error), err error) {
	last, err := log.LastMessageSeq(ctx, hub)
	if err != nil {
		return nil, nil, err
	}
	// The newest keep messages stay: those after last-keep, last as now.
	bound := last - max(keep, 0)
	cutoff := s.o.Now().Add(-s.o.Retention.withDefaults().Age)
	routed, isRouted := log.(RoutedEventLog)
	if s.o.RouteFloor != nil {
		through, ok, err := s.o.RouteFloor.Floor(ctx, hub)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			if !isRouted {
				return nil, nil, fmt.Errorf("the event log cannot keep the routes' messages")
			}
			bound = min(bound, through)
			return func(ctx context.Context) (int64, error) {
					return routed.DeleteRoutedMessagesBefore(ctx, hub, cutoff, through)
				}, func(ctx context.Context) (int64, error) {
					return routed.DeleteRoutedMessagesBefore(ctx, hub, farFuture(), bound)
				}, nil
		}
	}
	byAge = func(ctx context.Context) (int64, error) { return log.DeleteMessagesBefore(ctx, hub, cutoff) }
	if isRouted {
		// Bounded by the position, not by a count of the log as it is
		// when each batch runs.
		return byAge, func(ctx context.Context) (int64, error) {
			return routed.DeleteRoutedMessagesBefore(ctx, hub, farFuture(), bound)
		}, nil
	}
	return byAge, func(ctx context.Context) (int64, error) { return log.TrimMessages(ctx, hub, keep) }, nil
}

// farFuture is a cutoff every message is older than (the latest time
// whose UnixNano the stores can compare).
func farFuture() time.Time { return time.Unix(0, math.MaxInt64) }
