package regevents_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/regevents"
	"github.com/opendps/dps/internal/store/sqlite"
)

func openDB(t *testing.T) (*sqlite.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dps.db")
	db, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

// observer records what a Log tells its Observer.
type observer struct {
	mu      sync.Mutex
	events  []dps.RegistrationEvent
	dropped int
}

func (o *observer) Event(e dps.RegistrationEvent) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
}
func (o *observer) EventsDropped(n int) { o.mu.Lock(); o.dropped += n; o.mu.Unlock() }
func (o *observer) counts() (int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.events), o.dropped
}

// waitEvents reads the feed until it holds n events.
func waitEvents(t *testing.T, f regevents.Feed, q regevents.Query, n int) []dps.RegistrationEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := f.Read(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("the feed holds %d events, want %d: %v", len(got), n, got)
			}
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRecordAndRead: recorded events reach the store in the order
// recorded, with this node's name and a time; a payload over the limit is
// left out and marked; the Observer sees each.
func TestRecordAndRead(t *testing.T) {
	db, _ := openDB(t)
	obs := &observer{}
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	l := regevents.New(regevents.Options{Store: db, Node: "node-a", PayloadLimit: 16, Observer: obs, Now: func() time.Time { return at }})
	l.Start()
	defer l.Close()
	l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-1", Payload: json.RawMessage(`{"a":1}`)})
	l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-2", Payload: json.RawMessage(`{"a":"0123456789"}`)})
	l.Record(dps.RegistrationEvent{Kind: dps.EventRefused, RegistrationID: "dev-3", Node: "elsewhere", Time: at.Add(time.Second)})
	got := waitEvents(t, l, regevents.Query{}, 3)
	for i, want := range []struct {
		id, node  string
		payload   string
		truncated bool
		at        time.Time
	}{
		{"dev-1", "node-a", `{"a":1}`, false, at},
		{"dev-2", "node-a", "", true, at},
		{"dev-3", "elsewhere", "", false, at.Add(time.Second)},
	} {
		e := got[i]
		if e.Seq != int64(i+1) || e.RegistrationID != want.id || e.Node != want.node || string(e.Payload) != want.payload || e.PayloadTruncated != want.truncated || !e.Time.Equal(want.at) {
			t.Errorf("event %d = %+v, want %+v", i, e, want)
		}
	}
	if n, dropped := obs.counts(); n != 3 || dropped != 0 {
		t.Errorf("observer saw %d events, %d dropped; want 3, 0", n, dropped)
	}
	if page, err := l.Read(context.Background(), regevents.Query{After: 1, Limit: 1, Filter: dps.RegistrationEventFilter{Kind: dps.EventRefused}}); err != nil || len(page) != 1 || page[0].RegistrationID != "dev-3" {
		t.Errorf("filtered read = %v, %v", page, err)
	}
	if page, err := l.Latest(context.Background(), regevents.Query{Before: 3, Limit: 1}); err != nil || len(page) != 1 || page[0].RegistrationID != "dev-2" {
		t.Errorf("latest before 3 = %v, %v; want dev-2", page, err)
	}
}

// TestFullQueueDrops: Record never blocks; past the queue's size events
// are dropped and counted, and the ones queued are written at Start.
func TestFullQueueDrops(t *testing.T) {
	db, _ := openDB(t)
	obs := &observer{}
	l := regevents.New(regevents.Options{Store: db, QueueSize: 3, Observer: obs})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5 {
			l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: fmt.Sprintf("dev-%d", i)})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Record blocked on a full queue")
	}
	if l.Dropped() != 2 {
		t.Errorf("Dropped() = %d, want 2", l.Dropped())
	}
	if n, dropped := obs.counts(); n != 5 || dropped != 2 {
		t.Errorf("observer saw %d events, %d dropped; want 5, 2", n, dropped)
	}
	l.Start()
	defer l.Close()
	got := waitEvents(t, l, regevents.Query{}, 3)
	if got[0].RegistrationID != "dev-0" || got[2].RegistrationID != "dev-2" {
		t.Errorf("written %v, want the first three", got)
	}
}

// TestCloseWritesWhatIsQueued: events recorded just before Close are in
// the store once it returns.
func TestCloseWritesWhatIsQueued(t *testing.T) {
	db, _ := openDB(t)
	l := regevents.New(regevents.Options{Store: db})
	l.Start()
	for i := range 50 {
		l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: fmt.Sprintf("dev-%d", i)})
	}
	l.Close()
	got, err := db.RegistrationEvents(context.Background(), 0, 0, dps.RegistrationEventFilter{})
	if err != nil || len(got) != 50 || l.Dropped() != 0 {
		t.Errorf("after Close the store holds %d events (%v), %d dropped; want 50, none", len(got), err, l.Dropped())
	}
}

