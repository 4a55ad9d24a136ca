package iothub

import (
	"context"
	"fmt"
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

// routedRetention returns the sweep's deletion by age for hub and how
// many of its newest messages the trim keeps: as configured without
// Options.RouteFloor; with it, neither deletes a message after the
// slowest route's checkpoint (the routes dead-letter what falls further
// behind than their cap, which moves the floor on).
func (s *Service) routedRetention(ctx context.Context, log EventLog, hub string, keep int64) (func(context.Context, string, time.Time) (int64, error), int64, error) {
	if s.o.RouteFloor == nil {
		return log.DeleteMessagesBefore, keep, nil
	}
	through, ok, err := s.o.RouteFloor.Floor(ctx, hub)
	if err != nil || !ok {
		return log.DeleteMessagesBefore, keep, err
	}
	routed, isRouted := log.(RoutedEventLog)
	if !isRouted {
		return nil, 0, fmt.Errorf("the event log cannot keep the routes' messages")
	}
	last, err := log.LastMessageSeq(ctx, hub)
	if err != nil {
		return nil, 0, err
	}
	return func(ctx context.Context, hub string, t time.Time) (int64, error) {
		return routed.DeleteRoutedMessagesBefore(ctx, hub, t, through)
	}, max(keep, last-through), nil
}
