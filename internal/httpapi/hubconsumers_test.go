package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
)

func ids(a eventsAnswer) []string {
	var out []string
	for _, m := range a.Messages {
		out = append(out, fmt.Sprint(m["messageId"]))
	}
	return out
}

// TestHubEventConsumers: a named consumer reads from the oldest message
// until it has a checkpoint, then on after it; from wins over the
// checkpoint; consumers are independent; a checkpoint is read back, set
// back, and refused when malformed.
func TestHubEventConsumers(t *testing.T) {
	f := newEventsFixture(t)
	c := f.ts.Client()
	for i := range 3 {
		f.send(t, dps.Message{MessageID: fmt.Sprint("m", i+1)})
	}
	const cp = "/messages/events/checkpoints/"
	if p, a := f.read(t, "&consumer=dash"); a.status != 200 || fmt.Sprint(ids(p)) != "[m1 m2 m3]" || p.Next != 4 {
		t.Fatalf("first read of a consumer: %d %s", a.status, a.body)
	}
	wantHubError(t, do(t, c, f.ts, "GET", cp+"dash", f.owner, nil), 404, "NotFound")
	if a := do(t, c, f.ts, "PUT", cp+"dash?api-version=2021-04-12", f.owner, []byte(`{"sequenceNumber":2}`)); a.status != http.StatusNoContent {
		t.Fatalf("PUT checkpoint: %d %s", a.status, a.body)
	}
	if a := do(t, c, f.ts, "GET", cp+"dash", f.owner, nil); a.status != 200 || a.body != `{"sequenceNumber":2}` {
		t.Errorf("GET checkpoint: %d %s", a.status, a.body)
	}
	if p, a := f.read(t, "&consumer=dash"); a.status != 200 || fmt.Sprint(ids(p)) != "[m3]" {
		t.Errorf("resumed read: %d %s", a.status, a.body)
	}
	if p, a := f.read(t, "&consumer=dash&from=2"); a.status != 200 || fmt.Sprint(ids(p)) != "[m2 m3]" {
		t.Errorf("from with a consumer: %d %s", a.status, a.body)
	}
	if p, a := f.read(t, "&consumer=Dash"); a.status != 200 || len(p.Messages) != 3 {
		t.Errorf("another consumer (names are case-sensitive): %d %s", a.status, a.body)
	}
	do(t, c, f.ts, "PUT", cp+"dash", f.owner, []byte(`{"sequenceNumber":0}`))
	if p, a := f.read(t, "&consumer=dash"); a.status != 200 || len(p.Messages) != 3 {
		t.Errorf("after a checkpoint set back to 0: %d %s", a.status, a.body)
	}
	for _, body := range []string{`{}`, `{"sequenceNumber":"x"}`, `[]`} {
		wantHubError(t, do(t, c, f.ts, "PUT", cp+"dash", f.owner, []byte(body)), 400, "IotHubFormatError")
	}
	wantHubError(t, do(t, c, f.ts, "PUT", cp+"dash", f.owner, []byte(`{"sequenceNumber":-1}`)), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, f.ts, "PUT", cp+"a%20b", f.owner, []byte(`{"sequenceNumber":1}`)), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, f.ts, "PUT", cp+strings.Repeat("x", 129), f.owner, []byte(`{"sequenceNumber":1}`)), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, f.ts, "DELETE", cp+"dash", f.owner, nil), 405, "InvalidOperation")
	wantHubError(t, do(t, c, f.ts, "GET", "/messages/events?consumer=a%20b", f.owner, nil), 400, "ArgumentInvalid")
	wantHubError(t, do(t, c, f.ts, "PUT", cp+"dash", nil, []byte(`{"sequenceNumber":1}`)), 401, "IotHubUnauthorizedAccess")
}

// sseEvent is one server-sent event.
type sseEvent struct{ id, event, data string }

// openStream starts an event stream with hdr; the events arrive on the
// channel, which closes when the stream ends.
func (f *eventsFixture) openStream(t *testing.T, ctx context.Context, query string, hdr map[string]string) (*http.Response, <-chan sseEvent) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", f.ts.URL+"/messages/events?api-version=2021-04-12"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = hubHost
	req.Header.Set("Authorization", f.owner["Authorization"])
	req.Header.Set("Accept", "text/event-stream")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan sseEvent, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e != (sseEvent{}) {
					ch <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				e.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				e.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = line[6:]
			}
		}
	}()
	return resp, ch
}

func next(t *testing.T, ch <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("the stream ended")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return sseEvent{}
}

// TestHubEventStream: with Accept: text/event-stream the log comes as
// server-sent events, one per message with the sequence number as id and
// the message's JSON as data, then each new message as it is appended;
// Last-Event-ID resumes after that message, a consumer after its
// checkpoint; the stream ends when the server ends its waits.
func TestHubEventStream(t *testing.T) {
	f := newEventsFixture(t)
	for i := range 3 {
		f.send(t, dps.Message{MessageID: fmt.Sprint("m", i+1)})
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp, ch := f.openStream(t, ctx, "", map[string]string{"Last-Event-ID": "1"})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"2", "3"} {
		e := next(t, ch)
		var m map[string]any
		if err := json.Unmarshal([]byte(e.data), &m); err != nil || e.id != want || fmt.Sprint(m["sequenceNumber"]) != want || m["deviceId"] != "dev-1" {
			t.Errorf("event %+v (%v), want id %s", e, err, want)
		}
	}
	f.send(t, dps.Message{MessageID: "live"})
	if e := next(t, ch); e.id != "4" || !strings.Contains(e.data, `"messageId":"live"`) {
		t.Errorf("live event %+v", e)
	}

	// A consumer's stream starts after its checkpoint.
	do(t, f.ts.Client(), f.ts, "PUT", "/messages/events/checkpoints/dash", f.owner, []byte(`{"sequenceNumber":3}`))
	_, ch2 := f.openStream(t, ctx, "&consumer=dash", nil)
	if e := next(t, ch2); e.id != "4" {
		t.Errorf("consumer stream starts at %+v, want id 4", e)
	}
	// A bad Last-Event-ID is an error answer, not a stream.
	bad, _ := f.openStream(t, ctx, "", map[string]string{"Last-Event-ID": "x"})
	if bad.StatusCode != 400 {
		t.Errorf("bad Last-Event-ID: %d", bad.StatusCode)
	}

	f.hub.EndEventWaits()
	for _, c := range []<-chan sseEvent{ch, ch2} {
		select {
		case e, ok := <-c:
			if ok {
				t.Errorf("event after the waits ended: %+v", e)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the stream did not end with the server's waits")
		}
	}
}
