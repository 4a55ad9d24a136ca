package storetest

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/opendps/dps"
)

// The built-in hubs' cloud-to-device queues: enqueue with a depth limit,
// receive under a lock, settle by lock token, dead-lettering, purge.

const (
	c2dHub   = "Hub-C.example.net"
	c2dDepth = 50
	c2dMax   = 10 // deliveries
)

var c2dT0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func c2dMessage(device, id string, enqueued time.Time) dps.CloudMessage {
	return dps.CloudMessage{Hub: c2dHub, DeviceID: device, MessageID: id, CorrelationID: "corr-" + id, UserID: "svc", Ack: "full",
		ContentType: "application/json", ContentEncoding: "utf-8", Enqueued: enqueued, Expiry: enqueued.Add(time.Hour),
		Properties: map[string]string{"id": id, "html": "<&>"}, Body: []byte(`{"n":"` + id + `"}`)}
}

func enqueue(t *testing.T, s Store, m dps.CloudMessage) dps.CloudMessage {
	t.Helper()
	out, err := s.EnqueueCloudMessage(ctx(), m, c2dDepth)
	if err != nil {
		t.Fatalf("enqueue %s: %v", m.MessageID, err)
	}
	return out
}

// receive receives with lock token lock at now for a minute; "" when
// the queue has nothing deliverable.
func receive(t *testing.T, s Store, device, lock string, now time.Time) dps.CloudMessage {
	t.Helper()
	m, ok, err := s.ReceiveCloudMessage(ctx(), c2dHub, device, lock, now, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if !ok {
		return dps.CloudMessage{}
	}
	return m
}

func depth(t *testing.T, s Store, device string, now time.Time, want int) {
	t.Helper()
	if n, err := s.CloudQueueDepth(ctx(), c2dHub, device, now); err != nil || n != want {
		t.Errorf("CloudQueueDepth(%s) = %d, %v; want %d", device, n, err, want)
	}
}

func lockLost(t *testing.T, what string, err error) {
	t.Helper()
	if e := dps.AsError(err); err == nil || e.Kind != dps.KindPrecondition || e.Code != dps.CodeMessageLockLost {
		t.Errorf("%s: err = %v, want KindPrecondition with CodeMessageLockLost", what, err)
	}
}

// testC2DOrder: messages come out oldest first with what was sent, Seq
// increasing; each device has its own queue, the device ID in any case.
func testC2DOrder(t *testing.T, f Factory) {
	s := f.New(t)
	var sent []dps.CloudMessage
	for i := range 3 {
		sent = append(sent, enqueue(t, s, c2dMessage("dev-a", fmt.Sprint("m", i), c2dT0.Add(time.Duration(i)*time.Second))))
	}
	enqueue(t, s, c2dMessage("dev-b", "other", c2dT0))
	for i := 1; i < len(sent); i++ {
		if sent[i].Seq <= sent[i-1].Seq {
			t.Fatalf("Seq not increasing: %d then %d", sent[i-1].Seq, sent[i].Seq)
		}
	}
	now := c2dT0.Add(10 * time.Second)
	for i, want := range sent {
		lock := fmt.Sprint("lock-", i)
		got := receive(t, s, "DEV-A", lock, now)
		want.LockToken, want.LockedUntil, want.Hub, want.DeviceID = lock, now.Add(time.Minute), c2dHub, "DEV-A"
		if !reflect.DeepEqual(got, want) {
			t.Errorf("receive %d:\n%#v\nwant\n%#v", i, got, want)
		}
	}
	if m := receive(t, s, "dev-a", "lock-x", now); m.MessageID != "" {
		t.Errorf("receive with every message locked = %q, want nothing", m.MessageID)
	}
	if m := receive(t, s, "dev-b", "lock-b", now); m.MessageID != "other" {
		t.Errorf("other device's queue = %q", m.MessageID)
	}
	// No properties and an empty body come back so.
	bare := dps.CloudMessage{Hub: c2dHub, DeviceID: "dev-c", Enqueued: c2dT0, Expiry: c2dT0.Add(time.Hour), Body: []byte{}}
	enqueue(t, s, bare)
	if m := receive(t, s, "dev-c", "l", now); m.Properties != nil || len(m.Body) != 0 || m.MessageID != "" {
		t.Errorf("bare message = %#v", m)
	}
}

// testC2DDepth: the 51st message is refused (403004) and nothing is
// written; expired messages do not count, locked ones do.
func testC2DDepth(t *testing.T, f Factory) {
	s := f.New(t)
	short := c2dMessage("dev-d", "short", c2dT0)
	short.Expiry = c2dT0.Add(time.Second)
	enqueue(t, s, short)
	for i := range c2dDepth - 1 {
		enqueue(t, s, c2dMessage("dev-d", fmt.Sprint("m", i), c2dT0))
	}
	receive(t, s, "dev-d", "held", c2dT0) // locked: still in the queue
	depth(t, s, "dev-d", c2dT0, c2dDepth)
	_, err := s.EnqueueCloudMessage(ctx(), c2dMessage("dev-d", "over", c2dT0), c2dDepth)
	if e := dps.AsError(err); err == nil || e.Kind != dps.KindForbidden || e.Code != dps.CodeQueueDepthExceeded {
		t.Fatalf("51st message: err = %v, want KindForbidden with CodeQueueDepthExceeded", err)
	}
	depth(t, s, "dev-d", c2dT0, c2dDepth)
	// Another device's queue is its own.
	enqueue(t, s, c2dMessage("dev-e", "e", c2dT0))
	// Once "short" expired, there is room for one.
	later := c2dT0.Add(2 * time.Second)
	depth(t, s, "dev-d", later, c2dDepth-1)
	enqueue(t, s, c2dMessage("dev-d", "fits", later))
	if _, err := s.EnqueueCloudMessage(ctx(), c2dMessage("dev-d", "over2", later), c2dDepth); dps.KindOf(err) != dps.KindForbidden {
		t.Errorf("message over the limit again: %v", err)
	}
}

// testC2DLock: a locked message is invisible until its lock ends, then it
// is delivered again with the new lock; the old lock token is lost.
func testC2DLock(t *testing.T, f Factory) {
	s := f.New(t)
	enqueue(t, s, c2dMessage("dev-l", "m0", c2dT0))
	enqueue(t, s, c2dMessage("dev-l", "m1", c2dT0))
	if m := receive(t, s, "dev-l", "l1", c2dT0); m.MessageID != "m0" {
		t.Fatalf("first receive = %q", m.MessageID)
	}
	if m := receive(t, s, "dev-l", "l2", c2dT0.Add(59*time.Second)); m.MessageID != "m1" {
		t.Fatalf("receive while m0 is locked = %q, want m1", m.MessageID)
	}
	again := receive(t, s, "dev-l", "l3", c2dT0.Add(time.Minute))
	if again.MessageID != "m0" || again.LockToken != "l3" || again.DeliveryCount != 0 {
		t.Fatalf("receive after the lock ended = %q (lock %q, count %d), want m0 under l3, count 0", again.MessageID, again.LockToken, again.DeliveryCount)
	}
	lockLost(t, "complete with the lock that ended", s.SettleCloudMessage(ctx(), c2dHub, "dev-l", "l1", dps.SettleComplete, c2dT0.Add(time.Minute), c2dMax))
	if err := s.SettleCloudMessage(ctx(), c2dHub, "dev-l", "l3", dps.SettleComplete, c2dT0.Add(time.Minute), c2dMax); err != nil {
		t.Fatalf("complete with the current lock: %v", err)
	}
	// m1's lock l2 ends at 1:59.
	lockLost(t, "complete after the lock ended", s.SettleCloudMessage(ctx(), c2dHub, "dev-l", "l2", dps.SettleComplete, c2dT0.Add(119*time.Second), c2dMax))
	depth(t, s, "dev-l", c2dT0.Add(2*time.Minute), 1)
}

// testC2DSettle: complete and reject remove the message; abandon and
// release make it visible at once; an unknown token, another device's
// token or a settled one is lost.
func testC2DSettle(t *testing.T, f Factory) {
	s := f.New(t)
	for _, id := range []string{"c", "r", "a", "x"} {
		enqueue(t, s, c2dMessage("dev-s", id, c2dT0))
	}
	enqueue(t, s, c2dMessage("dev-o", "o", c2dT0))
	now := c2dT0.Add(time.Second)
	settle := func(device, lock string, how dps.Settlement) error {
		return s.SettleCloudMessage(ctx(), c2dHub, device, lock, how, now, c2dMax)
	}
	receive(t, s, "dev-s", "lc", now)
	if err := settle("dev-s", "lc", dps.SettleComplete); err != nil {
		t.Fatal(err)
	}
	lockLost(t, "complete twice", settle("dev-s", "lc", dps.SettleComplete))
	receive(t, s, "dev-s", "lr", now)
	receive(t, s, "dev-o", "lo", now)
	lockLost(t, "another device's lock", settle("dev-s", "lo", dps.SettleComplete))
	lockLost(t, "an empty lock", settle("dev-s", "", dps.SettleComplete))
	lockLost(t, "an unknown lock", settle("dev-s", "nope", dps.SettleComplete))
	if err := settle("dev-s", "lr", dps.SettleReject); err != nil {
		t.Fatal(err)
	}
	depth(t, s, "dev-s", now, 2)
	if m := receive(t, s, "dev-s", "la", now); m.MessageID != "a" {
		t.Fatalf("receive = %q, want a", m.MessageID)
	}
	if err := settle("dev-s", "la", dps.SettleAbandon); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, s, "dev-s", "la2", now); m.MessageID != "a" || m.DeliveryCount != 1 {
		t.Fatalf("after abandon = %q, count %d; want a, 1", m.MessageID, m.DeliveryCount)
	}
	if err := settle("dev-s", "la2", dps.SettleRelease); err != nil {
		t.Fatal(err)
	}
	if m := receive(t, s, "dev-s", "la3", now); m.MessageID != "a" || m.DeliveryCount != 1 {
		t.Fatalf("after release = %q, count %d; want a, 1 (a release does not count)", m.MessageID, m.DeliveryCount)
	}
	lockLost(t, "the lock before the release", settle("dev-s", "la2", dps.SettleComplete))
}

