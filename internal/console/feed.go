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

// defaultHeartbeat is how long a stream stays silent at most (Options.Heartbeat).
const defaultHeartbeat = 15 * time.Second

type sseWriter struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	heart time.Duration
}

func (h *Handler) startSSE(w http.ResponseWriter) *sseWriter {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := &sseWriter{w: w, rc: http.NewResponseController(w), heart: h.o.Heartbeat}
	s.flush(nil)
	return s
}

// flush writes buf and flushes, extending the write deadline past the
// next heartbeat (the server's write timeout would end the stream).
func (s *sseWriter) flush(buf []byte) error {
	s.rc.SetWriteDeadline(time.Now().Add(s.heart + 30*time.Second))
	if len(buf) > 0 {
		if _, err := s.w.Write(buf); err != nil {
			return err
		}
	}
	return s.rc.Flush()
}

// row appends one "row" event to buf: data lines for each line of html.
// An EventSource ends a line at \n, \r or \r\n: each of them (a device's
// body may hold a lone \r) ends a data line here, so that no text of html
// can start a field of its own (an id: that would move the reconnect
// position).
func row(buf []byte, id int64, html string) []byte {
	buf = fmt.Appendf(buf, "event: row\nid: %d\n", id)
	html = strings.ReplaceAll(html, "\r\n", "\n")
	html = strings.ReplaceAll(html, "\r", "\n")
	for line := range strings.Lines(html) {
		buf = fmt.Appendf(buf, "data: %s\n", strings.TrimSuffix(line, "\n"))
	}
	return append(buf, '\n')
}

// resumeAfter is where a stream starts: after the Last-Event-ID of a
// reconnecting EventSource, else after the page's ?after=; ok is false
// when the request gives neither (0).
func resumeAfter(r *http.Request) (after int64, ok bool) {
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return n, true
		}
	}
	return 0, false
}

// alive reports whether the session of a live stream is still signed in
// (not signed out, idle or too old): a stream checks at each heartbeat
// and ends once it is not. It does not count as a request.
func (h *Handler) alive(s *session) bool { return h.sessions.alive(s.id, h.o.Now()) }

// feedWindow is how far back the feed page and the overview look.
const feedWindow = time.Hour

// newestSeq is the Seq of the newest event of the feed (0: none), where
// a stream of new events starts.
func (h *Handler) newestSeq(ctx context.Context) (int64, error) {
	evs, err := h.o.Events.Latest(ctx, 0, 1, EventFilter{})
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	return evs[0].Seq, nil
}

// recentEvents returns up to keep (at most 1000) of the newest events
// that pass f, newest first, and the Seq of the newest event of the feed
// (where following starts: every event after it is new to the page).
func (h *Handler) recentEvents(ctx context.Context, f EventFilter, keep int) ([]dps.RegistrationEvent, int64, error) {
	last, err := h.newestSeq(ctx)
	if err != nil || last == 0 {
		return nil, 0, err
	}
	evs, err := h.o.Events.Latest(ctx, last+1, keep, f)
	if err != nil {
		return nil, 0, err
	}
	return evs, last, nil
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
// that passes the page's filter and window (the last hour, as the page),
// until the browser leaves, the session ends or the console closes. It
// starts after the Last-Event-ID or ?after= given, else after the newest
// event.
func (h *Handler) feedStream(w http.ResponseWriter, r *http.Request, s *session) {
	if h.o.Events == nil {
		h.renderStatus(w, r, s, http.StatusNotFound, "Not available", "The registration-events feed is not available on this instance.")
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	f := feedFilter(r)
	f.Since = h.o.Now().Add(-feedWindow)
	after, ok := resumeAfter(r)
	if !ok {
		var err error
		if after, err = h.newestSeq(ctx); err != nil {
			h.fail(w, r, s, err)
			return
		}
	}
	ch, err := h.o.Events.Follow(ctx, after)
	if err != nil {
		h.fail(w, r, s, err)
		return
	}
	out := h.startSSE(w)
	beat := time.NewTicker(h.o.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.stop:
			return
		case <-beat.C:
			if !h.alive(s) || out.flush([]byte(": keep-alive\n\n")) != nil {
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
