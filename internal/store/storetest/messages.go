package storetest

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// message is a device-to-cloud message as a hub hands it to its store.
func message(hub, device, id string) dps.Message {
	return dps.Message{Hub: hub, DeviceID: device, MessageID: id, ContentType: "application/json", ContentEncoding: "utf-8",
		Properties: map[string]string{"id": id, "html": "<&>"},
		System:     map[string]string{"iothub-connection-device-id": device, "iothub-connection-auth-method": `{"scope":"device","type":"sas","issuer":"iothub"}`},
		Body:       []byte(`{"n":"` + id + `"}`)}
}

// seqs are the IDs and Seqs of messages, "id:seq", for messages.
func seqs(msgs []dps.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%s:%d", m.MessageID, m.Seq)
	}
	return out
}

func readLog(t *testing.T, s Store, hub string) []dps.Message {
	t.Helper()
	var all []dps.Message
	for after := int64(0); ; {
		page, err := s.Messages(ctx(), hub, after, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].Seq
	}
}

func lastSeq(t *testing.T, s Store, hub string, want int64) {
	t.Helper()
	if n, err := s.LastMessageSeq(ctx(), hub); err != nil || n != want {
		t.Errorf("LastMessageSeq(%q) = %d, %v; want %d", hub, n, err, want)
	}
}

func sameSeqs(t *testing.T, what string, got []dps.Message, want ...string) {
	t.Helper()
	if g := seqs(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("%s: %v, want %v", what, g, want)
	}
}

