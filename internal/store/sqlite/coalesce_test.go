package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/store/sqlite"
)

// The writer writes the appends of one batch together: one advance of each
// hub's counter and multi-row INSERTs. These tests hold the writer while
// appends queue, so that they make up its next batch in a known order.
// Triggers of the test's own count the counter's advances and refuse
// ("poison") the messages whose document says so: a write failing inside
// SQLite, as a real one would.

const testTriggers = `
CREATE TABLE test_advances (hub TEXT NOT NULL);
CREATE TRIGGER test_advance_insert AFTER INSERT ON hub_message_seqs BEGIN INSERT INTO test_advances VALUES (NEW.hub); END;
CREATE TRIGGER test_advance_update AFTER UPDATE ON hub_message_seqs BEGIN INSERT INTO test_advances VALUES (NEW.hub); END;
CREATE TRIGGER test_poison BEFORE INSERT ON hub_messages WHEN instr(CAST(NEW.doc AS TEXT), 'poison') > 0
	BEGIN SELECT RAISE(ABORT, 'poisoned message'); END;`

func openCoalesce(t *testing.T) *sqlite.DB {
	t.Helper()
	db := open(t, filepath.Join(t.TempDir(), "dps.db"))
	if err := db.ExecSQL(context.Background(), testTriggers); err != nil {
		t.Fatal(err)
	}
	return db
}

type appended struct {
	out []dps.Message
	err error
}

// queueAppend starts an append and returns once it waits in the writer's
// queue (behind the ones queued before it).
func queueAppend(t *testing.T, db *sqlite.DB, ctx context.Context, msgs ...dps.Message) <-chan appended {
	t.Helper()
	n := db.Queued()
	ch := make(chan appended, 1)
	go func() {
		out, err := db.AppendMessages(ctx, msgs)
		ch <- appended{out, err}
	}()
	waitQueued(t, db, n+1)
	return ch
}

func waitQueued(t *testing.T, db *sqlite.DB, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); db.Queued() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes queued, want %d", db.Queued(), n)
		}
	}
}

func msg(hub, id string) dps.Message {
	return dps.Message{Hub: hub, DeviceID: "dev", MessageID: id, Properties: map[string]string{"k": id}, Body: []byte(`{"id":"` + id + `"}`)}
}

// ids are "id:seq" of messages.
func ids(msgs []dps.Message) string {
	s := make([]string, len(msgs))
	for i, m := range msgs {
		s[i] = fmt.Sprintf("%s:%d", m.MessageID, m.Seq)
	}
	return strings.Join(s, " ")
}

func wantAppended(t *testing.T, name string, ch <-chan appended, want string) []dps.Message {
	t.Helper()
	a := <-ch
	if a.err != nil || ids(a.out) != want {
		t.Errorf("%s: %s, %v; want %s", name, ids(a.out), a.err, want)
	}
	return a.out
}

func wantLog(t *testing.T, db *sqlite.DB, hub string, want ...dps.Message) {
	t.Helper()
	got, err := db.Messages(context.Background(), hub, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s's log: %s, want %s", hub, ids(got), ids(want))
	}
	if last, err := db.LastMessageSeq(context.Background(), hub); err != nil || (len(want) > 0 && last != want[len(want)-1].Seq) {
		t.Errorf("%s: last Seq %d, %v; want that of the last message", hub, last, err)
	}
}

