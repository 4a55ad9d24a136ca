package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
)

// These tests run the engine's clock (time.Now, tickers) in a synctest
// bubble where time matters, on an in-memory store.

// memStore is an in-memory Store with the stores' lease rule: another
// owner's unexpired lease wins; a zero until gives the lease up.
type memStore struct {
	mu     sync.Mutex
	ops    map[string]dps.Operation
	leases map[string]lease
	claims []claimCall
	// unavailable makes Operation fail as unavailable.
	unavailable bool
	// prune answers DeleteOperationsBefore, by call (0-based).
	prune  func(n int) int64
	prunes []pruneCall
	// reads counts Operation calls, by ID.
	reads map[string]int
	// hidden leaves every operation out of the listings (PostgreSQL omits
	// leased ones and lists at most 10,000).
	hidden bool
}

type lease struct {
	owner string
	until time.Time
}

type claimCall struct {
	at, until time.Time
	id, owner string
	owned     bool
}

type pruneCall struct{ at, before time.Time }

func newMemStore() *memStore {
	return &memStore{ops: map[string]dps.Operation{}, leases: map[string]lease{}, reads: map[string]int{}}
}

func (m *memStore) put(op dps.Operation) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops[op.ID] = op
}

func (m *memStore) Operation(_ context.Context, id string) (dps.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads[id]++
	if m.unavailable {
		return dps.Operation{}, &dps.Error{Kind: dps.KindUnavailable, Message: "store unavailable"}
	}
	op, ok := m.ops[id]
	if !ok {
		return op, &dps.Error{Kind: dps.KindNotFound, Message: "no operation"}
	}
	return op, nil
}

func (m *memStore) PendingOperationHeaders(context.Context) ([]dps.Operation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []dps.Operation
	for _, op := range m.ops {
		if !op.Status.Final() && !m.hidden {
			out = append(out, dps.Operation{ID: op.ID, RegistrationID: op.RegistrationID, EnrollmentGroupID: op.EnrollmentGroupID, Status: op.Status, Created: op.Created})
		}
	}
	return out, nil
}

func (m *memStore) ClaimOperation(_ context.Context, id, owner string, until time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	l := m.leases[id]
	op, ok := m.ops[id]
	owned := ok && !op.Status.Final() && (l.owner == "" || l.owner == owner || !now.Before(l.until))
	if owned {
		m.leases[id] = lease{owner, until}
		if until.IsZero() {
			delete(m.leases, id)
		}
	}
	m.claims = append(m.claims, claimCall{at: now, until: until, id: id, owner: owner, owned: owned})
	return owned, nil
}

func (m *memStore) claimLog() []claimCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]claimCall(nil), m.claims...)
}

func (m *memStore) DeleteOperationsBefore(_ context.Context, t time.Time) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.prunes)
	m.prunes = append(m.prunes, pruneCall{at: time.Now(), before: t})
	if m.prune == nil {
		return 0, nil
	}
	return m.prune(n), nil
}

func (m *memStore) pruneLog() []pruneCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]pruneCall(nil), m.prunes...)
}

// fakeWork completes operations with complete (nil: assigned at once) and
// puts them in lane (nil: the default lane).
type fakeWork struct {
	st       *memStore
	eng      *Engine
	lane     func(dps.Operation) (string, error)
	complete func(ctx context.Context, op dps.Operation) error

	mu    sync.Mutex
	calls []time.Time // Complete calls
}

func (w *fakeWork) Lane(_ context.Context, op dps.Operation) (string, error) {
	if w.lane == nil {
		return "", nil
	}
	return w.lane(op)
}

func (w *fakeWork) Complete(ctx context.Context, op dps.Operation) error {
	w.mu.Lock()
	w.calls = append(w.calls, time.Now())
	w.mu.Unlock()
	if w.complete != nil {
		if err := w.complete(ctx, op); err != nil {
			return err
		}
	}
	op.Status = dps.StatusAssigned
	w.st.put(op)
	w.eng.Finished(op)
	return nil
}

