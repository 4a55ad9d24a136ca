package routing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/sqlite"
)

// start is run that also returns the engine (for Status).
func start(t *testing.T, o Options) (*Engine, func()) {
	t.Helper()
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	return e, func() { cancel(); <-done }
}

func deadSeqs(t *testing.T, db Store, route string) []int64 {
	t.Helper()
	dl, err := db.DeadLetters(context.Background(), hub, route, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, d := range dl {
		out = append(out, d.Message.Seq)
	}
	return out
}

func routeState(t *testing.T, db Store) dps.RouteState {
	t.Helper()
	st, err := db.Routes(context.Background(), hub)
	if err != nil || len(st) != 1 {
		t.Fatalf("routes %+v, %v", st, err)
	}
	return st[0]
}

// refuseAll refuses for good every batch while on, as a webhook answering
// 400 to everything or a Kafka topic this client may not write to, were
// that classified per message.
type refuseAll struct {
	endpoint
	on bool
}

func (e *refuseAll) Deliver(ctx context.Context, msgs []dps.Message) error {
	e.mu.Lock()
	on := e.on
	if on {
		e.attempts = append(e.attempts, time.Now())
	}
	e.mu.Unlock()
	if on {
		return refusal{}
	}
	return e.endpoint.Deliver(ctx, msgs)
}

func (e *refuseAll) set(on bool) { e.mu.Lock(); e.on = on; e.mu.Unlock() }

// TestEveryMessageRefusedIsAnOutage: an endpoint that refuses each message
// of a batch of several on its own is failing, not the messages: the batch
// is retried with backoff (the route's status and metrics show the
// failure), nothing is dead-lettered, and once the endpoint takes messages
// again every one is delivered. A batch of one refused is dead-lettered.
func TestEveryMessageRefusedIsAnOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t, filepath.Join(t.TempDir(), "dps.db"), false)
		ep := &refuseAll{on: true}
		m := &metrics{}
		e, stop := start(t, Options{Store: db, Node: "node-a", BatchSize: 5, Observer: m, Jitter: func() float64 { return 0 },
			Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}}})
		defer stop()
		time.Sleep(time.Second)
		send(t, db, 5, 2, nil)
		time.Sleep(10 * time.Second)
		if dl := deadSeqs(t, db, "r"); len(dl) != 0 {
			t.Errorf("dead letters %v: an endpoint refusing everything dead-lettered the backlog", dl)
		}
		if st := routeState(t, db); st.Checkpoint != 0 || !strings.Contains(st.LastError, "refused each of the batch's 5 messages") ||
			!strings.Contains(st.LastError, "refused: 400") {
			t.Errorf("route %+v; want checkpoint 0 and the endpoint's failure as the last error", st)
		}
		status, err := e.Status(context.Background(), hub)
		if err != nil || status[0].State != "retrying" || status[0].Attempt < 3 {
			t.Errorf("status %+v, %v; want retrying, attempt 3 or more", status, err)
		}
		if c := m.snapshot(); c.deadLets != 0 || c.failed < 15 || c.delivered != 0 {
			t.Errorf("metrics %+v; want failed batches, no dead letters", c)
		}
		// 1 s, 2 s, 4 s between the rounds of one-by-one attempts.
		ep.mu.Lock()
		var rounds []time.Time
		for i, at := range ep.attempts {
			if i == 0 || at.Sub(ep.attempts[i-1]) > 100*time.Millisecond {
				rounds = append(rounds, at)
			}
		}
		ep.mu.Unlock()
		var gaps []time.Duration
		for i := 1; i < len(rounds) && i < 4; i++ {
			gaps = append(gaps, rounds[i].Sub(rounds[i-1]).Round(time.Second))
		}
		if fmt.Sprint(gaps) != "[1s 2s 4s]" {
			t.Errorf("gaps between attempts %v, want the backoff [1s 2s 4s]", gaps)
		}
		ep.set(false)
		time.Sleep(10 * time.Second)
		if got := fmt.Sprint(seqsOf(ep.received())); got != "[1 2 3 4 5]" {
			t.Errorf("after the endpoint came back: delivered %s", got)
		}
		if st := routeState(t, db); st.Checkpoint != 5 {
			t.Errorf("checkpoint %d, want 5", st.Checkpoint)
		}
		// A batch of one refused is dead-lettered at once.
		ep.set(true)
		send(t, db, 1, 1, nil)
		time.Sleep(3 * time.Second)
		if dl := deadSeqs(t, db, "r"); fmt.Sprint(dl) != "[6]" {
			t.Errorf("dead letters %v, want [6]: a lone refused message", dl)
		}
		if st := routeState(t, db); st.Checkpoint != 6 {
			t.Errorf("checkpoint %d, want 6", st.Checkpoint)
		}
	})
}

