// Package health tells whether a store can write, for readiness probes. A
// tiny heartbeat write alone is not enough: on a full disk SQLite still
// rewrites a row in place (in pages it already has) while every insert
// fails, and PostgreSQL likewise. So a store also reports the writes that
// failed because it was unavailable, and Check fails for a while after one.
package health

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opendps/dps"
)

// Defaults of Writes.
const (
	DefaultEvery  = 2 * time.Second
	DefaultMemory = 5 * time.Second
)

// Writes tracks a store's writes. The zero value is ready to use.
type Writes struct {
	// Every is the least time between two heartbeat writes (DefaultEvery).
	Every time.Duration
	// Memory is how long a write that failed as unavailable keeps Check
	// failing (DefaultMemory).
	Memory time.Duration

	failure atomic.Pointer[failure] // the last unavailable write
	mu      sync.Mutex              // one heartbeat at a time
	okAt    time.Time               // the last successful heartbeat; guarded by mu
}

type failure struct {
	at  time.Time
	err error
}

// Observe remembers err when it is KindUnavailable (a full disk, an I/O
// error, a database that does not answer) and returns it unchanged. It
// costs nothing for a write that succeeded.
func (w *Writes) Observe(err error) error {
	if err != nil && dps.KindOf(err) == dps.KindUnavailable {
		w.failure.Store(&failure{at: time.Now(), err: err})
	}
	return err
}

// Check returns a KindUnavailable error while writes fail: when a write
// failed as unavailable less than Memory ago, or when heartbeat fails.
// heartbeat (a tiny write) runs at most every Every; in between, a
// successful heartbeat stands.
func (w *Writes) Check(ctx context.Context, heartbeat func(context.Context) error) error {
	memory, every := w.Memory, w.Every
	if memory <= 0 {
		memory = DefaultMemory
	}
	if every <= 0 {
		every = DefaultEvery
	}
	if f := w.failure.Load(); f != nil && time.Since(f.at) < memory {
		return &dps.Error{Kind: dps.KindUnavailable, Message: "a write failed " + time.Since(f.at).Round(time.Millisecond).String() + " ago", Err: f.err}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.okAt.IsZero() && time.Since(w.okAt) < every {
		return nil
	}
	if err := heartbeat(ctx); err != nil {
		if dps.KindOf(err) != dps.KindUnavailable {
			err = &dps.Error{Kind: dps.KindUnavailable, Message: "the heartbeat write failed", Err: err}
		}
		return err
	}
	w.okAt = time.Now()
	return nil
}