// wantAdvances checks how many times each hub's counter was advanced by
// committed writes.
func wantAdvances(t *testing.T, db *sqlite.DB, want string) {
	t.Helper()
	var got []string
	for _, h := range []string{"a.example.net", "b.example.net", "c.example.net"} {
		var n int
		if err := db.QueryRowForTest(context.Background(), `SELECT count(*) FROM test_advances WHERE hub = ?`, h).Scan(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%c:%d", h[0], n))
	}
	if g := strings.Join(got, " "); g != want {
		t.Errorf("counter advances %s, want %s", g, want)
	}
}

// TestAppendBatchOneFailsAlone: an append refused inside SQLite, in a batch
// with others, fails alone; the others are written with the Seqs they
// would have had without it (no gap), in the order queued.
func TestAppendBatchOneFailsAlone(t *testing.T) {
	db := openCoalesce(t)
	release := db.HoldWriter()
	r1 := queueAppend(t, db, context.Background(), msg("a.example.net", "r1"))
	r2 := queueAppend(t, db, context.Background(), msg("a.example.net", "r2"), msg("b.example.net", "r2-poison"))
	r3 := queueAppend(t, db, context.Background(), msg("B.example.net", "r3-b"), msg("a.example.net", "r3-a"))
	r4 := queueAppend(t, db, context.Background(), msg("a.example.net", "r4"))
	release()
	out1 := wantAppended(t, "r1", r1, "r1:1")
	if a := <-r2; a.err == nil || !strings.Contains(a.err.Error(), "poisoned message") || a.out != nil {
		t.Errorf("the poisoned append: %s, %v; want its error", ids(a.out), a.err)
	}
	out3 := wantAppended(t, "r3", r3, "r3-b:1 r3-a:2")
	out4 := wantAppended(t, "r4", r4, "r4:3")
	wantLog(t, db, "a.example.net", out1[0], out3[1], out4[0])
	wantLog(t, db, "b.example.net", out3[0])
	// Written together, failed, then one at a time: the counters advanced
	// by each good append alone.
	wantAdvances(t, db, "a:3 b:1 c:0")

	// Alone in its batch, it fails as well, and the next append continues
	// the Seqs.
	if _, err := db.AppendMessages(context.Background(), []dps.Message{msg("a.example.net", "poison-alone")}); err == nil {
		t.Error("a poisoned append alone was written")
	}
	out, err := db.AppendMessages(context.Background(), []dps.Message{msg("a.example.net", "next")})
	if err != nil || ids(out) != "next:4" {
		t.Errorf("next append: %s, %v; want next:4", ids(out), err)
	}
}

// TestAppendBatchContextDone: an append whose context is done by the time
// the writer takes it fails with its context's error and uses no Seq; the
// others of its batch are written together.
func TestAppendBatchContextDone(t *testing.T) {
	db := openCoalesce(t)
	release := db.HoldWriter()
	ctx, cancel := context.WithCancel(context.Background())
	r1 := queueAppend(t, db, context.Background(), msg("a.example.net", "r1"))
	r2 := queueAppend(t, db, ctx, msg("a.example.net", "r2"))
	r3 := queueAppend(t, db, context.Background(), msg("a.example.net", "r3"), msg("b.example.net", "r3-b"))
	cancel()
	release()
	out1 := wantAppended(t, "r1", r1, "r1:1")
	if a := <-r2; !errors.Is(a.err, context.Canceled) || a.out != nil {
		t.Errorf("the cancelled append: %s, %v; want context.Canceled", ids(a.out), a.err)
	}
	out3 := wantAppended(t, "r3", r3, "r3:2 r3-b:1")
	wantLog(t, db, "a.example.net", out1[0], out3[0])
	wantLog(t, db, "b.example.net", out3[1])
	wantAdvances(t, db, "a:1 b:1 c:0")
}

// TestAppendBatchHubs: appends to several hubs in one batch, some to
// several hubs each (a hub in any case): each hub's counter advanced once,
// its messages numbered in the order of the appends and each append's in
// its order, read back as returned.
func TestAppendBatchHubs(t *testing.T) {
	db := openCoalesce(t)
	if _, err := db.AppendMessages(context.Background(), []dps.Message{msg("b.example.net", "b-before")}); err != nil {
		t.Fatal(err)
	}
	release := db.HoldWriter()
	r1 := queueAppend(t, db, context.Background(), msg("a.example.net", "r1-a"), msg("b.example.net", "r1-b"))
	r2 := queueAppend(t, db, context.Background(), msg("c.example.net", "r2-c"))
	r3 := queueAppend(t, db, context.Background(), msg("B.EXAMPLE.net", "r3-b"), msg("a.example.net", "r3-a1"), msg("A.example.net", "r3-a2"))
	r4 := queueAppend(t, db, context.Background(), msg("b.example.net", "r4-b"))
	release()
	out1 := wantAppended(t, "r1", r1, "r1-a:1 r1-b:2")
	out2 := wantAppended(t, "r2", r2, "r2-c:1")
	out3 := wantAppended(t, "r3", r3, "r3-b:3 r3-a1:2 r3-a2:3")
	out4 := wantAppended(t, "r4", r4, "r4-b:4")
	for _, out := range [][]dps.Message{out1, out2, out3, out4} {
		for _, m := range out {
			if m.Enqueued.IsZero() || m.Enqueued.Location() != time.UTC || m.Enqueued != out1[0].Enqueued {
				t.Errorf("%s: enqueued %v, want the batch's time in UTC", m.MessageID, m.Enqueued)
			}
		}
	}
	wantLog(t, db, "a.example.net", out1[0], out3[1], out3[2])
	before, err := db.Messages(context.Background(), "b.example.net", 0, 1)
	if err != nil || len(before) != 1 {
		t.Fatal(before, err)
	}
	wantLog(t, db, "b.example.net", before[0], out1[1], out3[0], out4[0])
	wantLog(t, db, "c.example.net", out2[0])
	wantAdvances(t, db, "a:1 b:2 c:1") // b's first advance was the append before the batch
}

// TestAppendBatchAroundOtherWrites: appends are written together only up
// to another write in the batch, which sees the appends queued before it
// and none after.
func TestAppendBatchAroundOtherWrites(t *testing.T) {
	db := openCoalesce(t)
	release := db.HoldWriter()
	r1 := queueAppend(t, db, context.Background(), msg("a.example.net", "m1"), msg("a.example.net", "m2"), msg("a.example.net", "m3"))
	n := db.Queued()
	trimmed := make(chan int64, 1)
	go func() {
		n, err := db.TrimMessages(context.Background(), "a.example.net", 1)
		if err != nil {
			t.Error(err)
		}
		trimmed <- n
	}()
	waitQueued(t, db, n+1)
	r2 := queueAppend(t, db, context.Background(), msg("a.example.net", "m4"))
	r3 := queueAppend(t, db, context.Background(), msg("a.example.net", "m5"))
	release()
	out1 := wantAppended(t, "r1", r1, "m1:1 m2:2 m3:3")
	if n := <-trimmed; n != 2 {
		t.Errorf("trimmed %d messages, want the 2 before the last of the appends queued before it", n)
	}
	out2 := wantAppended(t, "r2", r2, "m4:4")
	out3 := wantAppended(t, "r3", r3, "m5:5")
	wantLog(t, db, "a.example.net", out1[2], out2[0], out3[0])
	wantAdvances(t, db, "a:2 b:0 c:0")
}

// TestAppendLargeBatch: a batch of appends with more messages than one
// INSERT takes, of sizes that need each prepared statement, reads back
// whole and in order.
func TestAppendLargeBatch(t *testing.T) {
	db := openCoalesce(t)
	release := db.HoldWriter()
	var chans []<-chan appended
	var want []string
	seq := 0
	for i, n := range []int{1, 70, 3, 64, 127, 2, 9} {
		var msgs []dps.Message
		for k := range n {
			seq++
			id := fmt.Sprintf("r%d-%d", i, k)
			msgs = append(msgs, msg("a.example.net", id))
			want = append(want, fmt.Sprintf("%s:%d", id, seq))
		}
		chans = append(chans, queueAppend(t, db, context.Background(), msgs...))
	}
	release()
	var all []dps.Message
	for i, ch := range chans {
		a := <-ch
		if a.err != nil {
			t.Fatalf("append %d: %v", i, a.err)
		}
		all = append(all, a.out...)
	}
	if got := ids(all); got != strings.Join(want, " ") {
		t.Errorf("appended %s\nwant %s", got, strings.Join(want, " "))
	}
	wantLog(t, db, "a.example.net", all...)
	wantAdvances(t, db, "a:1 b:0 c:0")
}