// testC2DMaxDeliveries: the tenth abandon dead-letters the message.
func testC2DMaxDeliveries(t *testing.T, f Factory) {
	s := f.New(t)
	enqueue(t, s, c2dMessage("dev-m", "m", c2dT0))
	for i := range c2dMax {
		lock := fmt.Sprint("l", i)
		m := receive(t, s, "dev-m", lock, c2dT0)
		if m.MessageID != "m" || m.DeliveryCount != i {
			t.Fatalf("delivery %d = %q, count %d", i, m.MessageID, m.DeliveryCount)
		}
		if err := s.SettleCloudMessage(ctx(), c2dHub, "dev-m", lock, dps.SettleAbandon, c2dT0, c2dMax); err != nil {
			t.Fatal(err)
		}
	}
	if m := receive(t, s, "dev-m", "last", c2dT0); m.MessageID != "" {
		t.Errorf("message delivered after %d abandons (count %d)", c2dMax, m.DeliveryCount)
	}
	depth(t, s, "dev-m", c2dT0, 0)
}

// testC2DExpiry: an expired message is never delivered, locked or not,
// and stops counting.
func testC2DExpiry(t *testing.T, f Factory) {
	s := f.New(t)
	m := c2dMessage("dev-x", "soon", c2dT0)
	m.Expiry = c2dT0.Add(30 * time.Second)
	enqueue(t, s, m)
	enqueue(t, s, c2dMessage("dev-x", "later", c2dT0))
	if got := receive(t, s, "dev-x", "l1", c2dT0); got.MessageID != "soon" {
		t.Fatalf("receive = %q", got.MessageID)
	}
	// Its lock ends after it expired: it is not delivered again.
	if got := receive(t, s, "dev-x", "l2", c2dT0.Add(time.Minute)); got.MessageID != "later" {
		t.Errorf("receive after the expiry = %q, want later", got.MessageID)
	}
	depth(t, s, "dev-x", c2dT0.Add(time.Minute), 1)
	m = c2dMessage("dev-y", "gone", c2dT0)
	m.Expiry = c2dT0.Add(time.Second)
	enqueue(t, s, m)
	if got := receive(t, s, "dev-y", "l", c2dT0.Add(time.Second)); got.MessageID != "" {
		t.Errorf("message received at its expiry: %q", got.MessageID)
	}
}

