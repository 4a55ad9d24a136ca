package routing

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/sqlite"
)

const hub = "hub-1.example.net"

// endpoint records what it was given; while down it refuses.
type endpoint struct {
	mu       sync.Mutex
	got      []dps.Message
	attempts []time.Time
	down     bool
}

func (e *endpoint) Deliver(ctx context.Context, msgs []dps.Message) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.attempts = append(e.attempts, time.Now())
	if e.down {
		return errors.New("endpoint unavailable")
	}
	e.got = append(e.got, msgs...)
	return nil
}
func (e *endpoint) Close() error { return nil }

func (e *endpoint) setDown(v bool) { e.mu.Lock(); e.down = v; e.mu.Unlock() }

func (e *endpoint) received() []dps.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]dps.Message(nil), e.got...)
}

type metrics struct {
	mu                                   sync.Mutex
	delivered, failed, deadLets, dropped int
}

func (m *metrics) Delivered(_, _ string, n int)              { m.mu.Lock(); m.delivered += n; m.mu.Unlock() }
func (m *metrics) Failed(_, _ string, n int)                 { m.mu.Lock(); m.failed += n; m.mu.Unlock() }
func (m *metrics) DeadLettered(_, _, _ string, n int)        { m.mu.Lock(); m.deadLets += n; m.mu.Unlock() }
func (m *metrics) DeadLettersDropped(_, _ string, n int)     { m.mu.Lock(); m.dropped += n; m.mu.Unlock() }
func (m *metrics) Lag(_, _ string, _ int64, _ time.Duration) {}

type counts struct{ delivered, failed, deadLets, dropped int }

// snapshot is a copy of the counts, taken under the lock.
func (m *metrics) snapshot() counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return counts{m.delivered, m.failed, m.deadLets, m.dropped}
}

