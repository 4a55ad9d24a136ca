package throttle_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps/internal/throttle"
)

// summaries collects a LogGate's Summaries (they come from its timer too).
type summaries[K comparable] struct {
	mu  sync.Mutex
	got []throttle.Summary[K]
}

func (s *summaries[K]) add(x throttle.Summary[K]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, x)
}

// take returns the Summaries since the last take, once the gate's timer
// callbacks have finished.
func (s *summaries[K]) take() []throttle.Summary[K] {
	synctest.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.got
	s.got = nil
	return out
}

// TestLogGate: one line per key per interval, each with the count of the
// key's refusals not logged since its previous line; keys past the cap
// share one allowance.
func TestLogGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sums summaries[string]
		g := throttle.NewLogGate(10*time.Second, 3, nil, sums.add)
		defer g.Close()
		if n, ok := g.Allow("a"); !ok || n != 0 {
			t.Fatalf("first refusal: logged %v, suppressed %d", ok, n)
		}
		for range 99 {
			if _, ok := g.Allow("a"); ok {
				t.Fatal("a second line within the interval")
			}
		}
		if _, ok := g.Allow("b"); !ok {
			t.Fatal("another key's first refusal not logged")
		}
		time.Sleep(10 * time.Second)
		if n, ok := g.Allow("a"); !ok || n != 99 {
			t.Fatalf("after the interval: logged %v, suppressed %d; want a line with 99", ok, n)
		}
		if n, ok := g.Allow("b"); !ok || n != 0 {
			t.Fatalf("b after the interval: logged %v, suppressed %d", ok, n)
		}
		if s := sums.take(); len(s) != 0 {
			t.Fatalf("summaries %v, though each key's count was logged", s)
		}

		// A storm of distinct keys: one more is tracked, then they share
		// one allowance.
		lines := 0
		for i := range 10_000 {
			if _, ok := g.Allow(fmt.Sprint("k", i)); ok {
				lines++
			}
			if g.Tracked() > 3 {
				t.Fatalf("%d keys tracked, cap 3", g.Tracked())
			}
		}
		if lines != 2 { // k0 (the third key), then the shared allowance's first line
			t.Fatalf("%d lines for 10000 distinct keys, want 2", lines)
		}
	})
}

// TestLogGateStormThatStops: a key's refusals not logged are reported in
// a Summary once its interval ends, though the key is never refused
// again; then the key is forgotten.
func TestLogGateStormThatStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sums summaries[string]
		g := throttle.NewLogGate(10*time.Second, 100, nil, sums.add)
		defer g.Close()
		for range 100 {
			g.Allow("a")
		}
		time.Sleep(3 * time.Second)
		g.Allow("b") // logged; nothing suppressed
		time.Sleep(7*time.Second + time.Second)
		want := []throttle.Summary[string]{{Key: "a", Suppressed: 99}}
		if s := sums.take(); !slices.Equal(s, want) {
			t.Fatalf("an interval (and a tenth) after a storm stopped: summaries %v, want %v", s, want)
		}
		time.Sleep(time.Minute)
		if s := sums.take(); len(s) != 0 || g.Tracked() != 0 {
			t.Fatalf("later: summaries %v, %d keys tracked; want none", s, g.Tracked())
		}
	})
}

// TestLogGateReportsOnAnyKey: the next refusal of any key reports the
// keys whose interval ended, before the timer would; the summary is the
// key's line for the next interval.
func TestLogGateReportsOnAnyKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sums summaries[string]
		g := throttle.NewLogGate(10*time.Second, 100, nil, sums.add)
		defer g.Close()
		for range 5 {
			g.Allow("a")
		}
		time.Sleep(10 * time.Second) // a's interval ended; the timer is a second away
		if _, ok := g.Allow("b"); !ok {
			t.Fatal("b's first refusal not logged")
		}
		want := []throttle.Summary[string]{{Key: "a", Suppressed: 4}}
		if s := sums.take(); !slices.Equal(s, want) {
			t.Fatalf("summaries on b's refusal: %v, want %v", s, want)
		}
		if _, ok := g.Allow("a"); ok {
			t.Fatal("a logged again within the interval of its summary")
		}
		time.Sleep(10 * time.Second)
		if n, ok := g.Allow("a"); !ok || n != 1 {
			t.Fatalf("a after its summary's interval: logged %v, suppressed %d; want 1", ok, n)
		}
	})
}

// TestLogGateSharedAllowanceReported: the refusals of the keys past the
// cap are reported together once the shared allowance's interval ends.
func TestLogGateSharedAllowanceReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sums summaries[string]
		g := throttle.NewLogGate(10*time.Second, 2, nil, sums.add)
		defer g.Close()
		for i := range 1000 {
			g.Allow(fmt.Sprint("k", i)) // k0, k1 tracked and logged; k2 logged for all; 997 not
		}
		time.Sleep(11 * time.Second)
		want := []throttle.Summary[string]{{Untracked: true, Suppressed: 997}}
		if s := sums.take(); !slices.Equal(s, want) {
			t.Fatalf("summaries %v, want %v", s, want)
		}
	})
}

