package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/wire"
)

// readEvents serves GET /messages/events on a built-in hub's host (a dps
// extension, for a hub access policy with ServiceConnect): a read of the
// hub's event log.
//
//	from  the sequence number of the first message wanted (default 1, the
//	      oldest kept); "end": only messages appended from now on
//	max   how many messages at most (default 100, at most 1000; a page
//	      also holds at most 4 MB of messages)
//	wait  with no message there yet, wait this long for one: a Go
//	      duration (30s) or seconds (30); at most 50s; default 0
//
//	consumer  a named consumer: without from, read on after its
//	      checkpoint (PUT /messages/events/checkpoints/{consumer})
//
// The answer is wire.HubEvents — or, when the request accepts
// text/event-stream, a stream of server-sent events: one event per
// message, its id the sequence number and its data the message as in
// wire.HubEvents, until the reader goes away; a reconnect with
// Last-Event-ID resumes after that message (before from and consumer).
func (h *Handler) readEvents(w http.ResponseWriter, r *http.Request, hub string) {
	q := r.URL.Query()
	var from int64 = 1
	if c := q.Get("consumer"); c != "" && q.Get("from") == "" {
		n, err := h.o.Hub.ConsumerFrom(r.Context(), hub, c)
		if err != nil {
			h.writeHubError(w, r, err, nil)
			return
		}
		from = n
	}
	if v := q.Get("from"); v == "end" {
		from = iothub.FromEnd
	} else if v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			h.writeHubError(w, r, dps.Errorf(dps.KindInvalid, "from=%q: want a sequence number or end", v), nil)
			return
		}
		from = n
	}
	limit := 0
	if v := q.Get("max"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			h.writeHubError(w, r, dps.Errorf(dps.KindInvalid, "max=%q: want a number from 1 to %d", v, iothub.MaxEventPage), nil)
			return
		}
		limit = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if n, nerr := strconv.Atoi(v); nerr == nil {
			d, err = time.Duration(n)*time.Second, nil
		}
		if err != nil || d < 0 {
			h.writeHubError(w, r, dps.Errorf(dps.KindInvalid, "wait=%q: want a duration (30s) or seconds", v), nil)
			return
		}
		wait = d
	}
	if acceptsEventStream(r) {
		if v := r.Header.Get("Last-Event-ID"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				h.writeHubError(w, r, dps.Errorf(dps.KindInvalid, "Last-Event-ID %q: want a sequence number", v), nil)
				return
			}
			from = n + 1
		}
		h.streamEvents(w, r, hub, from, limit)
		return
	}
	p, err := h.o.Hub.Events(r.Context(), hub, from, limit, wait)
	if err != nil {
		if r.Context().Err() != nil {
			return // the reader went away
		}
		h.writeHubError(w, r, err, nil)
		return
	}
	out := wire.HubEvents{Messages: make([]wire.HubEvent, len(p.Messages)), Next: p.Next, First: p.First, Skipped: p.Skipped}
	for i, m := range p.Messages {
		out.Messages[i] = wire.HubEventOf(m)
	}
	writeJSON(w, http.StatusOK, out)
}

// streamEvents writes the hub's event log from from on as server-sent
// events until the reader goes away or the server shuts down (event
// waits ended).
func (h *Handler) streamEvents(w http.ResponseWriter, r *http.Request, hub string, from int64, limit int) {
	ctx := r.Context()
	// Read once first: a bad hub or position is still an error answer.
	p, err := h.o.Hub.Events(ctx, hub, from, limit, 0)
	if err != nil {
		if ctx.Err() == nil {
			h.writeHubError(w, r, err, nil)
		}
		return
	}
	// events is a page as server-sent events, and moves from past it.
	events := func(p iothub.EventPage) ([]sseEvent, error) {
		var out []sseEvent
		if p.Skipped > 0 {
			out = append(out, sseEvent{name: "skipped", data: fmt.Appendf(nil, `{"from":%d,"skipped":%d}`, p.Next-int64(len(p.Messages))-p.Skipped, p.Skipped)})
		}
		for _, m := range p.Messages {
			data, err := wire.Marshal(wire.HubEventOf(m))
			if err != nil {
				return nil, err
			}
			out = append(out, sseEvent{id: m.Seq, data: data})
		}
		from = p.Next
		return out, nil
	}
	first, err := events(p)
	if err != nil {
		h.writeHubError(w, r, err, nil)
		return
	}
	writeEventStream(w, r, h.o.Hub.EventWaitsEnded(), first, func(ctx context.Context, wait time.Duration) ([]sseEvent, error) {
		p, err := h.o.Hub.Events(ctx, hub, from, limit, wait)
		if err != nil {
			if ctx.Err() == nil {
				h.o.Logger.WarnContext(ctx, "event stream ended", "hub", hub, "err", err)
			}
			return nil, err
		}
		return events(p)
	})
}

// checkpointBody is a consumer's checkpoint on the wire.
type checkpointBody struct {
	SequenceNumber *int64 `json:"sequenceNumber"`
}

// serveCheckpoint serves /messages/events/checkpoints/{consumer}: PUT
// {"sequenceNumber":n} stores the consumer's checkpoint (204), GET reads
// it (200 {"sequenceNumber":n}, 404 when it has none).
func (h *Handler) serveCheckpoint(w http.ResponseWriter, r *http.Request, hub, consumer string) {
	switch r.Method {
	case http.MethodGet:
		seq, ok, err := h.o.Hub.Checkpoint(r.Context(), hub, consumer)
		switch {
		case err != nil:
			h.writeHubError(w, r, err, nil)
		case !ok:
			h.writeHubError(w, r, &dps.Error{Kind: dps.KindNotFound, Code: dps.CodeNoSuchEndpoint,
				Message: "The consumer " + consumer + " has no checkpoint."}, nil)
		default:
			writeJSON(w, http.StatusOK, checkpointBody{SequenceNumber: &seq})
		}
	case http.MethodPut:
		data, err := readHubBody(w, r)
		if err != nil {
			h.writeHubError(w, r, err, nil)
			return
		}
		var b checkpointBody
		if err := json.Unmarshal(data, &b); err != nil || b.SequenceNumber == nil {
			h.writeHubError(w, r, &dps.Error{Kind: dps.KindInvalid, Code: dps.CodeFormatError,
				Message: "the body is not a checkpoint {\"sequenceNumber\":n}"}, nil)
			return
		}
		if err := h.o.Hub.SetCheckpoint(r.Context(), hub, consumer, *b.SequenceNumber); err != nil {
			h.writeHubError(w, r, err, nil)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		h.hubMethod(w, r, http.MethodGet, http.MethodPut)
	}
}