func (w *fakeWork) completions() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Time(nil), w.calls...)
}

func newEngine(st *memStore, w *fakeWork, mods ...func(*Options)) *Engine {
	o := Options{Store: st, Work: w, NodeID: "node-a"}
	for _, m := range mods {
		m(&o)
	}
	w.st = st
	w.eng = New(o)
	return w.eng
}

func unfinished(id, regID string) dps.Operation {
	now := time.Now().UTC()
	return dps.Operation{ID: id, RegistrationID: regID, Status: dps.StatusAssigning, Created: now, Updated: now}
}

// stopLanes replaces e's lanes by lanes that start nothing: where each
// operation waits stays visible.
func stopLanes(e *Engine) {
	e.lanes = newLanes(4, 4, 16, func(laneItem, func()) {})
}

func laneOf(e *Engine, id string) (string, bool) {
	e.lanes.mu.Lock()
	defer e.lanes.mu.Unlock()
	ln, ok := e.lanes.queued[id]
	if !ok {
		return "", false
	}
	return ln.key, true
}

// TestResumeLeavesLaneErrorsForTheSweep: an operation whose lane cannot be
// told now (Work.Lane fails: its enrollment cannot be read) is not queued
// at all, rather than in the default lane; it is queued in its lane once
// Lane answers.
func TestResumeLeavesLaneErrorsForTheSweep(t *testing.T) {
	ctx := context.Background()
	outage := &dps.Error{Kind: dps.KindUnavailable, Message: "store unavailable"}
	var laneErr error
	w := &fakeWork{lane: func(dps.Operation) (string, error) { return "webhook https://hook.example/allocate", laneErr }}
	e := newEngine(newMemStore(), w)
	stopLanes(e)
	op := unfinished("op-flaky", "dev-1")

	laneErr = outage
	if err := e.resume(ctx, op); !errors.Is(err, outage) {
		t.Errorf("resume during an outage = %v, want Lane's error", err)
	}
	if key, queued := laneOf(e, op.ID); queued {
		t.Fatalf("resumed during an outage into lane %q, want left for the next sweep", key)
	}
	laneErr = nil
	if err := e.resume(ctx, op); err != nil {
		t.Fatal(err)
	}
	if key, _ := laneOf(e, op.ID); key != "webhook https://hook.example/allocate" {
		t.Errorf("resumed into lane %q, want the one Lane gave", key)
	}
}

// TestUntrackKeepsOperationsInLanes: the sweep's listing may leave out an
// operation this node is still working on (PostgreSQL omits operations
// under a lease, this node's own included); the device's operation stays
// tracked, so registering again meanwhile still answers it.
func TestUntrackKeepsOperationsInLanes(t *testing.T) {
	e := newEngine(newMemStore(), &fakeWork{}, func(o *Options) { o.SingleNode = true })
	stopLanes(e) // started, never finished
	op := unfinished("op-leased", "dev-1")
	e.track(op, true)
	e.Enqueue(op, "")
	e.untrackFinished(time.Now().Add(time.Second), nil) // listed after tracking, without the operation
	e.mu.Lock()
	got := e.devices[dps.FoldID("dev-1")].id
	e.mu.Unlock()
	if got != op.ID {
		t.Errorf("tracked operation of dev-1 = %q after a sweep that did not list it, want %q (still in its lane)", got, op.ID)
	}
	e.lanes = newLanes(4, 4, 16, func(laneItem, func()) {}) // now in no lane
	e.untrackFinished(time.Now().Add(time.Second), nil)
	e.mu.Lock()
	_, still := e.devices[dps.FoldID("dev-1")]
	e.mu.Unlock()
	if still {
		t.Errorf("an operation neither listed nor in a lane stays tracked")
	}
}