// TestLogGateClose: Close reports what the gate holds at once and stops
// its timer; afterwards every refusal is to be logged.
func TestLogGateClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var sums summaries[string]
		g := throttle.NewLogGate(10*time.Second, 1, nil, sums.add)
		for range 3 {
			g.Allow("a")
			g.Allow("b")
		}
		g.Close()
		want := []throttle.Summary[string]{{Key: "a", Suppressed: 2}, {Untracked: true, Suppressed: 2}}
		if s := sums.take(); !slices.Equal(s, want) {
			t.Fatalf("summaries at Close: %v, want %v", s, want)
		}
		g.Close()
		time.Sleep(time.Minute)
		if s := sums.take(); len(s) != 0 {
			t.Fatalf("summaries after Close: %v", s)
		}
		if _, ok := g.Allow("a"); !ok {
			t.Fatal("a refusal after Close not to be logged")
		}
	})
}

// TestLogGateCountsEveryRefusal: storms of many keys that start and stop
// over minutes, from several goroutines: every refusal is counted in
// exactly one line (its own, the suppressed count of a later line, or a
// Summary), past the cap too; and, within the cap, no key gets two lines
// within an interval.
func TestLogGateCountsEveryRefusal(t *testing.T) {
	for _, c := range []struct {
		name    string
		cap     int
		oneOffs bool
	}{{"within the cap", 100, false}, {"past the cap", 20, true}} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { countEveryRefusal(t, c.cap, c.oneOffs) })
		})
	}
}

func countEveryRefusal(t *testing.T, maxKeys int, oneOffs bool) {
	const interval = 10 * time.Second
	var mu sync.Mutex
	lines := map[string][]time.Time{} // by key; "" for the shared allowance's summaries
	var counted, refusals int64
	line := func(key string, n int64) {
		mu.Lock()
		defer mu.Unlock()
		lines[key] = append(lines[key], time.Now())
		counted += n
	}
	g := throttle.NewLogGate(interval, maxKeys, nil, func(s throttle.Summary[string]) {
		if s.Suppressed <= 0 {
			t.Errorf("a summary of %d", s.Suppressed)
		}
		line(s.Key, s.Suppressed)
	})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range 3000 {
				key := fmt.Sprint("k", r.IntN(40))
				if oneOffs && r.IntN(50) == 0 {
					key = fmt.Sprint("one-off-", w, "-", r.Int())
				}
				mu.Lock()
				refusals++
				mu.Unlock()
				if suppressed, ok := g.Allow(key); ok {
					line(key, 1+suppressed)
				}
				if r.IntN(100) == 0 {
					time.Sleep(time.Duration(r.IntN(30)) * time.Second) // a pause: storms stop
				} else {
					time.Sleep(time.Duration(r.IntN(50)) * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Minute) // every interval ends: the timer reports the rest
	synctest.Wait()
	mu.Lock()
	before := counted
	mu.Unlock()
	g.Close() // nothing left to report
	synctest.Wait()
	mu.Lock()
	defer mu.Unlock()
	if counted != refusals || before != refusals {
		t.Fatalf("%d refusals, %d counted in lines (%d before Close)", refusals, counted, before)
	}
	if oneOffs {
		return // a logged line of a key past the cap is the shared allowance's
	}
	for key, at := range lines {
		slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		for i := 1; i < len(at); i++ {
			if at[i].Sub(at[i-1]) < interval {
				t.Fatalf("key %q: lines at %v and %v, within an interval", key, at[i-1], at[i])
			}
		}
	}
}

// TestLimiterUnlogged: a Limiter's and a ServiceLimiter's gates report to
// their options' Unlogged, by operation and registration ID (quota and
// hub), and Close reports what they hold.
func TestLimiterUnlogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var dev summaries[throttle.DeviceKey]
		l := throttle.New(throttle.Options{PollsPer10s: 5, Unlogged: dev.add})
		for range 3 {
			l.LogThrottled(throttle.Poll, "Dev-1")
		}
		time.Sleep(11 * time.Second)
		want := []throttle.Summary[throttle.DeviceKey]{{Key: throttle.DeviceKey{Op: throttle.Poll, RegistrationID: "dev-1"}, Suppressed: 2}}
		if s := dev.take(); !slices.Equal(s, want) {
			t.Fatalf("device summaries %v, want %v", s, want)
		}
		l.LogThrottled(throttle.Register, "dev-2")
		l.LogThrottled(throttle.Register, "dev-2")
		l.Close()
		want = []throttle.Summary[throttle.DeviceKey]{{Key: throttle.DeviceKey{Op: throttle.Register, RegistrationID: "dev-2"}, Suppressed: 1}}
		if s := dev.take(); !slices.Equal(s, want) {
			t.Fatalf("device summaries at Close %v, want %v", s, want)
		}

		var svc summaries[throttle.ServiceKey]
		sl := throttle.NewService(throttle.ServiceOptions{QueriesPerMinute: 1, Unlogged: svc.add})
		for range 4 {
			sl.LogThrottled(throttle.HubQuery, "Hub-A")
		}
		sl.Close()
		wantSvc := []throttle.Summary[throttle.ServiceKey]{{Key: throttle.ServiceKey{Quota: throttle.HubQuery, Hub: "hub-a"}, Suppressed: 3}}
		if s := svc.take(); !slices.Equal(s, wantSvc) {
			t.Fatalf("service summaries %v, want %v", s, wantSvc)
		}
		var nl *throttle.Limiter
		nl.Close()
		var nsl *throttle.ServiceLimiter
		nsl.Close()
	})
}
