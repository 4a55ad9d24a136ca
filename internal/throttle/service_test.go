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
