package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// C2D feedback: the outcomes a message's iothub-ack asked for are
// recorded as it leaves its queue, and read in locked batches.

// feedbackOf receives every unlocked record of the hub at now under lock
// and returns them as (message id, status) pairs.
func feedbackOf(t *testing.T, s Store, lock string, now time.Time) []dps.CloudFeedback {
	t.Helper()
	got, err := s.ReceiveCloudFeedback(ctx(), c2dHub, lock, now, now.Add(time.Minute), 100)
	if err != nil {
		t.Fatalf("ReceiveCloudFeedback: %v", err)
	}
	return got
}

func statuses(fs []dps.CloudFeedback) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.OriginalMessageID+":"+string(f.Status))
	}
	return out
}

// testC2DFeedbackOutcomes: completion with positive or full, and each way
// of dead-lettering with negative or full, leave a record naming the
// message, the device as sent and its generation; other acks leave none.
func testC2DFeedbackOutcomes(t *testing.T, f Factory) {
	s := f.New(t)
	send := func(device, id, ack string, expiry time.Time) {
		m := c2dMessage(device, id, c2dT0)
		m.Ack, m.GenerationID = ack, "gen-"+device
		if !expiry.IsZero() {
			m.Expiry = expiry
		}
		enqueue(t, s, m)
	}
	settle := func(device, lock string, how dps.Settlement) {
		t.Helper()
		if err := s.SettleCloudMessage(ctx(), c2dHub, device, lock, how, c2dT0, c2dMax); err != nil {
			t.Fatalf("settle %s: %v", lock, err)
		}
	}
	// dev-f: completed (full, positive, negative, none), rejected (full, positive).
	for i, ack := range []string{"full", "positive", "negative", "none", ""} {
		send("Dev-F", fmt.Sprint("done-", ack), ack, time.Time{})
		settle("Dev-F", receive(t, s, "Dev-F", fmt.Sprint("c", i), c2dT0).LockToken, dps.SettleComplete)
	}
	for i, ack := range []string{"negative", "positive"} {
		send("Dev-F", "rejected-"+ack, ack, time.Time{})
		settle("Dev-F", receive(t, s, "Dev-F", fmt.Sprint("r", i), c2dT0).LockToken, dps.SettleReject)
	}
	// dev-g: out of deliveries.
	send("dev-g", "abandoned", "full", time.Time{})
	for i := range c2dMax {
		settle("dev-g", receive(t, s, "dev-g", fmt.Sprint("a", i), c2dT0).LockToken, dps.SettleAbandon)
	}
	got := feedbackOf(t, s, "b1", c2dT0)
	want := []string{"done-full:Success", "done-positive:Success", "rejected-negative:Rejected", "abandoned:DeliveryCountExceeded"}
	if !reflect.DeepEqual(statuses(got), want) {
		t.Fatalf("feedback %v, want %v", statuses(got), want)
	}
	first := got[0]
	wantFirst := dps.CloudFeedback{Hub: c2dHub, Seq: first.Seq, OriginalMessageID: "done-full", Enqueued: c2dT0, Status: dps.FeedbackSuccess,
		Description: "Success", DeviceID: "Dev-F", GenerationID: "gen-Dev-F"}
	if !reflect.DeepEqual(first, wantFirst) {
		t.Errorf("record %+v, want %+v", first, wantFirst)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Errorf("records out of order: %v", got)
		}
	}
	if got[3].Description != "Message delivery count exceeded" || got[3].DeviceID != "dev-g" || got[3].GenerationID != "gen-dev-g" {
		t.Errorf("dead letter record %+v", got[3])
	}
	if err := s.SettleCloudFeedback(ctx(), c2dHub, "b1", true, c2dT0); err != nil {
		t.Fatal(err)
	}

	// Expiry: at a receive, at an enqueue, and by the sweep (of any
	// queue, in batches).
	send("dev-h", "expired-at-receive", "negative", c2dT0.Add(time.Second))
	send("dev-h", "expired-quietly", "positive", c2dT0.Add(time.Second))
	receive(t, s, "dev-h", "x", c2dT0.Add(2*time.Second))
	send("dev-i", "expired-at-enqueue", "full", c2dT0.Add(time.Second))
	m := c2dMessage("dev-i", "fresh", c2dT0.Add(2*time.Second))
	enqueue(t, s, m)
	for i := range 3 {
		send("dev-j", fmt.Sprint("swept-", i), "full", c2dT0.Add(time.Duration(i+1)*time.Second))
	}
	send("dev-j", "not-yet", "full", c2dT0.Add(time.Hour))
	if n, err := s.ExpireCloudMessages(ctx(), c2dT0.Add(10*time.Second), 2); err != nil || n != 2 {
		t.Errorf("ExpireCloudMessages = %d, %v; want 2 (the batch)", n, err)
	}
	if n, err := s.ExpireCloudMessages(ctx(), c2dT0.Add(10*time.Second), 2); err != nil || n != 1 {
		t.Errorf("ExpireCloudMessages = %d, %v; want the 1 left", n, err)
	}
	if n, err := s.ExpireCloudMessages(ctx(), c2dT0.Add(10*time.Second), 2); err != nil || n != 0 {
		t.Errorf("ExpireCloudMessages = %d, %v; want 0", n, err)
	}
	depth(t, s, "dev-j", c2dT0.Add(10*time.Second), 1)
	// Purge.
	send("dev-k", "purged", "negative", time.Time{})
	send("dev-k", "purged-quietly", "positive", time.Time{})
	if n, err := s.PurgeCloudMessages(ctx(), c2dHub, "dev-k", c2dT0.Add(20*time.Second)); err != nil || n != 2 {
		t.Errorf("purge = %d, %v", n, err)
	}
	got = feedbackOf(t, s, "b2", c2dT0.Add(time.Minute))
	want = []string{"expired-at-receive:Expired", "expired-at-enqueue:Expired", "swept-0:Expired", "swept-1:Expired", "swept-2:Expired", "purged:Purged"}
	if !reflect.DeepEqual(statuses(got), want) {
		t.Errorf("feedback %v, want %v", statuses(got), want)
	}
	if len(got) == len(want) && (got[0].Enqueued != c2dT0.Add(2*time.Second) || got[5].Enqueued != c2dT0.Add(20*time.Second) || got[5].Description != "Message purged") {
		t.Errorf("times or descriptions: %+v", got)
	}
}