// mixed refuses for good any batch holding a bad message and, while down,
// fails any batch holding flaky for a while (a transient failure).
type mixed struct {
	endpoint
	bad   map[int64]bool
	flaky int64
}

func (e *mixed) Deliver(ctx context.Context, msgs []dps.Message) error {
	for _, m := range msgs {
		if e.bad[m.Seq] {
			return refusal{}
		}
	}
	e.mu.Lock()
	down := e.down
	e.mu.Unlock()
	for _, m := range msgs {
		if down && m.Seq == e.flaky {
			return errors.New("endpoint unavailable")
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, msgs...)
	return nil
}

// TestIsolateStopsOnATransientFailure: the one-by-one delivery of a
// refused batch that meets a transient failure keeps that failure as the
// route's last error and retries from there; messages refused before the
// endpoint took any of the batch are not dead-lettered until it takes
// one (the failure may be the endpoint's).
func TestIsolateStopsOnATransientFailure(t *testing.T) {
	for _, tc := range []struct {
		name              string
		bad               []int64
		flaky             int64
		deadWhileDown     string
		deliveredWhenDown string
		dead, delivered   string
	}{
		{"after-a-delivery", []int64{2}, 4, "[2]", "[1 3]", "[2]", "[1 3 4 5]"},
		{"refused-first-held", []int64{1, 2}, 3, "[]", "[]", "[1 2]", "[3 4 5]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				db := openStore(t, filepath.Join(t.TempDir(), "dps.db"), false)
				ep := &mixed{bad: map[int64]bool{}, flaky: tc.flaky}
				ep.down = true
				for _, s := range tc.bad {
					ep.bad[s] = true
				}
				e, stop := start(t, Options{Store: db, Node: "node-a", BatchSize: 5, Jitter: func() float64 { return 0 },
					Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}}})
				defer stop()
				time.Sleep(time.Second)
				send(t, db, 5, 1, nil)
				time.Sleep(5 * time.Second)
				if got := fmt.Sprint(deadSeqs(t, db, "r")); got != tc.deadWhileDown {
					t.Errorf("dead letters while down %s, want %s", got, tc.deadWhileDown)
				}
				if got := fmt.Sprint(seqsOf(ep.received())); got != tc.deliveredWhenDown {
					t.Errorf("delivered while down %s, want %s", got, tc.deliveredWhenDown)
				}
				if st := routeState(t, db); st.LastError != "endpoint unavailable" {
					t.Errorf("last error %q, want the transient failure's", st.LastError)
				}
				if st, _ := e.Status(context.Background(), hub); st[0].State != "retrying" || st[0].LastError != "endpoint unavailable" {
					t.Errorf("status %+v", st[0])
				}
				ep.setDown(false)
				time.Sleep(20 * time.Second)
				if got := fmt.Sprint(deadSeqs(t, db, "r")); got != tc.dead {
					t.Errorf("dead letters %s, want %s", got, tc.dead)
				}
				if got := fmt.Sprint(seqsOf(ep.received())); got != tc.delivered {
					t.Errorf("delivered %s, want %s", got, tc.delivered)
				}
				if st := routeState(t, db); st.Checkpoint != 5 {
					t.Errorf("route %+v, want checkpoint 5", st)
				}
			})
		})
	}
}

// countingStore counts the dead letters written and the trim calls.
type countingStore struct {
	*sqlite.DB
	mu      sync.Mutex
	written int
	trims   []int64 // what each TrimDeadLetters deleted
}

func (c *countingStore) DeadLetterMessages(ctx context.Context, hub, route, node string, msgs []dps.Message, reason string, now time.Time) error {
	err := c.DB.DeadLetterMessages(ctx, hub, route, node, msgs, reason, now)
	if err == nil {
		c.mu.Lock()
		c.written += len(msgs)
		c.mu.Unlock()
	}
	return err
}

func (c *countingStore) TrimDeadLetters(ctx context.Context, hub, route string, keep int) (int64, error) {
	n, err := c.DB.TrimDeadLetters(ctx, hub, route, keep)
	c.mu.Lock()
	c.trims = append(c.trims, n)
	c.mu.Unlock()
	return n, err
}

func (c *countingStore) counts() (written int, trims []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written, append([]int64(nil), c.trims...)
}