// testMessagesAppend: each message gets the next Seq of its hub (from 1,
// in the order given, the hub compared case-insensitively), several hubs
// in one call, continued by the next call; reads return the messages as
// appended, in Seq order, each hub's own.
func testMessagesAppend(t *testing.T, f Factory) {
	s := f.New(t)
	if out, err := s.AppendMessages(ctx(), nil); err != nil || out != nil {
		t.Errorf("empty append = %v, %v", out, err)
	}
	lastSeq(t, s, "hub-a.example.net", 0)
	enq := time.Date(2025, 6, 1, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	batch := []dps.Message{
		message("Hub-A.example.net", "Dev-1", "a1"),
		message("hub-b.example.net", "dev-2", "b1"),
		message("HUB-A.example.net", "dev-1", "a2"),
		message("hub-a.example.net", "dev-3", "a3"),
		message("hub-b.example.net", "dev-2", "b2"),
	}
	batch[0].Enqueued, batch[0].ModuleID, batch[0].CorrelationID, batch[0].UserID = enq, "mod-1", "corr-1", "user-1"
	batch[1].Body = nil                                // no body
	batch[2].Body, batch[2].Properties = []byte{}, nil // an empty body, no properties
	batch[3].Properties, batch[3].System = map[string]string{}, nil
	before := time.Now()
	out, err := s.AppendMessages(ctx(), batch)
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, "appended", out, "a1:1", "b1:1", "a2:2", "a3:3", "b2:2")
	for i, m := range out {
		if i == 0 {
			if !m.Enqueued.Equal(enq) || m.Enqueued.Location() != time.UTC {
				t.Errorf("a given enqueued time came back as %v, want %v in UTC", m.Enqueued, enq)
			}
		} else if m.Enqueued.Before(before.Add(-time.Second)) || m.Enqueued.After(after.Add(time.Second)) || m.Enqueued.Location() != time.UTC {
			t.Errorf("%s: enqueued %v, want the time of the append in UTC", m.MessageID, m.Enqueued)
		}
		in := batch[i]
		in.Seq, in.Enqueued = m.Seq, m.Enqueued
		if !reflect.DeepEqual(m, in) || (m.Body == nil) != (in.Body == nil) {
			t.Errorf("appended\n%#v\nwant\n%#v", m, in)
		}
	}
	if batch[0].Seq != 0 || !batch[1].Enqueued.IsZero() {
		t.Error("AppendMessages changed the caller's messages")
	}
	more, err := s.AppendMessages(ctx(), []dps.Message{message("hub-a.example.net", "dev-1", "a4")})
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, "next call", more, "a4:4")

	a, err := s.Messages(ctx(), "hub-A.EXAMPLE.net", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []dps.Message{out[0], out[2], out[3], more[0]}; !reflect.DeepEqual(a, want) {
		t.Errorf("hub a's log\n%#v\nwant\n%#v", a, want)
	}
	if len(a) == 4 && (a[1].Body == nil || a[1].Properties != nil || a[2].Properties == nil || a[2].System != nil) {
		t.Errorf("empty and nil members were not kept apart: %#v", a[1:3])
	}
	b, err := s.Messages(ctx(), "hub-b.example.net", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []dps.Message{out[1], out[4]}; !reflect.DeepEqual(b, want) || b[0].Body != nil {
		t.Errorf("hub b's log\n%#v\nwant\n%#v", b, want)
	}
	lastSeq(t, s, "HUB-A.example.net", 4)
	lastSeq(t, s, "hub-b.example.net", 2)
	lastSeq(t, s, "hub-c.example.net", 0)
	if c, err := s.Messages(ctx(), "hub-c.example.net", 0, 0); err != nil || len(c) != 0 {
		t.Errorf("a hub without messages = %v, %v", c, err)
	}
}

// testMessagesPaging: Messages returns the messages after a position, at
// most limit of them (limit ≤ 0: the default page size), in Seq order.
func testMessagesPaging(t *testing.T, f Factory) {
	s := f.New(t)
	const hub = "page.example.net"
	i := 0
	for _, n := range []int{1, 4, 7, 13} {
		var batch []dps.Message
		for range n {
			i++
			batch = append(batch, message(hub, "dev", fmt.Sprintf("m%d", i)), message("other.example.net", "dev", fmt.Sprintf("o%d", i)))
		}
		if _, err := s.AppendMessages(ctx(), batch); err != nil {
			t.Fatal(err)
		}
	}
	var sizes []int
	var got []dps.Message
	for after := int64(0); len(sizes) < 10; {
		page, err := s.Messages(ctx(), hub, after, 10)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(page))
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1].Seq
	}
	if fmt.Sprint(sizes) != "[10 10 5 0]" {
		t.Errorf("pages of 10: sizes %v, want [10 10 5 0]", sizes)
	}
	for i, m := range got {
		if m.Seq != int64(i+1) || m.MessageID != fmt.Sprintf("m%d", i+1) || m.Hub != hub {
			t.Errorf("message %d of the log: %s:%d on %s", i, m.MessageID, m.Seq, m.Hub)
		}
	}
	if page, err := s.Messages(ctx(), hub, 20, 3); err != nil {
		t.Fatal(err)
	} else {
		sameSeqs(t, "3 after 20", page, "m21:21", "m22:22", "m23:23")
	}
	if page, _ := s.Messages(ctx(), hub, 25, 10); len(page) != 0 {
		t.Errorf("after the last message: %v", seqs(page))
	}
	if page, _ := s.Messages(ctx(), hub, -1, 0); len(page) != 25 {
		t.Errorf("from before the first message: %d messages, want 25", len(page))
	}
	// No limit: the default page size.
	big := make([]dps.Message, 1001)
	for i := range big {
		big[i] = message("big.example.net", "dev", fmt.Sprintf("big-%d", i))
	}
	if _, err := s.AppendMessages(ctx(), big); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{0, -1} {
		page, err := s.Messages(ctx(), "big.example.net", 0, limit)
		if err != nil || len(page) != 1000 || page[999].Seq != 1000 {
			t.Errorf("limit %d: %d messages, %v; want the first 1000", limit, len(page), err)
		}
	}
}

