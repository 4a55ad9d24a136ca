package iothub_test

import (
	"context"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/store/sqlite"
)

type floor struct {
	through int64
	ok      bool
}

func (f *floor) Floor(context.Context, string) (int64, bool, error) { return f.through, f.ok, nil }

// TestRetentionBehindRoutes: with routes, neither age nor count deletes
// a message after the slowest route's checkpoint; once it moves on, the
// sweep deletes up to it.
func TestRetentionBehindRoutes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dps.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f := &floor{through: 2, ok: true}
		s := eventHub(t, st, iothub.Options{Retention: iothub.Retention{Age: time.Hour, Messages: 3}, RouteFloor: f})
		sendN(t, s, 10, "m")
		time.Sleep(2 * time.Hour) // every message is past the age
		if err := s.Sweep(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if p, err := s.Events(ctx, hub, 1, 0, 0); err != nil || p.First != 3 || len(p.Messages) != 8 {
			t.Errorf("behind checkpoint 2: first %d, %d messages, %v; want 3..10 kept", p.First, len(p.Messages), err)
		}
		f.through = 9
		if err := s.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if p, err := s.Events(ctx, hub, 1, 0, 0); err != nil || p.First != 10 || len(p.Messages) != 1 {
			t.Errorf("behind checkpoint 9: first %d, %d messages, %v; want only 10 kept", p.First, len(p.Messages), err)
		}
		f.ok = false // no routes: as configured
		if err := s.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if p, _ := s.Events(ctx, hub, 1, 0, 0); len(p.Messages) != 0 {
			t.Errorf("without routes: %d messages kept, want none (all past the age)", len(p.Messages))
		}
	})
}