// testC2DFeedbackLock: a batch is locked until completed or abandoned or
// its lock ends; other hubs have their own records; settling an unknown or
// ended lock is CodeMessageLockLost.
func testC2DFeedbackLock(t *testing.T, f Factory) {
	s := f.New(t)
	if got := feedbackOf(t, s, "none", c2dT0); len(got) != 0 {
		t.Fatalf("feedback of an empty store: %v", got)
	}
	for i := range 3 {
		m := c2dMessage("dev-l", fmt.Sprint("m", i), c2dT0)
		m.Ack = "positive"
		enqueue(t, s, m)
		if err := s.SettleCloudMessage(ctx(), c2dHub, "dev-l", receive(t, s, "dev-l", fmt.Sprint("l", i), c2dT0).LockToken, dps.SettleComplete, c2dT0, c2dMax); err != nil {
			t.Fatal(err)
		}
	}
	other, err := s.ReceiveCloudFeedback(ctx(), "other.example.net", "o", c2dT0, c2dT0.Add(time.Minute), 10)
	if err != nil || len(other) != 0 {
		t.Errorf("another hub's feedback: %v, %v", other, err)
	}
	b1, err := s.ReceiveCloudFeedback(ctx(), "HUB-c.EXAMPLE.net", "b1", c2dT0, c2dT0.Add(time.Minute), 2)
	if err != nil || len(b1) != 2 {
		t.Fatalf("batch of 2 = %v, %v", b1, err)
	}
	b2 := feedbackOf(t, s, "b2", c2dT0)
	if !reflect.DeepEqual(statuses(b2), []string{"m2:Success"}) {
		t.Errorf("the second batch %v, want what the first did not lock", statuses(b2))
	}
	if got := feedbackOf(t, s, "b3", c2dT0); len(got) != 0 {
		t.Errorf("locked records received again: %v", statuses(got))
	}
	if err := s.SettleCloudFeedback(ctx(), c2dHub, "b1", false, c2dT0); err != nil { // abandon
		t.Fatal(err)
	}
	lockLost(t, "abandon twice", s.SettleCloudFeedback(ctx(), c2dHub, "b1", false, c2dT0))
	lockLost(t, "complete an unknown lock", s.SettleCloudFeedback(ctx(), c2dHub, "nope", true, c2dT0))
	lockLost(t, "complete with another hub", s.SettleCloudFeedback(ctx(), "other.example.net", "b2", true, c2dT0))
	lockLost(t, "complete after the lock ended", s.SettleCloudFeedback(ctx(), c2dHub, "b2", true, c2dT0.Add(time.Minute)))
	// b2's lock ended: its record comes again, with the abandoned ones.
	b4 := feedbackOf(t, s, "b4", c2dT0.Add(time.Minute))
	if !reflect.DeepEqual(statuses(b4), []string{"m0:Success", "m1:Success", "m2:Success"}) {
		t.Errorf("after abandon and an ended lock: %v", statuses(b4))
	}
	if err := s.SettleCloudFeedback(ctx(), c2dHub, "b4", true, c2dT0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := feedbackOf(t, s, "b5", c2dT0.Add(time.Hour)); len(got) != 0 {
		t.Errorf("completed records received again: %v", statuses(got))
	}
}

// testC2DFeedbackExpires: feedback records older than a time are deleted,
// newer ones stay.
func testC2DFeedbackExpires(t *testing.T, f Factory) {
	s := f.New(t)
	for i, at := range []time.Time{c2dT0, c2dT0.Add(2 * time.Hour)} {
		m := c2dMessage("dev-x", fmt.Sprint("x", i), at)
		m.Ack = "positive"
		enqueue(t, s, m)
		if err := s.SettleCloudMessage(ctx(), c2dHub, "dev-x", receive(t, s, "dev-x", fmt.Sprint("lx", i), at).LockToken, dps.SettleComplete, at, c2dMax); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.DeleteCloudFeedbackBefore(ctx(), c2dT0.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("DeleteCloudFeedbackBefore = %d, %v; want 1", n, err)
	}
	if got := statuses(feedbackOf(t, s, "after", c2dT0.Add(3*time.Hour))); len(got) != 1 || got[0] != "x1:Success" {
		t.Errorf("feedback left = %v, want only x1's", got)
	}
}
