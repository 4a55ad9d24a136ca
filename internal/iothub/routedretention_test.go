package iothub_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
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

// appendingLog appends n messages when the sweep first deletes (a device
// sending while the sweep runs).
type appendingLog struct {
	*sqlite.DB
	once sync.Once
	n    int
}

func (l *appendingLog) DeleteRoutedMessagesBefore(ctx context.Context, hub string, t time.Time, through int64) (int64, error) {
	l.once.Do(func() {
		for range l.n {
			l.DB.AppendMessages(ctx, []dps.Message{{Hub: hub, DeviceID: "dev-1", Body: []byte("late"), Enqueued: time.Now()}})
		}
	})
	return l.DB.DeleteRoutedMessagesBefore(ctx, hub, t, through)
}

// TestTrimDuringAppendsKeepsUnrouted: messages appended while a sweep runs
// never make its count trim delete past the slowest route's checkpoint.
func TestTrimDuringAppendsKeepsUnrouted(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "dps.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := &appendingLog{DB: st, n: 5}
	f := &floor{through: 2, ok: true} // the slowest route delivered 1..2
	s := iothub.New(iothub.Options{Store: st, Events: log, Hubs: []string{hub}, Retention: iothub.Retention{Age: time.Hour, Messages: 3}, RouteFloor: f})
	sendN(t, s, 10, "m")
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	p, err := s.Events(context.Background(), hub, 1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.First != 3 {
		t.Errorf("route checkpoint 2, but the sweep deleted up to seq %d (%s)", p.First-1, ids(p))
	}
}
