package dpstest

import (
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// Recorder collects registration events, as the events feed receives
// them; it is safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	events []dps.RegistrationEvent
}

// Record keeps e.
func (r *Recorder) Record(e dps.RegistrationEvent) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

// Take returns the events recorded so far and forgets them.
func (r *Recorder) Take() []dps.RegistrationEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

// Wait returns the events once there are n (and forgets them); it fails
// the test when, 10 s on, there are not exactly n.
func (r *Recorder) Wait(t testing.TB, n int) []dps.RegistrationEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		got := append([]dps.RegistrationEvent(nil), r.events...)
		r.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("%d events, want %d: %+v", len(got), n, got)
			}
			r.Take()
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}