func openStore(t *testing.T, path string, shared bool) *sqlite.DB {
	t.Helper()
	db, err := sqlite.OpenWith(context.Background(), path, sqlite.Options{Shared: shared})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func send(t *testing.T, db *sqlite.DB, n int, devices int, props map[string]string) {
	t.Helper()
	var msgs []dps.Message
	for i := range n {
		dev := fmt.Sprint("dev-", i%devices)
		msgs = append(msgs, dps.Message{Hub: hub, DeviceID: dev, MessageID: fmt.Sprint(time.Now().UnixNano(), "-", i),
			Properties: props, System: map[string]string{"iothub-connection-device-id": dev}, Body: []byte(fmt.Sprint(i))})
	}
	if _, err := db.AppendMessages(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
}

// inOrder checks that got holds every Seq of want (at least once) and
// that each device's messages came in Seq order, a redelivery restarting
// from an earlier point allowed only as a repeat of a suffix.
func inOrder(t *testing.T, got []dps.Message, want []int64) {
	t.Helper()
	seen := map[int64]bool{}
	last := map[string]int64{}
	for _, m := range got {
		if m.Seq < last[m.DeviceID] && !seen[m.Seq] {
			t.Errorf("device %s: Seq %d after %d, not seen before: reordered", m.DeviceID, m.Seq, last[m.DeviceID])
		}
		seen[m.Seq], last[m.DeviceID] = true, m.Seq
	}
	for _, s := range want {
		if !seen[s] {
			t.Errorf("Seq %d was not delivered", s)
		}
	}
}

func seqsOf(msgs []dps.Message) []int64 {
	var out []int64
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

func run(t *testing.T, o Options) (stop func()) {
	t.Helper()
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// TestDeliverFilterBatchResume: a route delivers, in batches, what its
// source and condition select, from where it was created, in order; after
// a restart it goes on from its checkpoint without repeating.
func TestDeliverFilterBatchResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dps.db")
		db := openStore(t, path, false)
		send(t, db, 5, 1, nil) // before the route: not its own
		cond, err := Compile("level = 'critical'")
		if err != nil {
			t.Fatal(err)
		}
		ep := &endpoint{}
		m := &metrics{}
		o := Options{Store: db, Node: "node-a", BatchSize: 10, Observer: m,
			Routes: []Route{{Hub: hub, Name: "crit", Source: SourceTelemetry, Cond: cond, Query: "level = 'critical'", Endpoint: "ep", Deliver: ep, Enabled: true},
				{Hub: hub, Name: "off", Deliver: &endpoint{}, Enabled: false}}}
		stop := run(t, o)
		time.Sleep(time.Second)
		send(t, db, 30, 3, map[string]string{"level": "critical"})
		send(t, db, 10, 3, map[string]string{"level": "info"})
		life := dps.Message{Hub: hub, DeviceID: "dev-0", Properties: map[string]string{"level": "critical"},
			System: map[string]string{PropMessageSource: "deviceLifecycleEvents"}}
		if _, err := db.AppendMessages(context.Background(), []dps.Message{life}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		got := ep.received()
		if len(got) != 30 {
			t.Fatalf("delivered %d messages, want the 30 critical telemetry ones", len(got))
		}
		for i, g := range got {
			if g.Seq != int64(6+i) || g.Properties["level"] != "critical" {
				t.Fatalf("message %d: Seq %d %v, want Seq %d critical", i, g.Seq, g.Properties, 6+i)
			}
		}
		if n := len(ep.attempts); n != 3 {
			t.Errorf("%d deliveries, want 3 batches of 10", n)
		}
		st, err := db.Routes(context.Background(), hub)
		if err != nil || len(st) != 1 || st[0].Checkpoint != 46 {
			t.Errorf("routes = %+v, %v; want crit at checkpoint 46 (the filtered ones passed too)", st, err)
		}
		stop()
		// Released on stop: a restart goes on at once from the checkpoint.
		send(t, db, 4, 2, map[string]string{"level": "critical"})
		ep2 := &endpoint{}
		o.Routes[0].Deliver = ep2
		stop = run(t, o)
		time.Sleep(time.Second)
		stop()
		if got := seqsOf(ep2.received()); fmt.Sprint(got) != "[47 48 49 50]" {
			t.Errorf("after the restart: %v, want [47 48 49 50]", got)
		}
		if m.delivered != 34 {
			t.Errorf("delivered counter %d, want 34", m.delivered)
		}
	})
}

// TestBackoffThenDeadLetter: a failing endpoint is retried after 1 s, 2 s,
// 4 s, … up to a minute; past the retry budget the batch goes to dead
// letters with the reason and the route goes on; when the endpoint is
// back nothing else is lost.
func TestBackoffThenDeadLetter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t, filepath.Join(t.TempDir(), "dps.db"), false)
		ep := &endpoint{down: true}
		m := &metrics{}
		stop := run(t, Options{Store: db, Node: "node-a", BatchSize: 5, RetryBudget: 5 * time.Minute, Observer: m,
			Jitter: func() float64 { return 0 }, Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}}})
		defer stop()
		time.Sleep(time.Second)
		send(t, db, 8, 2, nil)
		time.Sleep(4 * time.Minute)
		ep.mu.Lock()
		var gaps []time.Duration
		for i := 1; i < len(ep.attempts) && i < 9; i++ {
			gaps = append(gaps, ep.attempts[i].Sub(ep.attempts[i-1]).Round(time.Second))
		}
		ep.mu.Unlock()
		if fmt.Sprint(gaps) != "[1s 2s 4s 8s 16s 32s 1m0s 1m0s]" {
			t.Errorf("retry gaps %v, want doubling from 1 s up to 1 min", gaps)
		}
		if dl, _ := db.DeadLetters(context.Background(), hub, "r", 0, 0); len(dl) != 0 {
			t.Fatalf("dead letters within the retry budget: %d", len(dl))
		}
		time.Sleep(2 * time.Minute) // past the budget: the first batch (5) goes
		dl, err := db.DeadLetters(context.Background(), hub, "r", 0, 0)
		if err != nil || len(dl) != 5 {
			t.Fatalf("dead letters = %d, %v; want the first batch of 5", len(dl), err)
		}
		if r := dl[0].Reason; dl[0].Message.Seq != 1 || r == "" || !strings.Contains(r, "endpoint unavailable") {
			t.Errorf("dead letter = %+v", dl[0])
		}
		st, _ := db.Routes(context.Background(), hub)
		if st[0].LastError != "endpoint unavailable" {
			t.Errorf("last error = %q", st[0].LastError)
		}
		ep.setDown(false)
		time.Sleep(2 * time.Minute)
		if got := seqsOf(ep.received()); fmt.Sprint(got) != "[6 7 8]" {
			t.Errorf("after the endpoint came back: %v, want [6 7 8]", got)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.deadLets != 5 || m.delivered != 3 || m.failed == 0 {
			t.Errorf("metrics %+v", m)
		}
	})
}

