package httpapi

import (
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
// The answer is wire.HubEvents.
func (h *Handler) readEvents(w http.ResponseWriter, r *http.Request, hub string) {
	q := r.URL.Query()
	var from int64 = 1
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
