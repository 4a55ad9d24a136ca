package console

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
)

// The live pages stream server-sent events: each event named "row" whose
// data is the table row to add (rendered by the same template as the
// page's rows), its id the position to resume after.

// sseHeartbeat is how long a stream stays silent at most.
const sseHeartbeat = 15 * time.Second

type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func startSSE(w http.ResponseWriter) *sseWriter {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: http.NewResponseController(w)}
	s.flush(nil)
	return s
}

// flush writes buf and flushes, extending the write deadline past the
// next heartbeat (the server's write timeout would end the stream).
func (s *sseWriter) flush(buf []byte) error {
	s.rc.SetWriteDeadline(time.Now().Add(sseHeartbeat + 30*time.Second))
	if len(buf) > 0 {
		if _, err := s.w.Write(buf); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// row appends one "row" event to buf: data lines for each line of html.
func row(buf []byte, id int64, html string) []byte {
	buf = fmt.Appendf(buf, "event: row\nid: %d\n", id)
	for line := range strings.Lines(html) {
		buf = fmt.Appendf(buf, "data: %s\n", strings.TrimRight(line, "\r\n"))
	}
	return append(buf, '\n')
}

// resumeAfter is where a stream starts: after the Last-Event-ID of a
// reconnecting EventSource, else after the page's ?after=.
func resumeAfter(r *http.Request) int64 {
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return n
		}
	}
	return 0
}

// feedWindow is how far back the feed page and the overview look.
const feedWindow = time.Hour

// recentEvents returns up to keep of the newest events that pass f,
// newest first, and the Seq of the last event read (where following
// starts). It reads at most 20 pages of 500.
func (h *Handler) recentEvents(ctx context.Context, f EventFilter, keep int) ([]dps.RegistrationEvent, int64, error) {
	var ring []dps.RegistrationEvent
	var after int64
	for range 20 {
		evs, err := h.o.Events.Read(ctx, after, 500, f)
		if err != nil {
			return nil, after, err
		}
		for _, e := range evs {
			ring = append(ring, e)
			if len(ring) > keep {
				ring = ring[1:]
			}
			after = e.Seq
		}
		if len(evs) < 500 {
			break
		}
	}
	out := make([]dps.RegistrationEvent, len(ring))
	for i, e := range ring {
		out[len(ring)-1-i] = e
	}
	return out, after, nil
}

// feedFilter reads the feed's filter from the query.
func feedFilter(r *http.Request) EventFilter {
	q := r.URL.Query()
	return EventFilter{RegistrationID: strings.TrimSpace(q.Get("registrationId")), Group: strings.TrimSpace(q.Get("group")),
		Kind: dps.EventKind(q.Get("kind"))}
}

type feedData struct {
	Off    bool
	Filter EventFilter
	Events []dps.RegistrationEvent
	Stream string
	Kinds  []dps.EventKind
}

func eventKinds() []dps.EventKind {
	return []dps.EventKind{dps.EventAccepted, dps.EventRefused, dps.EventAssigned, dps.EventFailed, dps.EventWebhook}
}

func (h *Handler) feed(w http.ResponseWriter, r *http.Request, s *session) {
	d := feedData{Off: h.o.Events == nil, Filter: feedFilter(r), Kinds: eventKinds()}
	if !d.Off {
		f := d.Filter
		f.Since = h.o.Now().Add(-feedWindow)
		events, last, err := h.recentEvents(r.Context(), f, 100)
		if err != nil {
			h.fail(w, r, s, err)
			return
		}
		d.Events = events
		q := url.Values{"after": {strconv.FormatInt(last, 10)}}
		for k, v := range map[string]string{"registrationId": d.Filter.RegistrationID, "group": d.Filter.Group, "kind": string(d.Filter.Kind)} {
			if v != "" {
				q.Set(k, v)
			}
		}
		d.Stream = "/console/feed/stream?" + q.Encode()
	}
	h.render(w, r, s, http.StatusOK, "feed", page{Title: "Live feed", Section: "feed", Data: d})
}

// feedStream follows the feed as server-sent events, one row per event
// that passes the page's filter, until the browser leaves or the console
// closes.
func (h *Handler) feedStream(w http.ResponseWriter, r *http.Request, s *session) {
	if h.o.Events == nil {
		h.renderStatus(w, r, s, http.StatusNotFound, "Not available", "The registration-events feed is not available on this instance.")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	f := feedFilter(r)
	ch, err := h.o.Events.Follow(ctx, resumeAfter(r))
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	out := startSSE(w)
	beat := time.NewTicker(sseHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		case <-beat.C:
			if out.flush([]byte(": keep-alive\n\n")) != nil {
				return
			}
		case e, ok := <-ch:
			if !ok {
				return
			}
			if !f.Match(e) {
				continue
			}
			html, err := h.fragment("feed-row", e)
			if err != nil {
				h.o.Logger.Error("console: feed row", "err", err)
				return
			}
			if out.flush(row(nil, e.Seq, html)) != nil {
				return
			}
		}
	}
}