// testMessagesAllOrNothing: a batch with a message that names no hub or
// no device is refused as invalid and writes none of its messages, nor
// uses any Seq.
func testMessagesAllOrNothing(t *testing.T, f Factory) {
	s := f.New(t)
	const hub = "all.example.net"
	for _, bad := range []dps.Message{{DeviceID: "dev"}, {Hub: hub}} {
		_, err := s.AppendMessages(ctx(), []dps.Message{message(hub, "dev", "ok-1"), bad, message(hub, "dev", "ok-2")})
		kind(t, fmt.Sprintf("batch with %+v", bad), err, dps.KindInvalid)
	}
	lastSeq(t, s, hub, 0)
	if got := readLog(t, s, hub); len(got) != 0 {
		t.Errorf("a refused batch wrote %v", seqs(got))
	}
	// Refused batches among accepted ones, concurrently.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			batch := []dps.Message{message(hub, "dev", fmt.Sprintf("w%d-1", i)), message(hub, "dev", fmt.Sprintf("w%d-2", i))}
			if i%2 == 1 {
				batch = append(batch, dps.Message{Hub: hub})
			}
			if _, err := s.AppendMessages(ctx(), batch); (err == nil) != (i%2 == 0) {
				t.Errorf("batch %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	got := readLog(t, s, hub)
	for i, m := range got {
		var w, k int
		if _, err := fmt.Sscanf(m.MessageID, "w%d-%d", &w, &k); err != nil || w%2 == 1 || m.Seq != int64(i+1) {
			t.Errorf("log position %d: %s:%d (%v)", i+1, m.MessageID, m.Seq, err)
		}
	}
	if len(got) != 20 {
		t.Errorf("%d messages in the log, want the 20 of the accepted batches", len(got))
	}
	lastSeq(t, s, hub, 20)
}

// testMessagesConcurrent: appends through two handles at once (two nodes)
// give every message of a hub its own Seq, gap-free, a call's messages of
// a hub consecutive in the order given; and a reader following the log
// while they run never finds a gap (a message committed later than one
// with a higher Seq would be one).
func testMessagesConcurrent(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	hubs := []string{"conc.example.net", "conc-2.example.net"}
	const writers, calls = 6, 8
	total := map[string]int64{}
	for w := range writers {
		for c := range calls {
			total[hubs[0]] += int64(1 + (w+c)%3)
			if c%2 == 0 {
				total[hubs[1]]++
			}
		}
	}
	var mu sync.Mutex
	ids := map[string]map[int64]string{hubs[0]: {}, hubs[1]: {}} // hub → Seq → message ID
	var readers sync.WaitGroup
	for i, hub := range hubs {
		rd := []Store{other, s}[i]
		readers.Go(func() {
			deadline := time.Now().Add(60 * time.Second)
			for after := int64(0); after < total[hub]; {
				if time.Now().After(deadline) {
					t.Errorf("%s: the reader reached only Seq %d of %d", hub, after, total[hub])
					return
				}
				page, err := rd.Messages(ctx(), hub, after, 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(page) == 0 {
					time.Sleep(time.Millisecond)
				}
				for _, m := range page {
					if m.Seq != after+1 {
						t.Errorf("%s: the reader found Seq %d after %d", hub, m.Seq, after)
						return
					}
					after = m.Seq
				}
			}
		})
	}
	var wg sync.WaitGroup
	for w := range writers {
		st := []Store{s, other}[w%2]
		wg.Go(func() {
			for c := range calls {
				var batch []dps.Message
				for k := range 1 + (w+c)%3 {
					h := hubs[0]
					if k == 1 {
						h = "CONC.example.net"
					}
					batch = append(batch, message(h, "dev", fmt.Sprintf("w%d-c%d-k%d", w, c, k)))
				}
				if c%2 == 0 {
					batch = append([]dps.Message{message(hubs[1], "dev", fmt.Sprintf("w%d-c%d-x", w, c))}, batch...)
				}
				out, err := st.AppendMessages(ctx(), batch)
				if err != nil {
					t.Error(err)
					return
				}
				prev := map[string]int64{}
				mu.Lock()
				for _, m := range out {
					h := dps.FoldID(m.Hub)
					if p, ok := prev[h]; ok && m.Seq != p+1 {
						t.Errorf("call %d/%d: %s got Seq %d after %d in the same call", w, c, h, m.Seq, p)
					}
					prev[h] = m.Seq
					if id, dup := ids[h][m.Seq]; dup {
						t.Errorf("%s: Seq %d given to %s and %s", h, m.Seq, id, m.MessageID)
					}
					ids[h][m.Seq] = m.MessageID
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	readers.Wait()
	for _, hub := range hubs {
		if int64(len(ids[hub])) != total[hub] {
			t.Errorf("%s: %d Seqs given, want %d", hub, len(ids[hub]), total[hub])
		}
		log := readLog(t, other, hub)
		if int64(len(log)) != total[hub] {
			t.Errorf("%s: %d messages in the log, want %d", hub, len(log), total[hub])
		}
		for i, m := range log {
			if m.Seq != int64(i+1) || ids[hub][m.Seq] != m.MessageID {
				t.Errorf("%s: log position %d holds %s:%d, the append returned %s for it", hub, i+1, m.MessageID, m.Seq, ids[hub][int64(i+1)])
			}
		}
		lastSeq(t, s, hub, total[hub])
		lastSeq(t, other, hub, total[hub])
	}
}

// testMessagesRetentionByTime: DeleteMessagesBefore deletes, from the
// start of a hub's log (the hub in any case), the messages enqueued before
// a time up to the first one enqueued later — never one behind it, which
// would leave a gap — and never another hub's; Seq continues.
func testMessagesRetentionByTime(t *testing.T, f Factory) {
	s := f.New(t)
	now := time.Now().UTC()
	at := func(m dps.Message, ago time.Duration) dps.Message { m.Enqueued = now.Add(-ago); return m }
	_, err := s.AppendMessages(ctx(), []dps.Message{
		at(message("a.example.net", "dev", "a1"), 3*time.Hour),
		at(message("b.example.net", "dev", "b1"), 150*time.Minute),
		at(message("a.example.net", "dev", "a2"), 2*time.Hour),
		at(message("a.example.net", "dev", "a3"), time.Minute),
		at(message("a.example.net", "dev", "a4"), 90*time.Minute), // old, but behind a3
		at(message("b.example.net", "dev", "b2"), 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.DeleteMessagesBefore(ctx(), "A.example.NET", now.Add(-time.Hour)); err != nil || n != 2 {
		t.Errorf("deleted %d, %v; want the 2 messages older than an hour before a3", n, err)
	}
	if n, err := s.DeleteMessagesBefore(ctx(), "a.example.net", now.Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("second delete: %d, %v; want 0", n, err)
	}
	sameSeqs(t, "hub a", readLog(t, s, "a.example.net"), "a3:3", "a4:4")
	sameSeqs(t, "hub b, not swept", readLog(t, s, "b.example.net"), "b1:1", "b2:2")
	if n, err := s.DeleteMessagesBefore(ctx(), "b.example.net", now.Add(-time.Hour)); err != nil || n != 1 {
		t.Errorf("hub b: deleted %d, %v; want 1", n, err)
	}
	sameSeqs(t, "hub b", readLog(t, s, "b.example.net"), "b2:2")
	lastSeq(t, s, "a.example.net", 4)
	out, err := s.AppendMessages(ctx(), []dps.Message{message("a.example.net", "dev", "a5")})
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, "after the deletion", out, "a5:5")
	for _, hub := range []string{"a.example.net", "b.example.net"} {
		want := map[string]int64{"a.example.net": 3, "b.example.net": 1}[hub]
		if n, err := s.DeleteMessagesBefore(ctx(), hub, now.Add(time.Hour)); err != nil || n != want {
			t.Errorf("%s: deleted %d, %v; want every message (%d)", hub, n, err, want)
		}
	}
	lastSeq(t, s, "a.example.net", 5)
	lastSeq(t, s, "b.example.net", 2)
	if n, err := s.DeleteMessagesBefore(ctx(), "none.example.net", now.Add(time.Hour)); err != nil || n != 0 {
		t.Errorf("a hub without messages: %d, %v", n, err)
	}
	out, err = s.AppendMessages(ctx(), []dps.Message{message("b.example.net", "dev", "b3")})
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, "after the log was emptied", out, "b3:3")
}

// testMessagesRetentionByCount: TrimMessages keeps a hub's newest keep
// positions (the hub in any case) and deletes the older ones, never
// another hub's; Seq continues.
func testMessagesRetentionByCount(t *testing.T, f Factory) {
	s := f.New(t)
	for _, batch := range [][]string{{"a.example.net", "a.example.net", "b.example.net", "a.example.net", "a.example.net", "a.example.net", "a.example.net"}, {"b.example.net", "a.example.net", "a.example.net", "b.example.net", "a.example.net", "a.example.net"}} {
		var msgs []dps.Message
		for i, h := range batch {
			msgs = append(msgs, message(h, "dev", fmt.Sprintf("%c%d", h[0], i)))
		}
		if _, err := s.AppendMessages(ctx(), msgs); err != nil {
			t.Fatal(err)
		}
	}
	lastSeq(t, s, "a.example.net", 10)
	if n, err := s.TrimMessages(ctx(), "A.example.NET", 4); err != nil || n != 6 {
		t.Errorf("trimmed %d, %v; want 6", n, err)
	}
	var got []int64
	for _, m := range readLog(t, s, "a.example.net") {
		got = append(got, m.Seq)
	}
	if fmt.Sprint(got) != "[7 8 9 10]" {
		t.Errorf("hub a keeps Seqs %v, want [7 8 9 10]", got)
	}
	if b := readLog(t, s, "b.example.net"); len(b) != 3 {
		t.Errorf("another hub's messages were trimmed: %v", seqs(b))
	}
	for _, keep := range []int64{4, 100} {
		if n, err := s.TrimMessages(ctx(), "a.example.net", keep); err != nil || n != 0 {
			t.Errorf("trim keeping %d: %d, %v; want 0", keep, n, err)
		}
	}
	if n, err := s.TrimMessages(ctx(), "a.example.net", 0); err != nil || n != 4 {
		t.Errorf("trim keeping none: %d, %v; want 4", n, err)
	}
	lastSeq(t, s, "a.example.net", 10)
	out, err := s.AppendMessages(ctx(), []dps.Message{message("a.example.net", "dev", "a-next")})
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, "after the trim", out, "a-next:11")
	if n, err := s.TrimMessages(ctx(), "none.example.net", 1); err != nil || n != 0 {
		t.Errorf("trim of a hub without messages: %d, %v", n, err)
	}
	if n, err := s.TrimMessages(ctx(), "b.example.net", -1); err != nil || n != 3 {
		t.Errorf("trim keeping -1: %d, %v; want all 3 (as keeping none)", n, err)
	}
}

// testMessagesReopen: the log is in the database: another handle on it
// reads every message as appended, and continues the Seqs.
func testMessagesReopen(t *testing.T, f Factory) {
	s := f.New(t)
	batch := []dps.Message{message("r.example.net", "dev", "r1"), message("q.example.net", "dev", "q1"), message("r.example.net", "dev", "r2")}
	batch[0].Body, batch[2].Body = nil, []byte{}
	out, err := s.AppendMessages(ctx(), batch)
	if err != nil {
		t.Fatal(err)
	}
	other := f.Reopen(t, s)
	if got := readLog(t, other, "r.example.net"); !reflect.DeepEqual(got, []dps.Message{out[0], out[2]}) || got[0].Body != nil || got[1].Body == nil {
		t.Errorf("another handle reads\n%#v\nwant\n%#v", got, []dps.Message{out[0], out[2]})
	}
	if got := readLog(t, other, "q.example.net"); !reflect.DeepEqual(got, []dps.Message{out[1]}) {
		t.Errorf("another handle reads\n%#v\nwant\n%#v", got, []dps.Message{out[1]})
	}
	lastSeq(t, other, "r.example.net", 2)
	more, err := other.AppendMessages(ctx(), []dps.Message{message("r.example.net", "dev", "r3")})
	if err != nil {
		t.Fatal(err)
	}
	sameSeqs(t, "appended through another handle", more, "r3:3")
	sameSeqs(t, "the first handle reads", readLog(t, s, "r.example.net"), "r1:1", "r2:2", "r3:3")
}

// CheckMessagePruneBatch checks a store opened with a prune batch of 3
// deletes messages 3 at a time from the start of the log, by time and by
// count (the caller calls again after a full batch).
func CheckMessagePruneBatch(t *testing.T, s Store) {
	t.Helper()
	old := time.Now().UTC().Add(-48 * time.Hour)
	var msgs []dps.Message
	for i := range 8 {
		m := message("batch-a.example.net", "dev", fmt.Sprintf("a%d", i))
		m.Enqueued = old.Add(time.Duration(8-i) * time.Second) // enqueued times out of Seq order
		msgs = append(msgs, m)
	}
	msgs = append(msgs, message("batch-a.example.net", "dev", "recent"))
	if _, err := s.AppendMessages(ctx(), msgs); err != nil {
		t.Fatal(err)
	}
	var got []int64
	for i := range 4 {
		n, err := s.DeleteMessagesBefore(ctx(), "batch-a.example.net", time.Now().Add(-24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
		if i == 0 {
			sameSeqs(t, "after the first batch (the first 3 deleted)", readLog(t, s, "batch-a.example.net"), "a3:4", "a4:5", "a5:6", "a6:7", "a7:8", "recent:9")
		}
	}
	if fmt.Sprint(got) != "[3 3 2 0]" {
		t.Errorf("deleted by time %v in successive calls, want [3 3 2 0]", got)
	}
	msgs = msgs[:0]
	for i := range 9 {
		msgs = append(msgs, message("batch-b.example.net", "dev", fmt.Sprintf("b%d", i)))
	}
	if _, err := s.AppendMessages(ctx(), msgs); err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for i := range 4 {
		n, err := s.TrimMessages(ctx(), "batch-b.example.net", 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
		if i == 0 {
			if log := readLog(t, s, "batch-b.example.net"); len(log) != 6 || log[0].Seq != 4 {
				t.Errorf("after the first trim batch: %v, want the 3 oldest deleted", seqs(log))
			}
		}
	}
	if fmt.Sprint(got) != "[3 3 1 0]" {
		t.Errorf("trimmed %v in successive calls, want [3 3 1 0]", got)
	}
	sameSeqs(t, "trimmed log", readLog(t, s, "batch-b.example.net"), "b7:8", "b8:9")
	// A recent message inside the first batch stops the deletion there.
	msgs = msgs[:0]
	for i, ago := range []time.Duration{48 * time.Hour, 48 * time.Hour, 0, 48 * time.Hour, 48 * time.Hour} {
		m := message("batch-c.example.net", "dev", fmt.Sprintf("c%d", i))
		m.Enqueued = time.Now().UTC().Add(-ago)
		msgs = append(msgs, m)
	}
	if _, err := s.AppendMessages(ctx(), msgs); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int64{2, 0} {
		if n, err := s.DeleteMessagesBefore(ctx(), "batch-c.example.net", time.Now().Add(-24*time.Hour)); err != nil || n != want {
			t.Errorf("call %d on batch-c: deleted %d, %v; want %d", i, n, err, want)
		}
	}
	sameSeqs(t, "batch-c", readLog(t, s, "batch-c.example.net"), "c2:3", "c3:4", "c4:5")
	// A route's dead letters are trimmed 3 at a time too.
	msgs = msgs[:0]
	for i := range 9 {
		msgs = append(msgs, message("batch-d.example.net", "dev", fmt.Sprintf("d%d", i)))
	}
	msgs, err := s.AppendMessages(ctx(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, ok, err := s.ClaimRoute(ctx(), "batch-d.example.net", "r", "node-a", now, now.Add(time.Minute)); err != nil || !ok {
		t.Fatalf("claim: %v, %v", ok, err)
	}
	if err := s.DeadLetterMessages(ctx(), "batch-d.example.net", "r", "node-a", msgs, "poison", now); err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for range 4 {
		n, err := s.TrimDeadLetters(ctx(), "batch-d.example.net", "r", 2)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if fmt.Sprint(got) != "[3 3 1 0]" {
		t.Errorf("dead letters trimmed %v in successive calls, want [3 3 1 0]", got)
	}
	if dl, err := s.DeadLetters(ctx(), "batch-d.example.net", "r", 0, 0); err != nil || len(dl) != 2 || dl[0].Message.Seq != msgs[7].Seq {
		t.Errorf("dead letters left: %d, %v; want the newest 2", len(dl), err)
	}
}
