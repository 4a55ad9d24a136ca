package iothub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
)

// SendC2D: the device must exist; 64 KB at most; an unknown ack and a
// past expiry are refused; the default time to live is an hour, an
// explicit expiry is kept; the connected device is kicked.
func TestSendC2D(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := &conn{}
	detach := f.hub.Attach(f.connect(t), c)
	defer detach()
	m, err := f.hub.SendC2D(ctx, hub, "dev-1", dps.CloudMessage{MessageID: "m1", Ack: "FULL", Body: []byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Expiry.Equal(t0.Add(time.Hour)) || !m.Enqueued.Equal(t0) || m.Ack != "full" || m.Seq == 0 || m.DeviceID != "dev-1" {
		t.Errorf("sent %+v", m)
	}
	c.mu.Lock()
	kicks := c.kicks
	c.mu.Unlock()
	if kicks != 1 {
		t.Errorf("connection kicked %d times, want 1", kicks)
	}
	exp := t0.Add(10 * time.Minute)
	if m, err := f.hub.SendC2D(ctx, hub, "dev-1", dps.CloudMessage{Expiry: exp}); err != nil || !m.Expiry.Equal(exp) {
		t.Errorf("explicit expiry: %v, %v", m.Expiry, err)
	}
	for name, tt := range map[string]struct {
		device string
		m      dps.CloudMessage
		kind   dps.Kind
	}{
		"unknown device":     {"nobody", dps.CloudMessage{}, dps.KindNotFound},
		"another case":       {"DEV-1", dps.CloudMessage{}, dps.KindNotFound},
		"over 64 KB":         {"dev-1", dps.CloudMessage{Body: make([]byte, iothub.MaxC2DSize-1), Properties: map[string]string{"k": "v"}}, dps.KindTooLarge},
		"unknown ack":        {"dev-1", dps.CloudMessage{Ack: "sometimes"}, dps.KindInvalid},
		"expiry in the past": {"dev-1", dps.CloudMessage{Expiry: t0}, dps.KindInvalid},
	} {
		if _, err := f.hub.SendC2D(ctx, hub, tt.device, tt.m); dps.KindOf(err) != tt.kind {
			t.Errorf("%s: %v, want kind %v", name, err, tt.kind)
		}
	}
	if _, err := f.hub.SendC2D(ctx, hub, "dev-1", dps.CloudMessage{Body: make([]byte, iothub.MaxC2DSize)}); err != nil {
		t.Errorf("a message of exactly 64 KB: %v", err)
	}
}

// Locks and time to live on the hub's clock: a received message is
// invisible for the lock time (a minute by default), then delivered
// again under a new lock; the old lock is lost; a message past its
// expiry is never delivered; the queue holds 50.
func TestC2DLockAndTTL(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	id := f.connect(t)
	if _, err := f.hub.SendC2D(ctx, hub, "dev-1", dps.CloudMessage{MessageID: "a"}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := f.hub.Receive(ctx, id, 0)
	if err != nil || !ok || m.MessageID != "a" || !m.LockedUntil.Equal(t0.Add(iothub.C2DLockTime)) || len(m.LockToken) != 36 {
		t.Fatalf("receive = %+v, %v, %v", m, ok, err)
	}
	f.now = t0.Add(59 * time.Second)
	if _, ok, _ := f.hub.Receive(ctx, id, 0); ok {
		t.Fatal("a locked message was delivered again")
	}
	f.now = t0.Add(time.Minute)
	again, ok, err := f.hub.Receive(ctx, id, 10*time.Second)
	if err != nil || !ok || again.LockToken == m.LockToken || again.DeliveryCount != 0 {
		t.Fatalf("after the lock = %+v, %v, %v", again, ok, err)
	}
	err = f.hub.Complete(ctx, id, m.LockToken)
	if e := dps.AsError(err); err == nil || e.Code != dps.CodeMessageLockLost {
		t.Errorf("complete with the old lock: %v", err)
	}
	if err := f.hub.Abandon(ctx, id, `"`+again.LockToken+`"`); err != nil {
		t.Fatalf("abandon with a quoted lock: %v", err)
	}
	// The default time to live ends an hour after the send.
	f.now = t0.Add(time.Hour)
	if m, ok, _ := f.hub.Receive(ctx, id, 0); ok {
		t.Errorf("expired message delivered: %+v", m)
	}
	for i := range iothub.MaxC2DQueue {
		if _, err := f.hub.SendC2D(ctx, hub, "dev-1", dps.CloudMessage{}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_, err = f.hub.SendC2D(ctx, hub, "dev-1", dps.CloudMessage{})
	if e := dps.AsError(err); err == nil || e.Kind != dps.KindForbidden || e.Code != dps.CodeQueueDepthExceeded {
		t.Errorf("51st message: %v", err)
	}
	if n, err := f.hub.Purge(ctx, hub, "dev-1"); err != nil || n != iothub.MaxC2DQueue {
		t.Errorf("purge = %d, %v", n, err)
	}
	if _, err := f.hub.Purge(ctx, hub, "nobody"); dps.KindOf(err) != dps.KindNotFound || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("purge of an unknown device: %v", err)
	}
}