// testC2DPurge: purge empties a queue and counts it; deleting a hub
// device, directly or as the device an operation moved away, deletes its
// queue.
func testC2DPurge(t *testing.T, f Factory) {
	s := f.New(t)
	for i := range 3 {
		enqueue(t, s, c2dMessage("dev-p", fmt.Sprint(i), c2dT0))
	}
	enqueue(t, s, c2dMessage("dev-q", "q", c2dT0))
	receive(t, s, "dev-p", "l", c2dT0)
	if n, err := s.PurgeCloudMessages(ctx(), c2dHub, "DEV-P", c2dT0); err != nil || n != 3 {
		t.Errorf("purge = %d, %v; want 3", n, err)
	}
	depth(t, s, "dev-p", c2dT0, 0)
	depth(t, s, "dev-q", c2dT0, 1)
	if n, err := s.PurgeCloudMessages(ctx(), c2dHub, "dev-p", c2dT0); err != nil || n != 0 {
		t.Errorf("purge of an empty queue = %d, %v", n, err)
	}

	if _, err := s.PutHubDevice(ctx(), dps.HubDevice{Hub: c2dHub, DeviceID: "dev-q"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteHubDevice(ctx(), c2dHub, "dev-q"); err != nil {
		t.Fatal(err)
	}
	depth(t, s, "dev-q", c2dT0, 0)

	old := dps.HubDevice{Hub: c2dHub, DeviceID: "dev-mv"}
	if _, err := s.PutHubDevice(ctx(), old); err != nil {
		t.Fatal(err)
	}
	enqueue(t, s, c2dMessage("dev-mv", "mv", c2dT0))
	o := op("op-c2d", "dev-mv")
	o.Status = dps.StatusAssigned
	o.Result = &dps.Registration{RegistrationID: "dev-mv", AssignedHub: "new.example.net", DeviceID: "dev-mv", Status: dps.StatusAssigned}
	if _, err := s.CreateOperationWithDevice(ctx(), o, dps.HubDevice{Hub: "new.example.net", DeviceID: "dev-mv"}, &old); err != nil {
		t.Fatal(err)
	}
	depth(t, s, "dev-mv", c2dT0, 0)
}

// testC2DConcurrent: receivers on two handles never get the same message.
func testC2DConcurrent(t *testing.T, f Factory) {
	s := f.New(t)
	other := f.Reopen(t, s)
	const n = 20
	for i := range n {
		enqueue(t, s, c2dMessage("dev-c", fmt.Sprint(i), c2dT0))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := range 4 {
		st := s
		if w%2 == 1 {
			st = other
		}
		wg.Go(func() {
			for i := 0; ; i++ {
				m, ok, err := st.ReceiveCloudMessage(ctx(), c2dHub, "dev-c", fmt.Sprint("w", w, "-", i), c2dT0, c2dT0.Add(time.Minute))
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				seen[m.MessageID]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Errorf("received %d distinct messages, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("message %s received %d times", id, k)
		}
	}
}
