package httpapi_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/access"
	"github.com/opendps/dps/internal/client"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/regevents"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/internal/store/sqlite"
	"github.com/opendps/dps/internal/wire"
)

// eventsAPI is a service API with the registration-events feed on a real
// SQLite store, behind two policies: owner (every right) and reader
// (EnrollmentRead only).
type eventsAPI struct {
	srv         *httptest.Server
	log         *regevents.Log
	owner, read []byte
}

func newEventsAPI(t *testing.T) *eventsAPI {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dps.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a := &eventsAPI{log: regevents.New(regevents.Options{Store: db, Node: "node-1"}), owner: []byte("owner-key-0123456789abcdef"), read: []byte("reader-key-0123456789abcdef")}
	a.log.Start()
	t.Cleanup(a.log.Close)
	checker, err := access.New([]access.Policy{
		{Name: "owner", PrimaryKey: base64.StdEncoding.EncodeToString(a.owner), Rights: []access.Right{access.ServiceConfig, access.EnrollmentRead, access.EnrollmentWrite}},
		{Name: "reader", PrimaryKey: base64.StdEncoding.EncodeToString(a.read), Rights: []access.Right{access.EnrollmentRead, access.RegistrationStatusRead}},
	}, []string{"dps.example"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := httpapi.NewService(httpapi.ServiceOptions{Authorizer: checker, Events: a.log})
	a.srv = httptest.NewTLSServer(httpapi.New(httpapi.Options{Registrar: fake(), Service: svc}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *eventsAPI) client(key []byte, name string) *client.Client {
	return &client.Client{Endpoint: a.srv.URL, HostName: "dps.example", KeyName: name, Key: key, HTTP: a.srv.Client()}
}

// get sends GET /registrationEvents?query with the owner's token and hdr.
func (a *eventsAPI) get(t *testing.T, query string, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.srv.URL+"/registrationEvents?"+query, nil)
	req.Header.Set("Authorization", sas.New("dps.example", a.owner, "owner", time.Now().Add(time.Hour)))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// record records events and waits until the feed holds total.
func (a *eventsAPI) record(t *testing.T, total int, events ...dps.RegistrationEvent) {
	t.Helper()
	for _, e := range events {
		a.log.Record(e)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := a.log.Read(context.Background(), regevents.Query{Limit: regevents.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == total {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the feed holds %d events, want %d", len(got), total)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func eventIDs(events []wire.RegistrationEvent) string {
	var out []string
	for _, e := range events {
		out = append(out, fmt.Sprintf("%s:%d", e.RegistrationID, e.Seq))
	}
	return strings.Join(out, ",")
}

// TestRegistrationEventsAPI: GET /registrationEvents answers the feed's
// events in the wire shape, after a seq, at most limit, filtered by
// registration ID, kind, group and time; bad parameters are 400 in the
// DPS error shape; the feed needs ServiceConfig.
func TestRegistrationEventsAPI(t *testing.T) {
	a := newEventsAPI(t)
	old := time.Now().Add(-2 * time.Hour).UTC()
	a.record(t, 4,
		dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-1", EnrollmentGroup: "grp", OperationID: "op-1", Attestation: dps.AttestationSymmetricKey,
			Transport: "https", Source: "192.0.2.1:4000", TrackingID: "t-1", Payload: json.RawMessage(`{"fw":"1.0"}`), Time: old},
		dps.RegistrationEvent{Kind: dps.EventRefused, RegistrationID: "dev-2", Transport: "mqtt", Code: dps.CodeUnauthorized, Reason: "bad key", Cause: dps.CauseAuthentication},
		dps.RegistrationEvent{Kind: dps.EventWebhook, RegistrationID: "dev-1", EnrollmentGroup: "grp", Webhook: &dps.WebhookCall{URL: "https://alloc.example/x", Status: 200, Latency: 12500 * time.Microsecond}},
		dps.RegistrationEvent{Kind: dps.EventAssigned, RegistrationID: "DEV-1", EnrollmentGroup: "GRP", Hub: "hub.example.net", DeviceID: "dev-1", Payload: json.RawMessage(`{"ok":true}`)},
	)
	ctx := context.Background()
	owner := a.client(a.owner, "owner")
	all, err := owner.RegistrationEvents(ctx, client.EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if got := eventIDs(all); got != "dev-1:1,dev-2:2,dev-1:3,DEV-1:4" {
		t.Fatalf("events %s", got)
	}
	first, _ := json.Marshal(all[0])
	if want := `{"seq":1,"time":"` + old.Format(time.RFC3339Nano) + `","kind":"accepted","registrationId":"dev-1","enrollmentGroupId":"grp","operationId":"op-1","attestation":"symmetricKey","transport":"https","source":"192.0.2.1:4000","trackingId":"t-1","payload":{"fw":"1.0"},"node":"node-1"}`; string(first) != want {
		t.Errorf("first event\n%s\nwant\n%s", first, want)
	}
	if w := all[2].Webhook; w == nil || w.URL != "https://alloc.example/x" || w.Status != 200 || w.LatencyMs != 12.5 {
		t.Errorf("webhook call %+v", all[2].Webhook)
	}
	if e := all[1]; e.ErrorCode != dps.CodeUnauthorized || e.Reason != "bad key" || e.Cause != "authentication" || e.Transport != "mqtt" {
		t.Errorf("refusal %+v", e)
	}
	for _, tt := range []struct {
		q    client.EventQuery
		want string
	}{
		{client.EventQuery{After: 1, Limit: 2}, "dev-2:2,dev-1:3"},
		{client.EventQuery{RegistrationID: "Dev-1"}, "dev-1:1,dev-1:3,DEV-1:4"},
		{client.EventQuery{Kind: "refused"}, "dev-2:2"},
		{client.EventQuery{Group: "grp", After: 1}, "dev-1:3,DEV-1:4"},
		{client.EventQuery{Since: "1h"}, "dev-2:2,dev-1:3,DEV-1:4"},
		{client.EventQuery{Since: old.Add(-time.Second).Format(time.RFC3339), Kind: "accepted"}, "dev-1:1"},
		{client.EventQuery{After: 4}, ""},
	} {
		got, err := owner.RegistrationEvents(ctx, tt.q)
		if err != nil || eventIDs(got) != tt.want {
			t.Errorf("%+v: %s, %v; want %s", tt.q, eventIDs(got), err, tt.want)
		}
	}
	for _, bad := range []string{"after=-1", "after=x", "limit=0", "limit=1001", "kind=exploded", "since=yesterday"} {
		resp := a.get(t, bad, nil)
		var body wire.ErrorBody
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || body.ErrorCode != dps.CodeInvalid || body.Message == "" || body.TrackingID == "" {
			t.Errorf("%s: HTTP %d %+v, want 400 with code %d", bad, resp.StatusCode, body, dps.CodeInvalid)
		}
	}
	_, err = a.client(a.read, "reader").RegistrationEvents(ctx, client.EventQuery{})
	if k := dps.KindOf(err); k != dps.KindForbidden {
		t.Errorf("a policy without ServiceConfig: %v (kind %v), want forbidden", err, k)
	}
	_, err = a.client([]byte("wrong-key-0123456789abcdef"), "owner").RegistrationEvents(ctx, client.EventQuery{})
	if client.StatusOf(err) != http.StatusUnauthorized {
		t.Errorf("a bad token: %v, want 401", err)
	}
}

// sseReader reads server-sent events: id and data of each.
type sseReader struct{ r *bufio.Reader }

func (s sseReader) next(t *testing.T) (id string, data wire.RegistrationEvent) {
	t.Helper()
	var raw string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			raw = strings.TrimPrefix(line, "data: ")
		case line == "" && raw != "":
			if err := json.Unmarshal([]byte(raw), &data); err != nil {
				t.Fatalf("data %q: %v", raw, err)
			}
			return id, data
		}
	}
}

// TestRegistrationEventsStream: with Accept: text/event-stream the feed is
// a stream of server-sent events, id the seq: the events kept, then new
// ones as they are recorded; a reconnect with Last-Event-ID resumes after
// it (filters kept); the stream ends when the feed's follows end.
func TestRegistrationEventsStream(t *testing.T) {
	a := newEventsAPI(t)
	a.record(t, 2, dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-1"}, dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-2"})
	sse := map[string]string{"Accept": "text/event-stream"}
	resp := a.get(t, "", sse)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := sseReader{bufio.NewReader(resp.Body)}
	for i, want := range []string{"dev-1", "dev-2"} {
		if id, e := r.next(t); id != fmt.Sprint(i+1) || e.RegistrationID != want || e.Seq != int64(i+1) {
			t.Errorf("event %d: id %s, %+v; want %s", i, id, e, want)
		}
	}
	a.log.Record(dps.RegistrationEvent{Kind: dps.EventAssigned, RegistrationID: "dev-3", Hub: "hub.example.net"})
	if id, e := r.next(t); id != "3" || e.RegistrationID != "dev-3" || e.AssignedHub != "hub.example.net" {
		t.Errorf("the new event: id %s, %+v", id, e)
	}
	resp.Body.Close()

	a.record(t, 5, dps.RegistrationEvent{Kind: dps.EventRefused, RegistrationID: "dev-1"}, dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-4"})
	resp = a.get(t, "registrationId=dev-1", map[string]string{"Accept": "text/event-stream", "Last-Event-ID": "3"})
	r = sseReader{bufio.NewReader(resp.Body)}
	if id, e := r.next(t); id != "4" || e.RegistrationID != "dev-1" || e.Kind != "refused" {
		t.Errorf("resumed after 3: id %s, %+v; want dev-1's refusal at 4", id, e)
	}
	a.log.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-9"}) // not dev-1's
	a.log.Record(dps.RegistrationEvent{Kind: dps.EventAssigned, RegistrationID: "dev-1"})
	if id, e := r.next(t); id != "7" || e.Kind != "assigned" {
		t.Errorf("next of dev-1: id %s, %+v; want its assignment at 7", id, e)
	}
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
	a.log.EndFollows()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("the stream ended with %v, want its end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end with the feed's follows")
	}
	resp.Body.Close()

	resp = a.get(t, "", map[string]string{"Accept": "text/event-stream", "Last-Event-ID": "x"})
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("Last-Event-ID x: HTTP %d, want 400", resp.StatusCode)
	}
}

// TestRegistrationEventsClientFollow: the client reads the stream, event
// by event, resuming after q.After, until ctx ends or the server ends it.
func TestRegistrationEventsClientFollow(t *testing.T) {
	a := newEventsAPI(t)
	a.record(t, 3, dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-1"}, dps.RegistrationEvent{Kind: dps.EventRefused, RegistrationID: "dev-2"},
		dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-3"})
	c := a.client(a.owner, "owner")
	c.HTTP = &http.Client{Transport: a.srv.Client().Transport, Timeout: 50 * time.Millisecond} // a stream outlasts the client's timeout
	got := make(chan wire.RegistrationEvent, 10)
	done := make(chan error, 1)
	go func() {
		done <- c.FollowRegistrationEvents(context.Background(), client.EventQuery{After: 1, Kind: "accepted"}, func(e wire.RegistrationEvent) error {
			got <- e
			return nil
		})
	}()
	want := func(id string) {
		t.Helper()
		select {
		case e := <-got:
			if e.RegistrationID != id {
				t.Errorf("followed %s, want %s", e.RegistrationID, id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event %s", id)
		}
	}
	want("dev-3")
	time.Sleep(100 * time.Millisecond) // past the client's timeout
	a.log.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-4"})
	want("dev-4")
	a.log.EndFollows()
	select {
	case err := <-done:
		if !errors.Is(err, client.ErrStreamEnded) {
			t.Errorf("the follow ended with %v, want ErrStreamEnded", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follow did not end with the stream")
	}
}
