package storetest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// The registration-events feed.

// regEvent is an event as the feed's recorder hands it to its store.
func regEvent(kind dps.EventKind, regID, group string) dps.RegistrationEvent {
	return dps.RegistrationEvent{Kind: kind, RegistrationID: regID, EnrollmentGroup: group, OperationID: "op-" + regID,
		Attestation: dps.AttestationSymmetricKey, Transport: "https", Source: "192.0.2.1:5000", TrackingID: "t-" + regID, Node: "node-1"}
}

// eventSeqs are the registration IDs and Seqs of events, "id:seq".
func eventSeqs(events []dps.RegistrationEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = fmt.Sprintf("%s:%d", e.RegistrationID, e.Seq)
	}
	return out
}

func sameEvents(t *testing.T, what string, got []dps.RegistrationEvent, want ...string) {
	t.Helper()
	if g := eventSeqs(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("%s: %v, want %v", what, g, want)
	}
}

func readEvents(t *testing.T, s Store, f dps.RegistrationEventFilter) []dps.RegistrationEvent {
	t.Helper()
	var all []dps.RegistrationEvent
	for after := int64(0); ; {
		page, err := s.RegistrationEvents(ctx(), after, 2, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
}

// testRegEventsAppend: each event of a batch gets the next Seq, from 1, in
// the order given, continued by the next batch; a missing time is the
// append's, every time comes back in UTC; the events read back are the
// events appended, every field kept.
func testRegEventsAppend(t *testing.T, f Factory) {
	s := f.New(t)
	if out, err := s.AppendRegistrationEvents(ctx(), nil); err != nil || out != nil {
		t.Errorf("empty append = %v, %v", out, err)
	}
	at := time.Date(2025, 6, 1, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	full := regEvent(dps.EventAssigned, "Dev-1", "Group-A")
	full.Time, full.Hub, full.DeviceID, full.Payload = at, "hub-1.example.net", "dev-1", json.RawMessage(`{"fw":"<1&2>"}`)
	webhook := regEvent(dps.EventWebhook, "dev-2", "")
	webhook.Webhook = &dps.WebhookCall{URL: "https://alloc.example.net/x", Status: 200, Latency: 1234567 * time.Nanosecond}
	refused := regEvent(dps.EventRefused, "dev-3", "")
	refused.Code, refused.Reason, refused.Cause, refused.PayloadTruncated = dps.CodeUnauthorized, "bad token", dps.CauseAuthentication, true
	before := time.Now().Add(-time.Second)
	out, err := s.AppendRegistrationEvents(ctx(), []dps.RegistrationEvent{full, webhook, refused})
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "first batch", out, "Dev-1:1", "dev-2:2", "dev-3:3")
	if !out[0].Time.Equal(at) || out[0].Time.Location() != time.UTC {
		t.Errorf("time %v, want %v in UTC", out[0].Time, at)
	}
	for _, e := range out[1:] {
		if e.Time.Before(before) || e.Time.After(time.Now().Add(time.Second)) || e.Time.Location() != time.UTC {
			t.Errorf("%s: time %v, want the append's, in UTC", e.RegistrationID, e.Time)
		}
	}
	out2, err := s.AppendRegistrationEvents(ctx(), []dps.RegistrationEvent{regEvent(dps.EventAccepted, "dev-4", ""), regEvent(dps.EventFailed, "dev-5", "")})
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "second batch", out2, "dev-4:4", "dev-5:5")
	got := readEvents(t, s, dps.RegistrationEventFilter{})
	if want := append(out, out2...); !reflect.DeepEqual(got, want) {
		t.Errorf("read back\n%#v\nwant\n%#v", got, want)
	}
	if got[0].Payload == nil || got[1].Payload != nil {
		t.Errorf("payloads %q, %q: want the one given, and none", got[0].Payload, got[1].Payload)
	}
}

// testRegEventsRead: a read returns the events after a Seq, at most limit,
// in order; each filter (registration ID and group in any case, kind,
// since) and their combination select the matching events only.
func testRegEventsRead(t *testing.T, f Factory) {
	s := f.New(t)
	now := time.Now().UTC()
	var batch []dps.RegistrationEvent
	for i, e := range []dps.RegistrationEvent{
		regEvent(dps.EventAccepted, "Dev-A", "Group-1"),
		regEvent(dps.EventRefused, "dev-b", ""),
		regEvent(dps.EventAssigned, "dev-a", "group-1"),
		regEvent(dps.EventAccepted, "dev-c", "Group-2"),
		regEvent(dps.EventRefused, "DEV-A", ""),
		regEvent(dps.EventAssigned, "dev-c", "group-2"),
	} {
		e.Time = now.Add(time.Duration(i-6) * time.Hour)
		batch = append(batch, e)
	}
	if _, err := s.AppendRegistrationEvents(ctx(), batch); err != nil {
		t.Fatal(err)
	}
	page, err := s.RegistrationEvents(ctx(), 2, 3, dps.RegistrationEventFilter{})
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "after 2, limit 3", page, "dev-a:3", "dev-c:4", "DEV-A:5")
	if page, err := s.RegistrationEvents(ctx(), 6, 0, dps.RegistrationEventFilter{}); err != nil || len(page) != 0 {
		t.Errorf("after the last = %v, %v; want none", eventSeqs(page), err)
	}
	for _, tt := range []struct {
		name string
		f    dps.RegistrationEventFilter
		want []string
	}{
		{"registration ID", dps.RegistrationEventFilter{RegistrationID: "dev-A"}, []string{"Dev-A:1", "dev-a:3", "DEV-A:5"}},
		{"kind", dps.RegistrationEventFilter{Kind: dps.EventRefused}, []string{"dev-b:2", "DEV-A:5"}},
		{"group", dps.RegistrationEventFilter{Group: "GROUP-2"}, []string{"dev-c:4", "dev-c:6"}},
		{"since", dps.RegistrationEventFilter{Since: now.Add(-3 * time.Hour)}, []string{"dev-c:4", "DEV-A:5", "dev-c:6"}},
		{"registration ID and kind", dps.RegistrationEventFilter{RegistrationID: "dev-a", Kind: dps.EventAssigned}, []string{"dev-a:3"}},
		{"group, kind and since", dps.RegistrationEventFilter{Group: "group-1", Kind: dps.EventAccepted, Since: now.Add(-5 * time.Hour)}, nil},
		{"no match", dps.RegistrationEventFilter{RegistrationID: "dev-z"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := readEvents(t, s, tt.f)
			sameEvents(t, "filtered", got, tt.want...)
			for _, e := range got {
				if !tt.f.Match(e) {
					t.Errorf("%s:%d does not match the filter (dps.RegistrationEventFilter.Match)", e.RegistrationID, e.Seq)
				}
			}
		})
	}
	page, err = s.RegistrationEvents(ctx(), 1, 1, dps.RegistrationEventFilter{RegistrationID: "dev-a"})
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "filtered after 1, limit 1", page, "dev-a:3")
}

