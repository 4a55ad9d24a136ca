package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/regevents"
	"github.com/opendps/dps/internal/wire"
)

// The registration-events feed on the service API (a dps extension):
//
//	GET /registrationEvents?after=&limit=&registrationId=&kind=&group=&since=
//
//	after           only events with a greater seq (default 0: the oldest kept)
//	limit           at most this many (default 100, at most 1000)
//	registrationId  one device's events (any case)
//	kind            accepted, refused, assigned, failed or webhook
//	group           one enrollment group's events (any case)
//	since           events at this time or later: RFC 3339, or a Go
//	                duration back from now (10m)
//
// The answer is wire.RegistrationEvents — or, when the request accepts
// text/event-stream, a stream of server-sent events: one per event, its
// id the event's seq and its data the event as in wire.RegistrationEvents,
// then each new event as it is recorded (by any node), until the reader
// goes away; a reconnect with Last-Event-ID resumes after that event.
//
// It needs a policy with ServiceConfig, not EnrollmentRead: the feed
// shows every device that tried to register — unenrolled ones too, with
// their source addresses and what they sent — and why each was refused;
// that is the operator's view of the instance, like /faults, not a
// reading of the enrollments.

func (h *ServiceHandler) eventRoutes(segs []string) ([]route, []string, bool) {
	if h.o.Events == nil || len(segs) != 1 || !strings.EqualFold(segs[0], "registrationEvents") {
		return nil, nil, false
	}
	return []route{{http.MethodGet, access.ServiceConfig, h.readRegistrationEvents}}, nil, true
}

// eventQuery reads a query of the feed from the request's parameters.
func eventQuery(r *http.Request, now time.Time) (regevents.Query, error) {
	v := r.URL.Query()
	var q regevents.Query
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return q, dps.Errorf(dps.KindInvalid, "after=%q: want a sequence number", s)
		}
		q.After = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > regevents.MaxLimit {
			return q, dps.Errorf(dps.KindInvalid, "limit=%q: want a number from 1 to %d", s, regevents.MaxLimit)
		}
		q.Limit = n
	}
	q.Filter.RegistrationID = v.Get("registrationId")
	q.Filter.Group = v.Get("group")
	if s := v.Get("kind"); s != "" {
		k, err := dps.ParseEventKind(s)
		if err != nil {
			return q, err
		}
		q.Filter.Kind = k
	}
	if s := v.Get("since"); s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			q.Filter.Since = t
		} else if d, err := time.ParseDuration(s); err == nil && d >= 0 {
			q.Filter.Since = now.Add(-d)
		} else {
			return q, dps.Errorf(dps.KindInvalid, "since=%q: want an RFC 3339 time or a duration (10m)", s)
		}
	}
	if acceptsEventStream(r) {
		if s := r.Header.Get("Last-Event-ID"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				return q, dps.Errorf(dps.KindInvalid, "Last-Event-ID %q: want a sequence number", s)
			}
			q.After = n
		}
	}
	return q, nil
}

func (h *ServiceHandler) readRegistrationEvents(w http.ResponseWriter, r *http.Request, _ []string) {
	q, err := eventQuery(r, h.o.Now())
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	ctx := r.Context()
	if acceptsEventStream(r) {
		h.streamRegistrationEvents(w, r, q)
		return
	}
	events, err := h.o.Events.Read(ctx, q)
	if err != nil {
		if ctx.Err() == nil {
			h.err.writeError(w, r, err)
		}
		return
	}
	out := wire.RegistrationEvents{Events: make([]wire.RegistrationEvent, len(events))}
	for i, e := range events {
		out.Events[i] = wire.FromRegistrationEvent(e)
	}
	writeJSON(w, http.StatusOK, out)
}

// streamRegistrationEvents writes the feed from q on as server-sent events
// until the reader goes away or the feed's follows end (shutdown).
func (h *ServiceHandler) streamRegistrationEvents(w http.ResponseWriter, r *http.Request, q regevents.Query) {
	ctx := r.Context()
	// Read once first: a store that does not answer is still an error answer.
	first, err := h.o.Events.Read(ctx, q)
	if err != nil {
		if ctx.Err() == nil {
			h.err.writeError(w, r, err)
		}
		return
	}
	events := func(batch []dps.RegistrationEvent) ([]sseEvent, error) {
		out := make([]sseEvent, len(batch))
		for i, e := range batch {
			data, err := wire.Marshal(wire.FromRegistrationEvent(e))
			if err != nil {
				return nil, err
			}
			out[i] = sseEvent{id: e.Seq, data: data}
			q.After = e.Seq
		}
		return out, nil
	}
	batch, err := events(first)
	if err != nil {
		h.err.writeError(w, r, err)
		return
	}
	writeEventStream(w, r, nil, batch, func(ctx context.Context, wait time.Duration) ([]sseEvent, error) {
		next, err := h.o.Events.Follow(ctx, q, wait)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, regevents.ErrClosed) {
				h.o.Logger.WarnContext(ctx, "registration event stream ended", "err", err)
			}
			return nil, err
		}
		return events(next)
	})
}
