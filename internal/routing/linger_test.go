package routing_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/routing"
	"github.com/opendps/dps/internal/store/sqlite"
)

// countingStore counts the event log reads of the routes.
type countingStore struct {
	*sqlite.DB
	reads atomic.Int64
}

func (s *countingStore) Messages(ctx context.Context, hub string, after int64, limit int) ([]dps.Message, error) {
	s.reads.Add(1)
	return s.DB.Messages(ctx, hub, after, limit)
}

// TestLingerIgnoresWakes: messages appended one at a time, each followed
// by a Wake (as the hub does), are batched for the linger: a wake starts
// the linger of a batch that is not full, the appends during it do not
// cut it short, so the route reads the log a few times per batch, not
// once per message.
func TestLingerIgnoresWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db, err := sqlite.OpenWith(context.Background(), filepath.Join(t.TempDir(), "dps.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		st := &countingStore{DB: db}
		ep := &stamped{}
		e, err := routing.New(routing.Options{Store: st, Node: "n1", Poll: time.Hour, Linger: 50 * time.Millisecond, BatchSize: 1000,
			Routes: []routing.Route{{Hub: wakeHub, Name: "r", Source: routing.SourceTelemetry, Endpoint: "ep", Deliver: ep, Enabled: true}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { e.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		time.Sleep(time.Second) // claimed, waiting an hour for messages
		before := st.reads.Load()
		const n = 200
		for i := range n { // 200 messages over 40 ms: inside one linger
			if _, err := db.AppendMessages(ctx, []dps.Message{{Hub: wakeHub, DeviceID: "d", MessageID: fmt.Sprint(i)}}); err != nil {
				t.Fatal(err)
			}
			e.Wake(wakeHub)
			time.Sleep(200 * time.Microsecond)
		}
		time.Sleep(time.Second)
		got, _ := ep.received()
		if len(got) != n {
			t.Fatalf("delivered %d messages, want %d", len(got), n)
		}
		for i, m := range got {
			if m.MessageID != fmt.Sprint(i) {
				t.Fatalf("message %d is %s", i, m.MessageID)
			}
		}
		if reads := st.reads.Load() - before; reads > 10 {
			t.Errorf("the route read the event log %d times for %d messages appended within one linger", reads, n)
		}
	})
}
