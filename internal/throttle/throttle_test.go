package throttle_test

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps/internal/throttle"
)

func TestNoLimitsIsNil(t *testing.T) {
	l := throttle.New(throttle.Options{})
	if l != nil {
		t.Fatal("a limiter without limits should be nil")
	}
	for range 1000 {
		if _, ok := l.Allow("https", throttle.Poll, "d"); !ok {
			t.Fatal("a nil limiter refused")
		}
	}
}

func TestPollsPerDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var refused []string
		l := throttle.New(throttle.Options{PollsPer10s: 5, Throttled: func(tr string, op throttle.Op) { refused = append(refused, tr+"/"+op.String()) }})
		for i := range 5 {
			if _, ok := l.Allow("mqtt", throttle.Poll, "dev-1"); !ok {
				t.Fatalf("poll %d refused within the burst of 5", i+1)
			}
		}
		wait, ok := l.Allow("mqtt", throttle.Poll, "DEV-1") // IDs are case-insensitive
		if ok {
			t.Fatal("sixth poll within 10s admitted")
		}
		if wait != 2*time.Second { // one token every 2s
			t.Fatalf("retry after %s, want 2s", wait)
		}
		if len(refused) != 1 || refused[0] != "mqtt/poll" {
			t.Fatalf("Throttled calls %v", refused)
		}
		// Another device and registers are unaffected.
		if _, ok := l.Allow("mqtt", throttle.Poll, "dev-2"); !ok {
			t.Fatal("another device's poll refused")
		}
		for range 100 {
			if _, ok := l.Allow("mqtt", throttle.Register, "dev-1"); !ok {
				t.Fatal("register refused without a register limit")
			}
		}
		time.Sleep(2 * time.Second)
		if _, ok := l.Allow("mqtt", throttle.Poll, "dev-1"); !ok {
			t.Fatal("poll refused after waiting the retry-after")
		}
		if _, ok := l.Allow("mqtt", throttle.Poll, "dev-1"); ok {
			t.Fatal("second poll admitted after one token refilled")
		}
		time.Sleep(10 * time.Second)
		for i := range 5 {
			if _, ok := l.Allow("mqtt", throttle.Poll, "dev-1"); !ok {
				t.Fatalf("poll %d refused after a full window", i+1)
			}
		}
	})
}

func TestInstanceLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := throttle.New(throttle.Options{RegistrationsPerMinute: 60, RegistersPer10s: 1})
		for i := range 60 {
			if _, ok := l.Allow("https", throttle.Register, fmt.Sprint("d", i)); !ok {
				t.Fatalf("registration %d refused within the instance burst", i)
			}
		}
		wait, ok := l.Allow("https", throttle.Register, "fresh")
		if ok || wait != time.Second {
			t.Fatalf("61st registration: ok %v wait %s, want refused with 1s", ok, wait)
		}
		// The instance refusal consumed nothing of "fresh"'s own allowance.
		time.Sleep(time.Second)
		if _, ok := l.Allow("https", throttle.Register, "fresh"); !ok {
			t.Fatal("fresh refused after the instance refilled")
		}
		// Polls are not registrations.
		if _, ok := l.Allow("https", throttle.Poll, "d0"); !ok {
			t.Fatal("poll refused by the instance limit")
		}
		// A device refused by its own limit consumes nothing of the instance's.
		time.Sleep(time.Minute)
		if _, ok := l.Allow("https", throttle.Register, "d0"); !ok {
			t.Fatal("d0 refused after a minute")
		}
		for range 100 {
			l.Allow("https", throttle.Register, "d0")
		}
		for i := range 59 {
			if _, ok := l.Allow("https", throttle.Register, fmt.Sprint("e", i)); !ok {
				t.Fatalf("registration e%d refused: d0's refusals consumed the instance allowance", i)
			}
		}
	})
}

func TestMemoryBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := throttle.New(throttle.Options{PollsPer10s: 1, MaxTracked: 100})
		if _, ok := l.Allow("https", throttle.Poll, "victim"); !ok {
			t.Fatal("first poll refused")
		}
		if _, ok := l.Allow("https", throttle.Poll, "victim"); ok {
			t.Fatal("second poll admitted")
		}
		for i := range 10_000 {
			l.Allow("https", throttle.Poll, fmt.Sprint("random-", i))
			if n := l.Tracked(throttle.Poll); n > 100 {
				t.Fatalf("%d IDs tracked, cap 100", n)
			}
		}
		// victim was forgotten: it starts again with a full allowance.
		if _, ok := l.Allow("https", throttle.Poll, "victim"); !ok {
			t.Fatal("a forgotten ID should start with a full allowance")
		}
		// The most recently seen IDs are still limited.
		if _, ok := l.Allow("https", throttle.Poll, "random-9999"); ok {
			t.Fatal("a recently seen ID was forgotten")
		}
	})
}

func TestConcurrent(t *testing.T) {
	l := throttle.New(throttle.Options{PollsPer10s: 5, RegistersPer10s: 5, RegistrationsPerMinute: 1000})
	done := make(chan int)
	for g := range 8 {
		go func() {
			n := 0
			for range 1000 {
				if _, ok := l.Allow("https", throttle.Register, "same"); ok {
					n++
				}
				l.Allow("https", throttle.Poll, fmt.Sprint(g))
			}
			done <- n
		}()
	}
	total := 0
	for range 8 {
		total += <-done
	}
	if total < 5 || total > 6 { // the burst, plus at most one refill during the run
		t.Fatalf("%d registers of one device admitted, want 5", total)
	}
}