// TestClaim: the first register of a device reserves its slot; one
// arriving meanwhile waits for it to settle and then gets the operation it
// created (without payload) while the caller's predicate accepts it. A
// rejected, final or vanished operation gives a new reservation; settling
// with nil frees the slot; a store that cannot answer is an error.
func TestClaim(t *testing.T) {
	ctx := context.Background()
	st := newMemStore()
	e := newEngine(st, &fakeWork{})
	yes := func(dps.Operation) bool { return true }

	_, inFlight, settle, err := e.Claim(ctx, "Dev-1", yes)
	if err != nil || inFlight || settle == nil {
		t.Fatalf("first claim = %v, %v, %v; want a reservation", inFlight, settle != nil, err)
	}
	type result struct {
		op       dps.Operation
		inFlight bool
		err      error
	}
	waiting := make(chan result, 1)
	go func() {
		op, inFlight, _, err := e.Claim(ctx, "DEV-1", yes)
		waiting <- result{op, inFlight, err}
	}()
	select {
	case r := <-waiting:
		t.Fatalf("a claim during a reservation returned at once: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	op := unfinished("op-1", "Dev-1")
	op.Payload = []byte(`{"model":"m"}`)
	st.put(op)
	settle(&op)
	settle(nil) // once only
	r := <-waiting
	if r.err != nil || !r.inFlight || r.op.ID != op.ID || r.op.Payload != nil {
		t.Fatalf("claim after settle = %+v, want the operation created, without payload", r)
	}

	var offered []string
	no := func(op dps.Operation) bool { offered = append(offered, op.ID); return false }
	_, inFlight, settle, err = e.Claim(ctx, "dev-1", no)
	if err != nil || inFlight || settle == nil || len(offered) != 1 || offered[0] != op.ID {
		t.Fatalf("claim refusing the operation in flight = %v, %v, %v (offered %v); want a reservation", inFlight, settle != nil, err, offered)
	}
	settle(nil)
	e.mu.Lock()
	_, tracked := e.devices[dps.FoldID("dev-1")]
	e.mu.Unlock()
	if tracked {
		t.Errorf("a reservation settled with nil is still tracked")
	}

	e.track(op, true)
	st.unavailable = true
	if _, _, _, err := e.Claim(ctx, "dev-1", yes); dps.KindOf(err) != dps.KindUnavailable {
		t.Errorf("claim while the store is unavailable = %v, want its error", err)
	}
	st.unavailable = false
	op.Status = dps.StatusAssigned
	st.put(op)
	if _, inFlight, settle, err := e.Claim(ctx, "dev-1", yes); err != nil || inFlight || settle == nil {
		t.Errorf("claim after the operation finished = %v, %v, %v; want a reservation", inFlight, settle != nil, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, _, err := e.Claim(cctx, "dev-1", yes); !errors.Is(err, context.Canceled) {
		t.Errorf("claim waiting for a reservation with its context done = %v", err)
	}
}

// TestLeases: the operation is claimed for a lease, renewed every third of
// it while the work takes longer, and not renewed once it finished; after a
// transient failure the lease is given up at once and the next sweep
// completes the operation.
func TestLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		st.put(unfinished("op-slow", "slow-dev"))
		release := make(chan struct{})
		failed := false
		w := &fakeWork{complete: func(ctx context.Context, op dps.Operation) error {
			if op.ID == "op-slow" {
				<-release
				return nil
			}
			if !failed {
				failed = true
				return errors.New("store unavailable") // the first attempt fails
			}
			return nil
		}}
		e := newEngine(st, w, func(o *Options) { o.Lease, o.SweepInterval = 30*time.Second, 5*time.Second })
		start := time.Now()
		if err := e.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		synctest.Wait()
		time.Sleep(25 * time.Second)
		synctest.Wait()
		claims := st.claimLog()
		if len(claims) != 3 {
			t.Fatalf("%d claims in 25s of work, want 3 (claim + renewals every 10s): %+v", len(claims), claims)
		}
		for i, c := range claims {
			at := start.Add(time.Duration(i) * 10 * time.Second)
			if !c.at.Equal(at) || !c.until.Equal(at.Add(30*time.Second)) || c.owner != "node-a" || !c.owned {
				t.Errorf("claim %d = %+v, want by node-a at +%ds until +%ds", i, c, i*10, i*10+30)
			}
		}
		close(release)
		synctest.Wait()
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(st.claimLog()); n != 3 {
			t.Errorf("%d claims after the operation finished, want none", n-3)
		}

		// A transient failure.
		st.put(unfinished("op-flaky", "flaky-dev"))
		e.Enqueue(dps.Operation{ID: "op-flaky", RegistrationID: "flaky-dev"}, "")
		synctest.Wait()
		failedAt := time.Now()
		claims = st.claimLog()[3:]
		if len(claims) != 2 || !claims[0].owned || !claims[1].until.IsZero() || !claims[1].at.Equal(failedAt) {
			t.Fatalf("claims after a failed attempt = %+v, want the lease and its release at once", claims)
		}
		time.Sleep(5 * time.Second) // the next sweep
		synctest.Wait()
		if op, _ := st.Operation(t.Context(), "op-flaky"); op.Status != dps.StatusAssigned {
			t.Fatalf("after the next sweep the operation is %s, want assigned", op.Status)
		}
	})
}

// TestSingleNodeTakesNoLeases: with SingleNode the store's leases are never
// used.
func TestSingleNodeTakesNoLeases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		st.put(unfinished("op-1", "dev-1"))
		w := &fakeWork{}
		e := newEngine(st, w, func(o *Options) { o.SingleNode = true })
		if err := e.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		synctest.Wait()
		if n := len(w.completions()); n != 1 {
			t.Fatalf("%d completions, want 1", n)
		}
		if claims := st.claimLog(); len(claims) != 0 {
			t.Errorf("claims on a single node: %+v", claims)
		}
	})
}