// testRegEventsLatest: LatestRegistrationEvents reads newest first: from
// the newest (before ≤ 0) or before a Seq, at most limit, with the same
// filters as a forward read; an empty feed has none.
func testRegEventsLatest(t *testing.T, f Factory) {
	s := f.New(t)
	if page, err := s.LatestRegistrationEvents(ctx(), 0, 1, dps.RegistrationEventFilter{}); err != nil || len(page) != 0 {
		t.Errorf("latest of an empty feed = %v, %v; want none", eventSeqs(page), err)
	}
	now := time.Now().UTC()
	var batch []dps.RegistrationEvent
	for i, e := range []dps.RegistrationEvent{
		regEvent(dps.EventAccepted, "Dev-A", "Group-1"),
		regEvent(dps.EventRefused, "dev-b", ""),
		regEvent(dps.EventAssigned, "dev-a", "group-1"),
		regEvent(dps.EventAccepted, "dev-c", "Group-2"),
		regEvent(dps.EventRefused, "DEV-A", ""),
		regEvent(dps.EventAssigned, "dev-c", "group-2"),
	} {
		e.Time = now.Add(time.Duration(i-6) * time.Hour)
		batch = append(batch, e)
	}
	if _, err := s.AppendRegistrationEvents(ctx(), batch); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		before int64
		limit  int
		f      dps.RegistrationEventFilter
		want   []string
	}{
		{"the newest", 0, 1, dps.RegistrationEventFilter{}, []string{"dev-c:6"}},
		{"all, default limit", -1, 0, dps.RegistrationEventFilter{}, []string{"dev-c:6", "DEV-A:5", "dev-c:4", "dev-a:3", "dev-b:2", "Dev-A:1"}},
		{"before 5, limit 2", 5, 2, dps.RegistrationEventFilter{}, []string{"dev-c:4", "dev-a:3"}},
		{"before the first", 1, 0, dps.RegistrationEventFilter{}, nil},
		{"registration ID", 0, 2, dps.RegistrationEventFilter{RegistrationID: "dev-A"}, []string{"DEV-A:5", "dev-a:3"}},
		{"group before 6", 6, 0, dps.RegistrationEventFilter{Group: "GROUP-2"}, []string{"dev-c:4"}},
		{"kind and since", 0, 0, dps.RegistrationEventFilter{Kind: dps.EventRefused, Since: now.Add(-3 * time.Hour)}, []string{"DEV-A:5"}},
	} {
		page, err := s.LatestRegistrationEvents(ctx(), tt.before, tt.limit, tt.f)
		if err != nil {
			t.Fatal(err)
		}
		sameEvents(t, tt.name, page, tt.want...)
	}
}

