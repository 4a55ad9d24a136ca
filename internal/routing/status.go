package routing

import (
	"context"
	"fmt"

	"github.com/opendps/dps"
)

// RouteStatus is a route as the service API shows it (dps.RouteStatus).
type RouteStatus = dps.RouteStatus

// Status returns the routes of a hub, in configuration order; KindNotFound
// when no route names the hub.
func (e *Engine) Status(ctx context.Context, hub string) ([]RouteStatus, error) {
	stored, err := e.o.Store.Routes(ctx, hub)
	if err != nil {
		return nil, err
	}
	byName := map[string]dps.RouteState{}
	for _, s := range stored {
		byName[s.Route] = s
	}
	last, err := e.o.Store.LastMessageSeq(ctx, hub)
	if err != nil {
		return nil, err
	}
	var out []RouteStatus
	for _, rn := range e.routes {
		if dps.FoldID(rn.r.Hub) != dps.FoldID(hub) {
			continue
		}
		s := RouteStatus{Hub: rn.r.Hub, Name: rn.r.Name, Source: string(rn.r.Source), Condition: rn.r.Query, Endpoint: rn.r.Endpoint,
			Enabled: rn.r.Enabled, State: "disabled"}
		if st, ok := byName[rn.r.Name]; ok {
			s.Owner, s.Checkpoint, s.LastError, s.LastErrorAt, s.Updated = st.Owner, st.Checkpoint, st.LastError, st.LastErrorAt, st.Updated
			s.Lag = max(last-st.Checkpoint, 0)
			if st.LeaseUntil.After(e.o.Now()) {
				s.LeaseUntil = st.LeaseUntil
			} else {
				s.Owner = ""
			}
			if s.Lag > 0 {
				if m, err := e.o.Store.Messages(ctx, hub, st.Checkpoint, 1); err == nil && len(m) > 0 {
					s.LagAge = max(e.o.Now().Sub(m[0].Enqueued), 0)
				}
			}
		}
		rn.mu.Lock()
		if rn.r.Enabled {
			s.State, s.Attempt, s.RetryAt = rn.state, rn.attempt, rn.retryAt
		}
		s.Delivered, s.Failed, s.DeadLettered = rn.delivered, rn.failed, rn.deadLettered
		rn.mu.Unlock()
		out = append(out, s)
	}
	if out == nil {
		return nil, dps.Errorf(dps.KindNotFound, "hub %s has no routes", hub)
	}
	return out, nil
}

// DeadLetters lists a route's dead letters after Seq after.
func (e *Engine) DeadLetters(ctx context.Context, hub, route string, after int64, limit int) ([]dps.DeadLetter, error) {
	for _, rn := range e.routes {
		if dps.FoldID(rn.r.Hub) == dps.FoldID(hub) && rn.r.Name == route {
			return e.o.Store.DeadLetters(ctx, hub, route, after, limit)
		}
	}
	return nil, dps.Errorf(dps.KindNotFound, "hub %s has no route %q", hub, route)
}

// Floor is how far the event log's retention may delete a hub's log: up
// to the slowest enabled route's checkpoint, but never keeping more than
// MaxLag messages for it (past that the route dead-letters them); ok is
// false when no enabled route reads the hub (retention as without
// routes). A route that never ran holds nothing back: it starts at the
// end of the log.
func (e *Engine) Floor(ctx context.Context, hub string) (through int64, ok bool, err error) {
	var routes []dps.RouteState
	loaded := false
	for _, rn := range e.routes {
		if !rn.r.Enabled || dps.FoldID(rn.r.Hub) != dps.FoldID(hub) {
			continue
		}
		if !loaded {
			if routes, err = e.o.Store.Routes(ctx, hub); err != nil {
				return 0, false, fmt.Errorf("routing: the routes' checkpoints: %w", err)
			}
			loaded = true
		}
		for _, st := range routes {
			if st.Route == rn.r.Name && (!ok || st.Checkpoint < through) {
				through, ok = st.Checkpoint, true
			}
		}
	}
	if !loaded {
		return 0, false, nil
	}
	last, err := e.o.Store.LastMessageSeq(ctx, hub)
	if err != nil {
		return 0, false, err
	}
	if !ok {
		return last, true, nil
	}
	return max(through, last-e.o.MaxLag), true, nil
}