// TestDeadLettersTrimmedEveryTenth: a route trims its dead letters after
// every tenth of its cap of new ones, not after each, so it may hold up to
// a tenth more for a while; the periodic pass trims the rest. What the
// trims delete is counted.
func TestDeadLettersTrimmedEveryTenth(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &countingStore{DB: openStore(t, filepath.Join(t.TempDir(), "dps.db"), false)}
		ep := &poison{}
		m := &metrics{}
		stop := run(t, Options{Store: db, Node: "node-a", BatchSize: 10, MaxDeadLetters: 50, DeadLetterRetention: 10 * time.Minute, Observer: m,
			Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}}})
		defer stop()
		time.Sleep(time.Second)
		var msgs []dps.Message
		for i := range 100 {
			body := "poison"
			if i%5 == 0 || i == 99 {
				body = "good"
			}
			msgs = append(msgs, dps.Message{Hub: hub, DeviceID: fmt.Sprint("dev-", i%3), Body: []byte(fmt.Sprint(body, i))})
		}
		if _, err := db.AppendMessages(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second) // less than the periodic pass (a minute)
		const poisoned = 79
		written, trims := db.counts()
		if written != poisoned {
			t.Fatalf("%d dead letters written, want %d", written, poisoned)
		}
		// One pass at the start, then one trim per 5 new dead letters.
		if len(trims) > 1+poisoned/5 {
			t.Errorf("%d trim calls for %d dead letters (%v), want at most %d", len(trims), poisoned, trims, 1+poisoned/5)
		}
		if n := len(deadSeqs(t, db, "r")); n < 50 || n >= 55 {
			t.Errorf("%d dead letters, want 50 to 54 before the periodic pass", n)
		}
		time.Sleep(time.Minute)
		if dl := deadSeqs(t, db, "r"); len(dl) != 50 || dl[49] != 99 {
			t.Errorf("after the periodic pass: %d dead letters (%v), want the newest 50", len(dl), dl)
		}
		if c := m.snapshot(); c.dropped != poisoned-50 || c.deadLets != poisoned {
			t.Errorf("metrics %+v, want %d dropped of %d dead-lettered", c, poisoned-50, poisoned)
		}
	})
}

// TestTrimStopsOnAPartialBatch: a trim calls the store again only after
// it deleted a full batch, counts what it deleted and logs a warning.
func TestTrimStopsOnAPartialBatch(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.OpenWith(ctx, filepath.Join(t.TempDir(), "dps.db"), sqlite.Options{PruneBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db := &countingStore{DB: s}
	var logs bytes.Buffer
	m := &metrics{}
	e, err := New(Options{Store: db, Node: "node-a", MaxDeadLetters: 2, PruneBatch: 3, Observer: m, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: &endpoint{}, Enabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, ok, err := db.ClaimRoute(ctx, hub, "r", "node-a", now, now.Add(time.Minute)); err != nil || !ok {
		t.Fatalf("claim: %v, %v", ok, err)
	}
	var msgs []dps.Message
	for i := range 10 {
		msgs = append(msgs, dps.Message{Hub: hub, DeviceID: "dev", Body: []byte(fmt.Sprint(i))})
	}
	if msgs, err = db.AppendMessages(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if err := db.DeadLetterMessages(ctx, hub, "r", "node-a", msgs, "poison", now); err != nil {
		t.Fatal(err)
	}
	e.routes[0].trimDeadLetters(ctx)
	if _, trims := db.counts(); fmt.Sprint(trims) != "[3 3 2]" {
		t.Errorf("trim calls deleted %v, want [3 3 2] (no call after the partial batch)", trims)
	}
	if dl := deadSeqs(t, db, "r"); fmt.Sprint(dl) != "[9 10]" {
		t.Errorf("dead letters %v, want [9 10]", dl)
	}
	if c := m.snapshot(); c.dropped != 8 {
		t.Errorf("dropped %d, want 8", c.dropped)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "dead letters dropped past the route's cap") || !strings.Contains(l, "dropped=8") {
		t.Errorf("no warning for the dropped dead letters:\n%s", l)
	}
}

// TestOverflowWritesOnlyTheNewest: a route more than MaxLag behind gives
// up on its oldest messages, but writes only those of the last
// MaxDeadLetters positions as dead letters and counts the others.
func TestOverflowWritesOnlyTheNewest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &countingStore{DB: openStore(t, filepath.Join(t.TempDir(), "dps.db"), false)}
		ep := &endpoint{}
		m := &metrics{}
		stop := run(t, Options{Store: db, Node: "node-a", BatchSize: 10, MaxLag: 20, MaxDeadLetters: 5, Observer: m,
			Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}}})
		defer stop()
		time.Sleep(time.Second)
		send(t, db.DB, 40, 2, nil)
		time.Sleep(5 * time.Second)
		if dl := deadSeqs(t, db, "r"); fmt.Sprint(dl) != "[16 17 18 19 20]" {
			t.Errorf("dead letters %v, want the newest 5 of the 20 given up on", dl)
		}
		if written, _ := db.counts(); written != 5 {
			t.Errorf("%d dead letters written, want 5 (no more than the cap)", written)
		}
		if got := seqsOf(ep.received()); len(got) != 20 || got[0] != 21 || got[19] != 40 {
			t.Errorf("delivered %v, want 21 to 40", got)
		}
		if c := m.snapshot(); c.deadLets != 20 || c.dropped != 15 || c.delivered != 20 {
			t.Errorf("metrics %+v, want 20 dead-lettered (maxLag) of which 15 dropped, 20 delivered", c)
		}
	})
}