// deadStore is a node that dies: once killed, its store calls fail (it
// cannot renew nor release its lease).
type deadStore struct {
	*sqlite.DB
	mu   sync.Mutex
	dead bool
}

func (d *deadStore) kill() { d.mu.Lock(); d.dead = true; d.mu.Unlock() }
func (d *deadStore) check() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return errors.New("node is dead")
	}
	return nil
}
func (d *deadStore) ClaimRoute(ctx context.Context, hub, route, node string, now, until time.Time) (dps.RouteState, bool, error) {
	if err := d.check(); err != nil {
		return dps.RouteState{}, false, err
	}
	return d.DB.ClaimRoute(ctx, hub, route, node, now, until)
}
func (d *deadStore) AdvanceRoute(ctx context.Context, hub, route, node string, cp int64, e string, now time.Time) error {
	if err := d.check(); err != nil {
		return err
	}
	return d.DB.AdvanceRoute(ctx, hub, route, node, cp, e, now)
}
func (d *deadStore) ReleaseRoute(ctx context.Context, hub, route, node string) error {
	if err := d.check(); err != nil {
		return err
	}
	return d.DB.ReleaseRoute(ctx, hub, route, node)
}
func (d *deadStore) Messages(ctx context.Context, hub string, after int64, limit int) ([]dps.Message, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return d.DB.Messages(ctx, hub, after, limit)
}

// TestTakeover: two nodes share a route; one delivers it; when it dies
// the other takes over within the lease and every message arrives, in
// order per device.
func TestTakeover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dps.db")
		a := &deadStore{DB: openStore(t, path, false)}
		b := openStore(t, path, true)
		ep := &endpoint{}
		route := func() []Route { return []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}} }
		stopA := run(t, Options{Store: a, Node: "node-a", Routes: route()})
		time.Sleep(time.Second)
		stopB := run(t, Options{Store: b, Node: "node-b", Routes: route()})
		defer stopB()
		var want []int64
		for range 10 {
			send(t, b, 7, 3, nil)
			time.Sleep(500 * time.Millisecond)
		}
		st, _ := b.Routes(context.Background(), hub)
		if st[0].Owner != "node-a" {
			t.Errorf("owner %q, want node-a (it claimed first)", st[0].Owner)
		}
		a.kill()
		for range 10 {
			send(t, b, 7, 3, nil)
			time.Sleep(500 * time.Millisecond)
		}
		time.Sleep(DefaultLease + 5*time.Second)
		for i := int64(1); i <= 140; i++ {
			want = append(want, i)
		}
		inOrder(t, ep.received(), want)
		st, _ = b.Routes(context.Background(), hub)
		if st[0].Owner != "node-b" || st[0].Checkpoint != 140 {
			t.Errorf("after the takeover: %+v; want node-b at checkpoint 140", st[0])
		}
		stopA()
	})
}

// refusing is an endpoint that refuses for good any batch holding the
// message of sequence number bad (as a webhook answering 4xx).
type refusing struct {
	endpoint
	bad int64
}