// TestRetryAfterBacksOff: an operation whose attempt failed with a
// *RetryAfter keeps its lease through the wait, is not run by the sweeps
// meanwhile (though they list it: they do not even queue it), nor when
// queued anyway, and is queued again after its wait; its retry state counts
// across attempts and goes once it finished.
func TestRetryAfterBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		op := unfinished("op-hub", "hub-dev")
		op.Created = op.Created.Add(-time.Hour) // old enough for every sweep
		st.put(op)
		var e *Engine
		var seen []Retries
		w := &fakeWork{complete: func(_ context.Context, op dps.Operation) error {
			if len(seen) == 3 {
				return nil
			}
			r := e.AttemptFailed(op.ID, time.Now(), 0, 0)
			seen = append(seen, r)
			return &RetryAfter{Wait: r.Wait, Err: errors.New("hub busy")}
		}}
		// Sweeps every 450 ms: several in each wait, none when an attempt is due.
		e = newEngine(st, w, func(o *Options) { o.SweepInterval, o.Lease = 450*time.Millisecond, time.Hour })
		start := time.Now()
		if err := e.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		e.Enqueue(op, "") // during the second wait: not run
		synctest.Wait()
		time.Sleep(8 * time.Second)
		synctest.Wait()
		st.mu.Lock()
		reads := st.reads[op.ID]
		st.mu.Unlock()
		if reads != 5 {
			t.Errorf("operation read %d times, want 5 (each attempt, and once queued during a wait)", reads)
		}
		calls := w.completions()
		if len(calls) != 4 {
			t.Fatalf("%d attempts, want 4 (1 s, 2 s, 4 s apart)", len(calls))
		}
		if !calls[0].Equal(start) {
			t.Errorf("first attempt at +%s, want at once", calls[0].Sub(start))
		}
		for i, backoff := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
			// The backoff plus its jitter, exactly as the failure said.
			if w := seen[i].Wait; w < backoff || w > backoff*5/4 {
				t.Errorf("wait after failed attempt %d = %s, want %s plus at most a quarter", i+1, w, backoff)
			}
			if gap := calls[i+1].Sub(calls[i]); gap != seen[i].Wait || !calls[i+1].Equal(seen[i].Due) {
				t.Errorf("attempt %d came %s after the one before, want its wait %s (due +%s)", i+2, gap, seen[i].Wait, seen[i].Due.Sub(start))
			}
		}
		for i, r := range seen {
			if r.Attempts != i+1 || !r.First.Equal(start) {
				t.Errorf("retry state %d = %+v, want attempt %d since the first failure", i, r, i+1)
			}
		}
		claims := st.claimLog()
		for i := range 3 {
			// claim, then keep it until the next attempt is due
			c := claims[2*i+1]
			if want := calls[i+1]; !c.until.Equal(want) {
				t.Errorf("lease after failed attempt %d kept until +%s, want +%s", i+1, c.until.Sub(start), want.Sub(start))
			}
		}
		e.mu.Lock()
		left := len(e.retries)
		e.mu.Unlock()
		if e.backingOff(op.ID) || left != 0 {
			t.Errorf("retry state of %d operations kept after the operation finished", left)
		}
	})
}

