package storetest

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// Message routes: checkpoints that start at the end of the log and never
// go back, one lease holder at a time across handles (nodes), takeover
// after expiry or release, dead letters written with the checkpoint move
// under the lease, retention bounded by a checkpoint.

const routeHub = "Hub-R.example.net"

var routeT0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func appendN(t *testing.T, s Store, hub string, n int) []dps.Message {
	t.Helper()
	var msgs []dps.Message
	for i := range n {
		msgs = append(msgs, message(hub, fmt.Sprint("dev-", i%2), fmt.Sprint("m", i)))
	}
	out, err := s.AppendMessages(ctx(), msgs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func claim(t *testing.T, s Store, route, node string, now time.Time) (dps.RouteState, bool) {
	t.Helper()
	st, ok, err := s.ClaimRoute(ctx(), routeHub, route, node, now, now.Add(30*time.Second))
	if err != nil {
		t.Fatalf("claim %s by %s: %v", route, node, err)
	}
	return st, ok
}

// testRouteCheckpoints: a new route starts at the end of the hub's log
// (messages before it are not its own); the checkpoint moves on, never
// back; errors are recorded without moving Updated; Routes lists them.
func testRouteCheckpoints(t *testing.T, f Factory) {
	s := f.New(t)
	appendN(t, s, routeHub, 3)
	st, ok := claim(t, s, "r1", "node-a", routeT0)
	if !ok || st.Checkpoint != 3 || st.Owner != "node-a" || !st.LeaseUntil.Equal(routeT0.Add(30*time.Second)) || st.Route != "r1" {
		t.Fatalf("first claim = %+v, %v; want checkpoint 3 held by node-a", st, ok)
	}
	if st, ok := claim(t, s, "r0", "node-a", routeT0); !ok || st.Checkpoint != 3 {
		t.Errorf("second route = %+v, %v", st, ok)
	}
	other, _, err := s.ClaimRoute(ctx(), "hub-empty.example.net", "r1", "node-a", routeT0, routeT0.Add(time.Minute))
	if err != nil || other.Checkpoint != 0 {
		t.Errorf("route of a hub without messages = %+v, %v; want checkpoint 0", other, err)
	}
	at := routeT0.Add(time.Second)
	if err := s.AdvanceRoute(ctx(), "HUB-R.example.net", "r1", "node-a", 5, "", at); err != nil {
		t.Fatal(err)
	}
	if err := s.AdvanceRoute(ctx(), routeHub, "r1", "node-a", 4, "endpoint down", at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	routes, err := s.Routes(ctx(), "hub-r.EXAMPLE.net")
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 2 || routes[0].Route != "r0" || routes[1].Route != "r1" {
		t.Fatalf("routes = %+v; want r0, r1", routes)
	}
	r := routes[1]
	if r.Checkpoint != 5 || r.LastError != "endpoint down" || !r.LastErrorAt.Equal(at.Add(time.Second)) || !r.Updated.Equal(at) {
		t.Errorf("after advances = %+v; want checkpoint 5 (not back to 4), the error at +2s, updated at +1s", r)
	}
	if err := s.AdvanceRoute(ctx(), routeHub, "r1", "node-a", 6, "", at.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.AdvanceRoute(ctx(), routeHub, "r1", "node-a", 2, "", at.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	// A second handle (a restarted node) reads the same state.
	again, ok := claim(t, f.Reopen(t, s), "r1", "node-a", at.Add(3*time.Second))
	if !ok || again.Checkpoint != 6 || again.LastError != "endpoint down" {
		t.Errorf("reopened = %+v, %v; want checkpoint 6, the error kept", again, ok)
	}
	if rs, err := s.Routes(ctx(), "other.example.net"); err != nil || len(rs) != 0 {
		t.Errorf("routes of another hub = %v, %v", rs, err)
	}
}

// testRouteLeases: one node holds a route's lease at a time; the other
// cannot claim it nor move its checkpoint; after it expires (or is
// released) the other takes over and the first one's moves are refused.
func testRouteLeases(t *testing.T, f Factory) {
	a := f.New(t)
	b := f.Reopen(t, a)
	if _, ok := claim(t, a, "r", "node-a", routeT0); !ok {
		t.Fatal("node-a could not claim a new route")
	}
	st, ok := claim(t, b, "r", "node-b", routeT0.Add(time.Second))
	if ok || st.Owner != "node-a" {
		t.Errorf("node-b claimed a route node-a holds: %+v, %v", st, ok)
	}
	kind(t, "node-b advancing node-a's route", b.AdvanceRoute(ctx(), routeHub, "r", "node-b", 10, "", routeT0.Add(time.Second)), dps.KindPrecondition)
	if _, ok := claim(t, a, "r", "node-a", routeT0.Add(10*time.Second)); !ok {
		t.Error("node-a could not renew")
	}
	// node-a stops renewing: past its lease node-b takes over.
	if _, ok := claim(t, b, "r", "node-b", routeT0.Add(39*time.Second)); ok {
		t.Error("node-b took over before the renewed lease ended")
	}
	if _, ok := claim(t, b, "r", "node-b", routeT0.Add(40*time.Second)); !ok {
		t.Fatal("node-b could not take over an expired lease")
	}
	kind(t, "node-a advancing after the takeover", a.AdvanceRoute(ctx(), routeHub, "r", "node-a", 10, "", routeT0.Add(41*time.Second)), dps.KindPrecondition)
	kind(t, "node-a dead-lettering after the takeover", a.DeadLetterMessages(ctx(), routeHub, "r", "node-a",
		[]dps.Message{{Hub: routeHub, DeviceID: "d", Seq: 1}}, "x", routeT0.Add(41*time.Second)), dps.KindPrecondition)
	// node-b's own lease, past its end: a move is refused too.
	kind(t, "node-b advancing after its lease ended", b.AdvanceRoute(ctx(), routeHub, "r", "node-b", 10, "", routeT0.Add(71*time.Second)), dps.KindPrecondition)
	if err := b.AdvanceRoute(ctx(), routeHub, "r", "node-b", 10, "", routeT0.Add(42*time.Second)); err != nil {
		t.Fatal(err)
	}
	// A release hands it over at once.
	if err := a.ReleaseRoute(ctx(), routeHub, "r", "node-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := claim(t, a, "r", "node-a", routeT0.Add(43*time.Second)); ok {
		t.Error("node-a's release (it holds no lease) freed node-b's")
	}
	if err := b.ReleaseRoute(ctx(), routeHub, "r", "node-b"); err != nil {
		t.Fatal(err)
	}
	st, ok = claim(t, a, "r", "node-a", routeT0.Add(43*time.Second))
	if !ok || st.Checkpoint != 10 {
		t.Errorf("after node-b's release: %+v, %v; want node-a at checkpoint 10", st, ok)
	}
}

// testRouteConcurrentClaims: of claims racing on two handles, one wins.
func testRouteConcurrentClaims(t *testing.T, f Factory) {
	a := f.New(t)
	handles := []Store{a, f.Reopen(t, a)}
	for round := range 5 {
		route := fmt.Sprint("race-", round)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 8 {
			wg.Go(func() {
				_, ok, err := handles[i%2].ClaimRoute(ctx(), routeHub, route, fmt.Sprint("node-", i), routeT0, routeT0.Add(time.Minute))
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Errorf("%s: %d claims won, want 1", route, won)
		}
	}
}

// testRouteDeadLetters: dead letters keep the message whole with the
// reason, move the checkpoint in the same transaction, are kept once, are
// listed per route in Seq order and pruned by time.
func testRouteDeadLetters(t *testing.T, f Factory) {
	s := f.New(t)
	claim(t, s, "r", "node-a", routeT0)
	claim(t, s, "q", "node-a", routeT0)
	msgs := appendN(t, s, routeHub, 4)
	at := routeT0.Add(time.Second)
	if err := s.DeadLetterMessages(ctx(), routeHub, "r", "node-a", msgs[:2], "endpoint refused: 500", at); err != nil {
		t.Fatal(err)
	}
	// Again (a retry after a lost answer): the first record stays.
	if err := s.DeadLetterMessages(ctx(), routeHub, "r", "node-a", msgs[1:3], "later", at.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	dl, err := s.DeadLetters(ctx(), "hub-r.example.NET", "r", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dl) != 3 {
		t.Fatalf("dead letters = %+v; want 3", dl)
	}
	for i, d := range dl {
		wantReason, wantAt := "endpoint refused: 500", at
		if i == 2 {
			wantReason, wantAt = "later", at.Add(10*time.Second)
		}
		if d.Route != "r" || d.Reason != wantReason || !d.At.Equal(wantAt) || !reflect.DeepEqual(d.Message, msgs[i]) {
			t.Errorf("dead letter %d = %+v\nwant route r, %q at %v, %+v", i, d, wantReason, wantAt, msgs[i])
		}
	}
	if page, err := s.DeadLetters(ctx(), routeHub, "r", msgs[0].Seq, 1); err != nil || len(page) != 1 || page[0].Message.Seq != msgs[1].Seq {
		t.Errorf("page after the first = %+v, %v", page, err)
	}
	if q, err := s.DeadLetters(ctx(), routeHub, "q", 0, 0); err != nil || len(q) != 0 {
		t.Errorf("another route's dead letters = %+v, %v", q, err)
	}
	routes, err := s.Routes(ctx(), routeHub)
	if err != nil || len(routes) != 2 || routes[1].Checkpoint != msgs[2].Seq || routes[0].Checkpoint != 0 {
		t.Errorf("routes = %+v, %v; want r at %d, q at 0", routes, err, msgs[2].Seq)
	}
	// Without the lease nothing is written.
	kind(t, "dead letter without the lease", s.DeadLetterMessages(ctx(), routeHub, "q", "node-b", msgs[3:], "x", at), dps.KindPrecondition)
	if q, _ := s.DeadLetters(ctx(), routeHub, "q", 0, 0); len(q) != 0 {
		t.Errorf("a refused dead letter was written: %+v", q)
	}
	if n, err := s.DeleteDeadLettersBefore(ctx(), at.Add(5*time.Second)); err != nil || n != 2 {
		t.Errorf("pruned %d, %v; want the 2 older ones", n, err)
	}
	if dl, _ := s.DeadLetters(ctx(), routeHub, "r", 0, 0); len(dl) != 1 || dl[0].Reason != "later" {
		t.Errorf("after the prune: %+v", dl)
	}
}

// testRouteDeadLetterTrim: TrimDeadLetters keeps a route's newest dead
// letters (by Seq) and deletes the older ones, leaving other routes alone.
func testRouteDeadLetterTrim(t *testing.T, f Factory) {
	s := f.New(t)
	claim(t, s, "r", "node-a", routeT0)
	claim(t, s, "q", "node-a", routeT0)
	msgs := appendN(t, s, routeHub, 12)
	at := routeT0.Add(time.Second)
	for _, batch := range [][]dps.Message{msgs[:3], msgs[3:4], msgs[4:10]} {
		if err := s.DeadLetterMessages(ctx(), routeHub, "r", "node-a", batch, "poison", at); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeadLetterMessages(ctx(), routeHub, "q", "node-a", msgs[:2], "other route", at); err != nil {
		t.Fatal(err)
	}
	seqsOf := func(route string) []int64 {
		t.Helper()
		dl, err := s.DeadLetters(ctx(), routeHub, route, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, d := range dl {
			out = append(out, d.Message.Seq)
		}
		return out
	}
	want := fmt.Sprint([]int64{msgs[6].Seq, msgs[7].Seq, msgs[8].Seq, msgs[9].Seq})
	for i, wantN := range []int64{6, 0} {
		if n, err := s.TrimDeadLetters(ctx(), "HUB-R.example.net", "r", 4); err != nil || n != wantN {
			t.Errorf("trim %d to 4: deleted %d, %v; want %d", i, n, err, wantN)
		}
		if got := fmt.Sprint(seqsOf("r")); got != want {
			t.Errorf("after trim %d: dead letters %s, want the newest 4 %s", i, got, want)
		}
	}
	if n, err := s.TrimDeadLetters(ctx(), routeHub, "q", 10); err != nil || n != 0 || len(seqsOf("q")) != 2 {
		t.Errorf("trim of q to 10: deleted %d, %v; q keeps %v", n, err, seqsOf("q"))
	}
	if n, err := s.TrimDeadLetters(ctx(), routeHub, "none", 1); err != nil || n != 0 {
		t.Errorf("trim of a route without dead letters: %d, %v", n, err)
	}
	if n, err := s.TrimDeadLetters(ctx(), routeHub, "r", 0); err != nil || n != 4 || len(seqsOf("r")) != 0 {
		t.Errorf("trim to 0: deleted %d, %v; left %v", n, err, seqsOf("r"))
	}
	if len(seqsOf("q")) != 2 {
		t.Errorf("trimming r deleted q's dead letters: %v", seqsOf("q"))
	}
}

// testRouteRetention: DeleteRoutedMessagesBefore deletes by time from the
// start of the log, never past the slowest route's checkpoint.
func testRouteRetention(t *testing.T, f Factory) {
	s := f.New(t)
	msgs := appendN(t, s, routeHub, 5) // all enqueued now
	future := time.Now().Add(time.Hour)
	if n, err := s.DeleteRoutedMessagesBefore(ctx(), "hub-r.example.net", future, msgs[1].Seq); err != nil || n != 2 {
		t.Errorf("deleted %d, %v; want the 2 up to the checkpoint", n, err)
	}
	if n, err := s.DeleteRoutedMessagesBefore(ctx(), routeHub, future, msgs[1].Seq); err != nil || n != 0 {
		t.Errorf("again: deleted %d, %v; want 0", n, err)
	}
	sameSeqs(t, "kept", readLog(t, s, routeHub), "m2:3", "m3:4", "m4:5")
	if n, err := s.DeleteRoutedMessagesBefore(ctx(), routeHub, time.Now().Add(-time.Hour), msgs[4].Seq); err != nil || n != 0 {
		t.Errorf("nothing old enough: deleted %d, %v", n, err)
	}
}