type refusal struct{}

func (refusal) Error() string   { return "refused: 400" }
func (refusal) Permanent() bool { return true }

func (e *refusing) Deliver(ctx context.Context, msgs []dps.Message) error {
	for _, m := range msgs {
		if m.Seq == e.bad {
			return refusal{}
		}
	}
	return e.endpoint.Deliver(ctx, msgs)
}

// TestRefusedMessageDeadLetteredAtOnce: a batch the endpoint refuses for
// good is delivered one message at a time; only the refused message is
// dead-lettered, at once (not after the retry budget), and the others are
// delivered in order.
func TestRefusedMessageDeadLetteredAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t, filepath.Join(t.TempDir(), "dps.db"), false)
		ep := &refusing{bad: 3}
		m := &metrics{}
		stop := run(t, Options{Store: db, Node: "node-a", BatchSize: 5, RetryBudget: time.Hour, Observer: m,
			Jitter: func() float64 { return 0 }, Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}}})
		defer stop()
		time.Sleep(time.Second)
		send(t, db, 5, 1, nil)
		time.Sleep(10 * time.Second) // far less than the retry budget
		if got := seqsOf(ep.received()); fmt.Sprint(got) != "[1 2 4 5]" {
			t.Errorf("delivered %v, want [1 2 4 5]", got)
		}
		dl, err := db.DeadLetters(context.Background(), hub, "r", 0, 0)
		if err != nil || len(dl) != 1 || dl[0].Message.Seq != 3 || !strings.Contains(dl[0].Reason, "refused") {
			t.Fatalf("dead letters = %+v, %v; want message 3, refused", dl, err)
		}
		if st, _ := db.Routes(context.Background(), hub); st[0].Checkpoint != 5 {
			t.Errorf("checkpoint %d, want 5", st[0].Checkpoint)
		}
	})
}

// poison refuses for good every message whose body starts with "poison".
type poison struct{ endpoint }

func (e *poison) Deliver(ctx context.Context, msgs []dps.Message) error {
	for _, m := range msgs {
		if strings.HasPrefix(string(m.Body), "poison") {
			return refusal{}
		}
	}
	return e.endpoint.Deliver(ctx, msgs)
}

// TestDeadLettersCapped: a flood of messages the endpoint refuses keeps
// only the route's newest MaxDeadLetters dead letters; the good messages
// among them are delivered in order.
func TestDeadLettersCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openStore(t, filepath.Join(t.TempDir(), "dps.db"), false)
		ep := &poison{}
		stop := run(t, Options{Store: db, Node: "node-a", BatchSize: 10, MaxDeadLetters: 7,
			Routes: []Route{{Hub: hub, Name: "r", Endpoint: "ep", Deliver: ep, Enabled: true}}})
		defer stop()
		time.Sleep(time.Second)
		var msgs []dps.Message
		for i := range 60 {
			body := "poison"
			if i%6 == 0 {
				body = "good"
			}
			msgs = append(msgs, dps.Message{Hub: hub, DeviceID: fmt.Sprint("dev-", i%3), Body: []byte(fmt.Sprint(body, i))})
		}
		if _, err := db.AppendMessages(context.Background(), msgs); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		if st, _ := db.Routes(context.Background(), hub); st[0].Checkpoint != 60 {
			t.Fatalf("checkpoint %d, want 60", st[0].Checkpoint)
		}
		dl, err := db.DeadLetters(context.Background(), hub, "r", 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(seqsOf(func() (out []dps.Message) {
			for _, d := range dl {
				out = append(out, d.Message)
			}
			return out
		}())); got != "[53 54 56 57 58 59 60]" {
			t.Errorf("dead letters %s, want the newest 7 of the 50 poison messages", got)
		}
		if got := fmt.Sprint(seqsOf(ep.received())); got != "[1 7 13 19 25 31 37 43 49 55]" {
			t.Errorf("delivered %s", got)
		}
	})
}