// TestRetriesKeptWhenNotListed: an operation backing off keeps its retry
// state when a sweep's listing leaves it out, until its next attempt is a
// lease overdue.
func TestRetriesKeptWhenNotListed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newMemStore()
		st.hidden = true
		e := newEngine(st, &fakeWork{}, func(o *Options) { o.Lease = 30 * time.Second })
		stopLanes(e)
		e.AttemptFailed("op-hub", time.Now(), 0, 0)
		r := e.AttemptFailed("op-hub", time.Now(), 0, 0) // due in 2-2.5 s
		time.Sleep(30*time.Second + r.Wait - time.Millisecond)
		e.untrackFinished(time.Now(), nil)
		if r, ok := e.retries["op-hub"]; !ok || r.Attempts != 2 {
			t.Fatalf("retry state after an unlisting sweep within the lease = %+v, %v; want kept", r, ok)
		}
		time.Sleep(2 * time.Millisecond)
		e.untrackFinished(time.Now(), nil)
		if r, ok := e.retries["op-hub"]; ok {
			t.Errorf("retry state a lease past its due attempt = %+v, want gone", r)
		}
	})
}

// TestPrune: the sweeper prunes final operations older than
// OperationRetention once a minute, and again at the next tick after a full
// batch (PruneBatch, by default 5000).
func TestPrune(t *testing.T) {
	for _, tt := range []struct {
		name  string
		batch int // Options.PruneBatch
		full  int64
	}{
		{"default", 0, 5000},
		{"option", 3, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				st := newMemStore()
				st.prune = func(n int) int64 {
					if n == 0 {
						return tt.full // a full batch
					}
					return tt.full - 1
				}
				now := time.Now()
				e := newEngine(st, &fakeWork{}, func(o *Options) {
					o.SweepInterval, o.PruneBatch, o.OperationRetention = 5*time.Second, tt.batch, time.Hour
				})
				if err := e.Start(t.Context()); err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				time.Sleep(76 * time.Second)
				synctest.Wait()
				prunes := st.pruneLog()
				var at []time.Duration
				for _, p := range prunes {
					at = append(at, p.at.Sub(now))
					if want := p.at.Add(-time.Hour); !p.before.Equal(want) {
						t.Errorf("pruned before %s, want an hour before the sweep", p.before)
					}
				}
				// 5 s; a full batch: 10 s; then more than a minute later, 75 s.
				if want := []time.Duration{5 * time.Second, 10 * time.Second, 75 * time.Second}; len(at) != 3 || at[0] != want[0] || at[1] != want[1] || at[2] != want[2] {
					t.Errorf("pruned at %v, want %v", at, want)
				}
			})
		})
	}
}

