package iothub_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/store/sqlite"
)

// eventHub is a hub serving its event log on a real SQLite store.
func eventHub(t *testing.T, st *sqlite.DB, o iothub.Options) *iothub.Service {
	o.Store, o.Events, o.Hubs = st, st, []string{hub, "other.example.test"}
	return iothub.New(o)
}

func sendN(t *testing.T, s *iothub.Service, n int, prefix string) {
	t.Helper()
	for i := range n {
		if _, err := s.Send(context.Background(), iothub.Identity{Hub: hub, DeviceID: "dev-1", Method: "sas"}, dps.Message{MessageID: fmt.Sprintf("%s%d", prefix, i+1), Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
}

func ids(p iothub.EventPage) string {
	var out []string
	for _, m := range p.Messages {
		out = append(out, fmt.Sprintf("%s:%d", m.MessageID, m.Seq))
	}
	return fmt.Sprintf("%v next=%d first=%d skipped=%d", out, p.Next, p.First, p.Skipped)
}

// TestEventsRead: a read returns the messages from a position, at most
// max, with the position of the next read; the hub named in any case;
// FromEnd reads only what comes next; a position older than the log
// keeps starts at its oldest message and says how many went.
func TestEventsRead(t *testing.T) {
	st := dpstest.NewSQLite(t)
	s := eventHub(t, st, iothub.Options{})
	ctx := context.Background()
	read := func(from int64, limit int) string {
		t.Helper()
		p, err := s.Events(ctx, strings.ToUpper(hub), from, limit, 0)
		if err != nil {
			t.Fatal(err)
		}
		return ids(p)
	}
	if got, want := read(0, 0), "[] next=1 first=1 skipped=0"; got != want {
		t.Errorf("empty log: %s, want %s", got, want)
	}
	sendN(t, s, 5, "m")
	for _, tc := range []struct {
		from  int64
		limit int
		want  string
	}{
		{0, 0, "[m1:1 m2:2 m3:3 m4:4 m5:5] next=6 first=1 skipped=0"},
		{1, 2, "[m1:1 m2:2] next=3 first=1 skipped=0"},
		{3, 2, "[m3:3 m4:4] next=5 first=1 skipped=0"},
		{6, 10, "[] next=6 first=1 skipped=0"},
		{9, 10, "[] next=9 first=1 skipped=0"},
		{iothub.FromEnd, 10, "[] next=6 first=1 skipped=0"},
	} {
		if got := read(tc.from, tc.limit); got != tc.want {
			t.Errorf("from %d max %d: %s, want %s", tc.from, tc.limit, got, tc.want)
		}
	}
	if _, err := st.TrimMessages(ctx, hub, 2); err != nil {
		t.Fatal(err)
	}
	if got, want := read(1, 2), "[m4:4 m5:5] next=6 first=4 skipped=3"; got != want {
		t.Errorf("after retention: %s, want %s", got, want)
	}
	if _, err := st.TrimMessages(ctx, hub, 0); err != nil {
		t.Fatal(err)
	}
	if got, want := read(2, 0), "[] next=6 first=6 skipped=4"; got != want {
		t.Errorf("after retention emptied the log: %s, want %s", got, want)
	}
	for _, bad := range []struct {
		from  int64
		limit int
	}{{0, -1}, {0, iothub.MaxEventPage + 1}, {-2, 0}} {
		if _, err := s.Events(ctx, hub, bad.from, bad.limit, 0); dps.KindOf(err) != dps.KindInvalid {
			t.Errorf("from %d max %d: %v, want invalid", bad.from, bad.limit, err)
		}
	}
	if _, err := s.Events(ctx, "nope.example.test", 0, 0, 0); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("another hub: %v, want not found", err)
	}
	if _, err := iothub.New(iothub.Options{Store: st, Hubs: []string{hub}}).Events(ctx, hub, 0, 0, 0); dps.KindOf(err) != dps.KindNotFound {
		t.Errorf("a hub without Events: %v, want not found", err)
	}
}

// TestEventsPageBytes: a page holds at most MaxEventPageBytes of
// messages, and at least one however large.
func TestEventsPageBytes(t *testing.T) {
	st := dpstest.NewSQLite(t)
	s := eventHub(t, st, iothub.Options{MaxMessageSize: 4 << 20})
	big := bytes.Repeat([]byte("b"), 3<<20)
	for i := range 3 {
		if _, err := s.Send(context.Background(), iothub.Identity{Hub: hub, DeviceID: "dev-1"}, dps.Message{MessageID: fmt.Sprint("big", i), Body: big}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.Events(context.Background(), hub, 1, 0, 0)
	if err != nil || len(p.Messages) != 1 || p.Next != 2 {
		t.Errorf("page of 3 MB messages: %s, %v; want one", ids(p), err)
	}
}

// TestEventsLongPoll: a read with wait returns as soon as Send on this
// node appends a message — at once, not at the next poll; a message
// another node appended (straight into the store) is found within a
// second; with none, the read returns empty when wait passes; a read of
// another hub is not woken.
func TestEventsLongPoll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := dpstest.NewSQLite(t)
		s := eventHub(t, st, iothub.Options{})
		ctx := context.Background()
		type result struct {
			p       iothub.EventPage
			err     error
			elapsed time.Duration
		}
		read := func(hub string, from int64, wait time.Duration) <-chan result {
			ch := make(chan result, 1)
			go func() {
				start := time.Now()
				p, err := s.Events(ctx, hub, from, 0, wait)
				ch <- result{p, err, time.Since(start)}
			}()
			return ch
		}

		waiting := read(hub, 1, 30*time.Second)
		other := read("other.example.test", 1, 30*time.Second)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		select {
		case r := <-waiting:
			t.Fatalf("returned before any message: %s, %v", ids(r.p), r.err)
		default:
		}
		sendN(t, s, 1, "woke")
		synctest.Wait()
		select {
		case r := <-waiting:
			if r.err != nil || ids(r.p) != "[woke1:1] next=2 first=1 skipped=0" || r.elapsed != 10*time.Second {
				t.Errorf("woken read: %s, %v after %s; want woke1 after 10s exactly", ids(r.p), r.err, r.elapsed)
			}
		default:
			t.Fatal("Send did not wake the reader")
		}
		select {
		case r := <-other:
			t.Errorf("a read of another hub returned: %s", ids(r.p))
		default:
		}
		if r := <-other; r.err != nil || len(r.p.Messages) != 0 || r.elapsed != 30*time.Second || r.p.Next != 1 {
			t.Errorf("read with nothing to read: %s, %v after %s; want empty after 30s", ids(r.p), r.err, r.elapsed)
		}

		// Another node's append: found by polling the store.
		waiting = read(hub, 2, 30*time.Second)
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		if _, err := st.AppendMessages(ctx, []dps.Message{{Hub: hub, DeviceID: "dev-2", MessageID: "remote"}}); err != nil {
			t.Fatal(err)
		}
		if r := <-waiting; r.err != nil || ids(r.p) != "[remote:2] next=3 first=1 skipped=0" || r.elapsed != 3*time.Second {
			t.Errorf("read of another node's message: %s, %v after %s; want it at the next poll (3s)", ids(r.p), r.err, r.elapsed)
		}

		// A wait over the limit is cut to MaxEventWait; a canceled read ends.
		if r := <-read(hub, 3, time.Hour); r.elapsed != iothub.MaxEventWait {
			t.Errorf("wait of an hour lasted %s, want %s", r.elapsed, iothub.MaxEventWait)
		}
		// EndEventWaits ends a wait at once, and every later one.
		waiting = read(hub, 3, 30*time.Second)
		time.Sleep(time.Second / 2)
		s.EndEventWaits()
		if r := <-waiting; r.err != nil || len(r.p.Messages) != 0 || r.elapsed != time.Second/2 {
			t.Errorf("a wait at EndEventWaits: %s, %v after %s; want empty at once", ids(r.p), r.err, r.elapsed)
		}
		if r := <-read(hub, 3, 30*time.Second); r.err != nil || r.elapsed != 0 {
			t.Errorf("a wait after EndEventWaits: %v after %s; want at once", r.err, r.elapsed)
		}
		s = eventHub(t, st, iothub.Options{})
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { _, err := s.Events(cctx, hub, 3, 0, 30*time.Second); done <- err }()
		time.Sleep(time.Second / 2)
		cancel()
		if err := <-done; err == nil {
			t.Error("a canceled read returned no error")
		}
	})
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRetentionSweeps: RunRetention sweeps at once and then every
// interval; messages older than the retention age go, and those beyond
// the newest Retention.Messages, from the start of the log only, per hub;
// each sweep that deleted something logs the counts at debug; a reader
// finds no gap.
func TestRetentionSweeps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, oerr := sqlite.OpenWith(context.Background(), filepath.Join(t.TempDir(), "dps.db"), sqlite.Options{PruneBatch: 2})
		if oerr != nil {
			t.Fatal(oerr)
		}
		t.Cleanup(func() { st.Close() })
		var logs syncBuffer
		s := eventHub(t, st, iothub.Options{Retention: iothub.Retention{Age: time.Hour, Messages: 5, Interval: time.Minute},
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		sendN(t, s, 3, "old")
		time.Sleep(50 * time.Minute)
		sendN(t, s, 8, "new")
		if _, err := st.AppendMessages(ctx, []dps.Message{{Hub: "other.example.test", DeviceID: "d", MessageID: "o1"}}); err != nil {
			t.Fatal(err)
		}
		go func() { s.RunRetention(ctx); close(done) }()
		synctest.Wait()
		// At once: only the count applies (the oldest are 50 minutes old).
		p, err := s.Events(ctx, hub, 1, 0, 0)
		if err != nil || ids(p) != "[new4:7 new5:8 new6:9 new7:10 new8:11] next=12 first=7 skipped=6" {
			t.Errorf("after the first sweep: %s, %v", ids(p), err)
		}
		if !strings.Contains(logs.String(), "deleted_by_age=0 deleted_by_count=6") {
			t.Errorf("the sweep did not log its counts at debug:\n%s", logs.String())
		}
		// The sweep a minute after the newest messages turned an hour old
		// deletes them by age.
		time.Sleep(70*time.Minute + time.Second)
		synctest.Wait()
		p, err = s.Events(ctx, hub, 1, 0, 0)
		if err != nil || ids(p) != "[] next=12 first=12 skipped=11" {
			t.Errorf("after the messages aged: %s, %v", ids(p), err)
		}
		if !strings.Contains(logs.String(), "deleted_by_age=5 deleted_by_count=0") {
			t.Errorf("the age sweep did not log its counts:\n%s", logs.String())
		}
		if o, _ := st.Messages(ctx, "other.example.test", 0, 0); len(o) != 0 {
			t.Errorf("the other hub's message outlived its retention: %v", o)
		}
		cancel()
		<-done
	})
}
