package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Server-sent events, as the built-in hubs' event log (hubevents.go) and
// the registration-events feed (regevents.go) stream them.

// acceptsEventStream reports whether the request asks for server-sent
// events.
func acceptsEventStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// sseHeartbeat is how long an event stream stays silent at most: then a
// comment line keeps proxies and the reader's timeouts from closing it.
const sseHeartbeat = 15 * time.Second

// sseEvent is one server-sent event: its id (written when not 0; a reader
// resumes after it with Last-Event-ID), its name ("": a message) and its
// data, one line.
type sseEvent struct {
	id   int64
	name string
	data []byte
}

// writeEventStream answers with a stream of server-sent events: first,
// then the batches next returns (next waits up to sseHeartbeat for one; an
// empty batch is written as a comment line), until the reader goes away,
// next fails, or ended is closed when a batch comes back empty. Errors
// are the caller's to answer before it calls writeEventStream (or to log
// in next): once the stream has begun, there is no status to change.
func writeEventStream(w http.ResponseWriter, r *http.Request, ended <-chan struct{}, first []sseEvent, next func(ctx context.Context, wait time.Duration) ([]sseEvent, error)) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	batch := first
	for {
		var buf []byte
		for _, e := range batch {
			if e.id != 0 {
				buf = fmt.Appendf(buf, "id: %d\n", e.id)
			}
			if e.name != "" {
				buf = fmt.Appendf(buf, "event: %s\n", e.name)
			}
			buf = fmt.Appendf(buf, "data: %s\n\n", e.data)
		}
		if len(batch) == 0 {
			select {
			case <-ended:
				return
			default:
			}
			buf = append(buf, ": keep-alive\n\n"...)
		}
		rc.SetWriteDeadline(time.Now().Add(sseHeartbeat + 30*time.Second))
		if _, err := w.Write(buf); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		var err error
		if batch, err = next(ctx, sseHeartbeat); err != nil {
			return
		}
	}
}
