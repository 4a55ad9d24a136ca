package throttle_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps/internal/throttle"
)

func TestServiceNoLimitsIsNil(t *testing.T) {
	l := throttle.NewService(throttle.ServiceOptions{})
	if l != nil {
		t.Fatal("a service limiter without limits should be nil")
	}
	for range 1000 {
		if _, ok := l.Allow(throttle.HubRegistry, "hub"); !ok {
			t.Fatal("a nil service limiter refused")
		}
	}
	if _, ok := l.LogThrottled(throttle.HubRegistry, "hub"); !ok {
		t.Fatal("a nil service limiter suppressed a log line")
	}
}

// TestServiceQuotas: each quota is its own bucket (a burst of N, then one
// every window/N), per hub for the hub quotas; a quota without a limit
// admits everything; refusals are reported with their quota and API.
func TestServiceQuotas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var refused []string
		l := throttle.NewService(throttle.ServiceOptions{
			OperationsPerMinute:         60,
			RegistryOperationsPerMinute: 100,
			TwinReadsPerSecond:          2,
			Throttled:                   func(q throttle.Quota) { refused = append(refused, q.API()+"/"+q.String()) },
		})
		for i := range 60 {
			if _, ok := l.Allow(throttle.ServiceOperations, ""); !ok {
				t.Fatalf("service operation %d refused within the burst of 60", i+1)
			}
		}
		if wait, ok := l.Allow(throttle.ServiceOperations, ""); ok || wait != time.Second {
			t.Fatalf("61st operation: ok %v, retry after %s; want refused, 1s", ok, wait)
		}
		// The hub quotas are separate, and per hub.
		for i := range 100 {
			if _, ok := l.Allow(throttle.HubRegistry, "hub-a"); !ok {
				t.Fatalf("registry operation %d refused", i+1)
			}
		}
		wait, ok := l.Allow(throttle.HubRegistry, "HUB-A") // hub names are case-insensitive
		if ok || wait != time.Second {                     // one token every 0.6 s
			t.Fatalf("101st registry operation: ok %v, retry after %s", ok, wait)
		}
		if _, ok := l.Allow(throttle.HubRegistry, "hub-b"); !ok {
			t.Fatal("another hub's registry operation refused")
		}
		for range 2 {
			if _, ok := l.Allow(throttle.HubTwinRead, "hub-a"); !ok {
				t.Fatal("twin read refused within the burst")
			}
		}
		if _, ok := l.Allow(throttle.HubTwinRead, "hub-a"); ok {
			t.Fatal("third twin read within a second admitted")
		}
		for range 1000 {
			if _, ok := l.Allow(throttle.HubTwinUpdate, "hub-a"); !ok {
				t.Fatal("twin update refused without a limit")
			}
		}
		want := []string{"service/operations", "hubService/registry", "hubService/twinRead"}
		if fmt.Sprint(refused) != fmt.Sprint(want) {
			t.Fatalf("Throttled calls %v, want %v", refused, want)
		}
		time.Sleep(time.Second)
		if _, ok := l.Allow(throttle.ServiceOperations, ""); !ok {
			t.Fatal("service operation refused after its retry-after")
		}
		if _, ok := l.Allow(throttle.ServiceOperations, ""); ok {
			t.Fatal("two operations admitted after one second's refill")
		}
		time.Sleep(time.Minute)
		for i := range 60 {
			if _, ok := l.Allow(throttle.ServiceOperations, ""); !ok {
				t.Fatalf("operation %d refused after a full minute", i+1)
			}
		}
	})
}

// TestLogGate: one line per key per interval, each with the count of the
// key's refusals not logged since its previous line; keys past the cap
// share one allowance; a forgotten key's count is not lost.
func TestLogGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := throttle.NewLogGate(10*time.Second, 3, nil)
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
		g.Allow("a") // suppressed: a holds 1 again

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
		time.Sleep(10 * time.Second)
		// Room is made: the keys an interval old are forgotten, their
		// counts (a's 1) added to the shared allowance's (9998).
		if n, ok := g.Allow("fresh"); !ok || n != 0 || g.Tracked() != 1 {
			t.Fatalf("fresh: logged %v, suppressed %d, %d tracked", ok, n, g.Tracked())
		}
		for i := range 2 {
			g.Allow(fmt.Sprint("x", i))
		}
		if n, ok := g.Allow("overflow"); !ok || n != 9998+1 {
			t.Fatalf("shared allowance after the interval: logged %v, suppressed %d; want 9999", ok, n)
		}
	})
}

func TestLimiterLogThrottled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := throttle.New(throttle.Options{PollsPer10s: 5})
		if _, ok := l.LogThrottled(throttle.Poll, "dev-1"); !ok {
			t.Fatal("first refusal not logged")
		}
		if _, ok := l.LogThrottled(throttle.Poll, "DEV-1"); ok {
			t.Fatal("a second line for the same device within the interval")
		}
		if _, ok := l.LogThrottled(throttle.Register, "dev-1"); !ok {
			t.Fatal("another operation of the device shares the poll's line")
		}
		time.Sleep(throttle.LogInterval)
		if n, ok := l.LogThrottled(throttle.Poll, "dev-1"); !ok || n != 1 {
			t.Fatalf("after the interval: logged %v, suppressed %d", ok, n)
		}
		var nl *throttle.Limiter
		if _, ok := nl.LogThrottled(throttle.Poll, "x"); !ok {
			t.Fatal("a nil limiter suppressed a line")
		}
	})
}