// TestFollow: a Follow with nothing to read waits; it returns as soon as
// this node records a matching event, an empty result once the wait is
// over, ErrClosed once follows are ended. Another handle's events (another
// node) are found by polling.
func TestFollow(t *testing.T) {
	db, path := openDB(t)
	l := regevents.New(regevents.Options{Store: db, PollInterval: time.Hour}) // this node's events wake a Follow
	l.Start()
	defer l.Close()
	ctx := context.Background()
	q := regevents.Query{Filter: dps.RegistrationEventFilter{RegistrationID: "DEV-F"}}

	start := time.Now()
	if got, err := l.Follow(ctx, q, 100*time.Millisecond); err != nil || len(got) != 0 || time.Since(start) < 100*time.Millisecond {
		t.Errorf("Follow on an empty feed = %v, %v after %s; want nothing after the wait", got, err, time.Since(start))
	}
	type result struct {
		events []dps.RegistrationEvent
		err    error
	}
	follow := func(q regevents.Query) chan result {
		ch := make(chan result, 1)
		go func() {
			evs, err := l.Follow(ctx, q, time.Minute)
			ch <- result{evs, err}
		}()
		return ch
	}
	ch := follow(q)
	time.Sleep(20 * time.Millisecond)
	l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "other"}) // not matched: keeps waiting
	l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-f"})
	select {
	case r := <-ch:
		if r.err != nil || len(r.events) != 1 || r.events[0].RegistrationID != "dev-f" || r.events[0].Seq != 2 {
			t.Errorf("Follow = %+v, %v; want dev-f at Seq 2", r.events, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not return the event recorded")
	}

	// Another node's event, appended through its own handle.
	other, err := sqlite.OpenWith(ctx, path, sqlite.Options{Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	polling := regevents.New(regevents.Options{Store: db, PollInterval: 50 * time.Millisecond})
	polled := make(chan result, 1)
	go func() {
		evs, err := polling.Follow(ctx, regevents.Query{After: 2}, time.Minute)
		polled <- result{evs, err}
	}()
	if _, err := other.AppendRegistrationEvents(ctx, []dps.RegistrationEvent{{Kind: dps.EventAssigned, RegistrationID: "dev-f", Node: "node-b"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-polled:
		if r.err != nil || len(r.events) != 1 || r.events[0].Node != "node-b" {
			t.Errorf("Follow = %+v, %v; want node-b's event", r.events, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Follow did not find another handle's event")
	}

	ch = follow(regevents.Query{After: 3})
	time.Sleep(20 * time.Millisecond)
	l.EndFollows()
	select {
	case r := <-ch:
		if !errors.Is(r.err, regevents.ErrClosed) {
			t.Errorf("Follow after EndFollows = %v, %v; want ErrClosed", r.events, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("EndFollows did not end a waiting Follow")
	}
	if _, err := l.Follow(ctx, regevents.Query{}, time.Minute); !errors.Is(err, regevents.ErrClosed) {
		t.Errorf("a Follow after EndFollows: %v, want ErrClosed", err)
	}
}

// TestRetention: at start and on every prune the events older than the
// retention go, then those beyond MaxEvents.
func TestRetention(t *testing.T) {
	db, _ := openDB(t)
	now := time.Now().UTC()
	var old []dps.RegistrationEvent
	for i := range 6 {
		old = append(old, dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: fmt.Sprintf("dev-%d", i), Time: now.Add(time.Duration(i-6) * time.Hour)})
	}
	if _, err := db.AppendRegistrationEvents(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	l := regevents.New(regevents.Options{Store: db, Retention: 3*time.Hour + time.Minute, MaxEvents: 2, PruneInterval: 20 * time.Millisecond})
	l.Start()
	defer l.Close()
	waitIDs := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, err := l.Read(context.Background(), regevents.Query{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, e := range got {
				ids = append(ids, e.RegistrationID)
			}
			if strings.Join(ids, ",") == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("kept %v, want %s", ids, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitIDs("dev-4,dev-5") // the newest 2 of the 3 within 3h
	for i := range 3 {
		l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: fmt.Sprintf("new-%d", i)})
	}
	waitIDs("new-1,new-2")
}

// stuckPrune is a store whose age prune blocks until its context ends.
type stuckPrune struct {
	*sqlite.DB
	pruning chan struct{}
}

func (s stuckPrune) DeleteRegistrationEventsBefore(ctx context.Context, t time.Time) (int64, error) {
	select {
	case s.pruning <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestPruneDoesNotHoldAppends: while a prune is under way (a long backlog
// to delete), recorded events are still appended; Close ends the prune.
func TestPruneDoesNotHoldAppends(t *testing.T) {
	db, _ := openDB(t)
	st := stuckPrune{DB: db, pruning: make(chan struct{}, 1)}
	l := regevents.New(regevents.Options{Store: st, PruneInterval: time.Hour})
	l.Start()
	select {
	case <-st.pruning:
	case <-time.After(5 * time.Second):
		t.Fatal("no prune at start")
	}
	l.Record(dps.RegistrationEvent{Kind: dps.EventAccepted, RegistrationID: "dev-1"})
	waitEvents(t, l, regevents.Query{}, 1)
	closed := make(chan struct{})
	go func() { l.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the prune")
	}
}