// testRegEventsRetention: DeleteRegistrationEventsBefore deletes the events
// older than a time (in batches the caller repeats), TrimRegistrationEvents
// keeps the newest positions; Seq is never reused after either.
func testRegEventsRetention(t *testing.T, f Factory) {
	s := f.New(t)
	now := time.Now().UTC()
	var batch []dps.RegistrationEvent
	for i := range 10 {
		e := regEvent(dps.EventAccepted, fmt.Sprintf("dev-%d", i+1), "")
		e.Time = now.Add(time.Duration(i-10) * time.Hour) // dev-1 10h ago … dev-10 1h ago
		batch = append(batch, e)
	}
	if _, err := s.AppendRegistrationEvents(ctx(), batch); err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteRegistrationEventsBefore(ctx(), now.Add(-7*time.Hour-time.Minute)); err != nil || n != 3 {
		t.Errorf("deleted %d, %v; want the 3 events older than 7h", n, err)
	}
	if n, err := s.DeleteRegistrationEventsBefore(ctx(), now.Add(-7*time.Hour-time.Minute)); err != nil || n != 0 {
		t.Errorf("second delete: %d, %v; want 0", n, err)
	}
	sameEvents(t, "after the age prune", readEvents(t, s, dps.RegistrationEventFilter{}),
		"dev-4:4", "dev-5:5", "dev-6:6", "dev-7:7", "dev-8:8", "dev-9:9", "dev-10:10")
	if n, err := s.TrimRegistrationEvents(ctx(), 4); err != nil || n != 3 {
		t.Errorf("trimmed %d, %v; want 3 (keep Seq 7 to 10)", n, err)
	}
	if n, err := s.TrimRegistrationEvents(ctx(), 4); err != nil || n != 0 {
		t.Errorf("second trim: %d, %v; want 0", n, err)
	}
	sameEvents(t, "after the count prune", readEvents(t, s, dps.RegistrationEventFilter{}), "dev-7:7", "dev-8:8", "dev-9:9", "dev-10:10")
	out, err := s.AppendRegistrationEvents(ctx(), []dps.RegistrationEvent{regEvent(dps.EventAccepted, "dev-11", "")})
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "appended after the prunes", out, "dev-11:11")
	if n, err := s.DeleteRegistrationEventsBefore(ctx(), now.Add(time.Hour)); err != nil || n != 5 {
		t.Errorf("delete everything: %d, %v; want 5", n, err)
	}
	if n, err := s.TrimRegistrationEvents(ctx(), 0); err != nil || n != 0 {
		t.Errorf("trim an empty feed: %d, %v", n, err)
	}
	out, err = s.AppendRegistrationEvents(ctx(), []dps.RegistrationEvent{regEvent(dps.EventAccepted, "dev-12", "")})
	if err != nil {
		t.Fatal(err)
	}
	sameEvents(t, "appended to an emptied feed", out, "dev-12:12")
}

// testRegEventsAcrossHandles: events appended concurrently through two
// handles (two nodes) are all read, through either, in Seq order without a
// gap: a reader that reached Seq n never later finds a smaller one.
func testRegEventsAcrossHandles(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	const writers, calls = 6, 8
	total := int64(0)
	for w := range writers {
		for c := range calls {
			total += int64(1 + (w+c)%3)
		}
	}
	var readers sync.WaitGroup
	seen := make([]map[int64]string, 2)
	for i, rd := range []Store{other, s} {
		seen[i] = map[int64]string{}
		readers.Go(func() {
			deadline := time.Now().Add(60 * time.Second)
			for after := int64(0); after < total; {
				if time.Now().After(deadline) {
					t.Errorf("reader %d reached only Seq %d of %d", i, after, total)
					return
				}
				page, err := rd.RegistrationEvents(ctx(), after, 7, dps.RegistrationEventFilter{})
				if err != nil {
					t.Error(err)
					return
				}
				if len(page) == 0 {
					time.Sleep(time.Millisecond)
				}
				for _, e := range page {
					if e.Seq != after+1 {
						t.Errorf("reader %d found Seq %d after %d", i, e.Seq, after)
						return
					}
					after = e.Seq
					seen[i][e.Seq] = e.RegistrationID
				}
			}
		})
	}
	var wg sync.WaitGroup
	for w := range writers {
		st := []Store{s, other}[w%2]
		wg.Go(func() {
			for c := range calls {
				var batch []dps.RegistrationEvent
				for k := range 1 + (w+c)%3 {
					e := regEvent(dps.EventAccepted, fmt.Sprintf("w%d-c%d-%d", w, c, k), "")
					e.Node = fmt.Sprintf("node-%d", w%2)
					batch = append(batch, e)
				}
				if _, err := st.AppendRegistrationEvents(ctx(), batch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	readers.Wait()
	if !reflect.DeepEqual(seen[0], seen[1]) || int64(len(seen[0])) != total {
		t.Errorf("the two handles read %d and %d events, want the same %d", len(seen[0]), len(seen[1]), total)
	}
}