// TestRecentRetention: a final operation is answered from memory while it
// is within OperationRetention; unfinished ones are never kept.
func TestRecentRetention(t *testing.T) {
	now := time.Now()
	clock := now
	e := newEngine(newMemStore(), &fakeWork{}, func(o *Options) {
		o.OperationRetention, o.Now = time.Hour, func() time.Time { return clock }
	})
	done := dps.Operation{ID: "op-done", Status: dps.StatusAssigned, Created: now}
	e.Finished(done)
	e.Remember(dps.Operation{ID: "op-busy", Status: dps.StatusAssigning, Created: now})
	if _, ok := e.Recent("op-done"); !ok {
		t.Errorf("a finished operation is not kept")
	}
	if _, ok := e.Recent("op-busy"); ok {
		t.Errorf("an unfinished operation is kept")
	}
	clock = now.Add(time.Hour + time.Second)
	if _, ok := e.Recent("op-done"); ok {
		t.Errorf("an operation past its retention is answered from memory")
	}
}

// TestBackoffJitter: the wait after a failed attempt is the backoff (1 s
// doubling up to a minute), or the floor when longer, plus a jitter of up
// to a quarter of it: never less, and not the same for every operation;
// but it never ends past the caller's retry budget.
func TestBackoffJitter(t *testing.T) {
	for _, tt := range []struct {
		attempts int
		floor    time.Duration
		base     time.Duration
	}{
		{1, 0, time.Second}, {2, 0, 2 * time.Second}, {4, 0, 8 * time.Second}, {7, 0, time.Minute}, {40, 0, time.Minute},
		{1, 3 * time.Second, 3 * time.Second},  // Retry-After longer than the backoff
		{5, 3 * time.Second, 16 * time.Second}, // shorter
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			w := Backoff(tt.attempts, tt.floor)
			if w < tt.base || w > tt.base+tt.base/4 {
				t.Fatalf("Backoff(%d, %s) = %s, want %s plus at most a quarter", tt.attempts, tt.floor, w, tt.base)
			}
			seen[w] = true
		}
		if len(seen) < 100 {
			t.Errorf("Backoff(%d, %s): %d different waits in 200, want them spread", tt.attempts, tt.floor, len(seen))
		}
	}
	synctest.Test(t, func(t *testing.T) {
		e := newEngine(newMemStore(), &fakeWork{})
		stopLanes(e)
		r := e.AttemptFailed("op-1", time.Now(), 5*time.Second, 0)
		if r.Wait < 5*time.Second || !r.Due.Equal(time.Now().Add(r.Wait)) || !e.backingOff("op-1") {
			t.Fatalf("retry state with a 5 s floor = %+v", r)
		}
		time.Sleep(r.Wait)
		if e.backingOff("op-1") {
			t.Errorf("still backing off once the wait passed")
		}
	})
	// The wait never ends past the caller's budget: with 3 s of a 4 s
	// budget gone, a 10 s Retry-After (or any backoff) is cut to the 1 s
	// left; with the budget gone, the next attempt is due at once.
	synctest.Test(t, func(t *testing.T) {
		e := newEngine(newMemStore(), &fakeWork{})
		stopLanes(e)
		first := time.Now()
		if r := e.AttemptFailed("op-2", first, 0, 4*time.Second); r.Wait < time.Second || r.Wait > 1250*time.Millisecond {
			t.Fatalf("first wait within a 4 s budget = %s, want the backoff", r.Wait)
		}
		time.Sleep(3 * time.Second)
		if r := e.AttemptFailed("op-2", time.Now(), 10*time.Second, 4*time.Second); r.Wait != time.Second || !r.Due.Equal(first.Add(4*time.Second)) {
			t.Fatalf("wait with 1 s of the budget left = %s (due %s), want 1 s", r.Wait, r.Due.Sub(first))
		}
		time.Sleep(2 * time.Second)
		if r := e.AttemptFailed("op-2", time.Now(), 0, 4*time.Second); r.Wait != 0 {
			t.Fatalf("wait past the budget = %s, want 0", r.Wait)
		}
	})
}
