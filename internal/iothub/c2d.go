package iothub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/opendps/dps"
)

// Cloud-to-device messages. A service sends a message into the device's
// queue in the store (SendC2D); the device's transport receives it under
// a lock and settles it with the lock token: HTTPS through Receive and
// Complete/Abandon/Reject, MQTT by delivering it as a QoS 1 PUBLISH whose
// PUBACK completes it. When a message is queued for a device connected to
// this node, its connection is told (Conn.C2D) and pulls from the store;
// kickC2D is the one place that does it, so that a notification from
// another node can do the same.

// CloudStore is the per-device C2D queue (the stores'
// hub_c2d_messages). Times are the hub's clock (Options.Now).
type CloudStore interface {
	// EnqueueCloudMessage appends m (m.Enqueued the time of the send)
	// unless max messages that have not expired are queued:
	// KindForbidden with dps.CodeQueueDepthExceeded.
	EnqueueCloudMessage(ctx context.Context, m dps.CloudMessage, max int) (dps.CloudMessage, error)
	// ReceiveCloudMessage locks the oldest deliverable message with
	// lockToken until lockUntil; ok is false when there is none.
	ReceiveCloudMessage(ctx context.Context, hub, deviceID, lockToken string, now, lockUntil time.Time) (m dps.CloudMessage, ok bool, err error)
	// SettleCloudMessage ends the delivery locked with lockToken:
	// KindPrecondition with dps.CodeMessageLockLost when that lock is
	// unknown or ended.
	SettleCloudMessage(ctx context.Context, hub, deviceID, lockToken string, how dps.Settlement, now time.Time, maxDeliveries int) error
	// PurgeCloudMessages deletes the device's queue (Purged feedback at
	// now where asked for) and reports how many messages it held.
	PurgeCloudMessages(ctx context.Context, hub, deviceID string, now time.Time) (int, error)
	CloudQueueDepth(ctx context.Context, hub, deviceID string, now time.Time) (int, error)
	// ExpireCloudMessages dead-letters up to limit messages of any queue
	// that expired by now and reports how many.
	ExpireCloudMessages(ctx context.Context, now time.Time, limit int) (int, error)
	// DeleteCloudFeedbackBefore deletes the feedback records of every hub
	// whose outcome happened before t.
	DeleteCloudFeedbackBefore(ctx context.Context, t time.Time) (int64, error)
	// ReceiveCloudFeedback locks up to max of the hub's unlocked feedback
	// records with lockToken until lockUntil, oldest first.
	ReceiveCloudFeedback(ctx context.Context, hub, lockToken string, now, lockUntil time.Time, max int) ([]dps.CloudFeedback, error)
	// SettleCloudFeedback completes (deletes) or abandons (unlocks) the
	// batch locked with lockToken: KindPrecondition with
	// dps.CodeMessageLockLost when that lock holds nothing.
	SettleCloudFeedback(ctx context.Context, hub, lockToken string, complete bool, now time.Time) error
}

// IoT Hub's C2D limits.
const (
	MaxC2DSize       = 64 * 1024 // body, system property values, application property names and values
	MaxC2DQueue      = 50        // messages per device
	MaxC2DDeliveries = 10        // abandons before a message is dead-lettered
	DefaultC2DTTL    = time.Hour // a message's time to live when the sender sets no expiry
	// C2DLockTime is how long a received message stays invisible: IoT
	// Hub's fixed one minute (an HTTPS receive may ask for another, see
	// Receive).
	C2DLockTime = time.Minute
	// MaxC2DLockTime bounds the lock an HTTPS receive may ask for.
	MaxC2DLockTime = 5 * time.Minute
)

// The acknowledgements a sender may ask for (iothub-ack).
var c2dAcks = []string{"none", "positive", "negative", "full"}

// SendC2D queues a message for a device of the hub and returns it as
// queued. The caller fills what the sender sent (ids, ack, content type
// and encoding, expiry, application properties, body); the hub sets the
// hub, the device, the enqueued time and, when the sender set none, the
// expiry (DefaultC2DTTL). If the device is connected to this node it is
// told at once.
//
// Errors: KindNotFound for a device that is not on the hub; KindTooLarge
// for a message over MaxC2DSize; KindInvalid for an unknown ack or an
// expiry that passed; KindForbidden with dps.CodeQueueDepthExceeded when
// the device's queue is full.
func (s *Service) SendC2D(ctx context.Context, hub, deviceID string, m dps.CloudMessage) (dps.CloudMessage, error) {
	d, err := s.serviceDevice(ctx, hub, deviceID)
	if err != nil {
		return dps.CloudMessage{}, err
	}
	if n := CloudSize(m); n > MaxC2DSize {
		return dps.CloudMessage{}, &dps.Error{Kind: dps.KindTooLarge, Code: dps.CodeTooLarge,
			Message: fmt.Sprintf("The message is %d bytes, over the limit of %d bytes (body, system property values, application property names and values).", n, MaxC2DSize)}
	}
	if m.Ack != "" {
		ok := false
		for _, a := range c2dAcks {
			if strings.EqualFold(m.Ack, a) {
				m.Ack, ok = a, true
			}
		}
		if !ok {
			return dps.CloudMessage{}, dps.Errorf(dps.KindInvalid, "iothub-ack must be none, positive, negative or full, not %q", m.Ack)
		}
	}
	now := s.o.Now().UTC()
	switch {
	case m.Expiry.IsZero():
		m.Expiry = now.Add(DefaultC2DTTL)
	case !m.Expiry.After(now):
		return dps.CloudMessage{}, dps.Errorf(dps.KindInvalid, "the message's expiry %s has passed", m.Expiry.UTC().Format(time.RFC3339))
	}
	m.Hub, m.DeviceID, m.GenerationID, m.Enqueued, m.Expiry = hub, d.DeviceID, d.GenerationID, now, m.Expiry.UTC()
	m.Seq, m.LockToken, m.LockedUntil, m.DeliveryCount = 0, "", time.Time{}, 0
	out, err := s.o.Store.EnqueueCloudMessage(ctx, m, MaxC2DQueue)
	if err != nil {
		return dps.CloudMessage{}, err
	}
	s.kickC2D(ctx, hub, d.DeviceID)
	return out, nil
}

// CloudSize is a C2D message's size as IoT Hub counts it against its
// limit: the body, the values of the system properties and the names and
// values of the application properties.
func CloudSize(m dps.CloudMessage) int {
	n := len(m.Body) + len(m.MessageID) + len(m.CorrelationID) + len(m.UserID) + len(m.Ack) + len(m.ContentType) + len(m.ContentEncoding)
	for k, v := range m.Properties {
		n += len(k) + len(v)
	}
	return n
}

// Receive locks the device's oldest deliverable message for lock
// (C2DLockTime when 0; at most MaxC2DLockTime) under a new lock token and
// returns it; ok is false when the queue has nothing to deliver.
func (s *Service) Receive(ctx context.Context, id Identity, lock time.Duration) (m dps.CloudMessage, ok bool, err error) {
	switch {
	case lock <= 0:
		lock = C2DLockTime
	case lock > MaxC2DLockTime:
		lock = MaxC2DLockTime
	}
	now := s.o.Now().UTC()
	return s.o.Store.ReceiveCloudMessage(ctx, id.Hub, id.DeviceID, newLockToken(), now, now.Add(lock))
}

// Complete ends the delivery locked with lockToken: the device took the
// message. Errors: KindPrecondition with dps.CodeMessageLockLost when the
// lock is unknown or ended (the message may be delivered again).
func (s *Service) Complete(ctx context.Context, id Identity, lockToken string) error {
	return s.settle(ctx, id, lockToken, dps.SettleComplete)
}

// Abandon gives the message back: it is delivered again, its delivery
// count one more, unless that was its MaxC2DDeliveries-th delivery (then
// it is dead-lettered). Errors as Complete's.
func (s *Service) Abandon(ctx context.Context, id Identity, lockToken string) error {
	if err := s.settle(ctx, id, lockToken, dps.SettleAbandon); err != nil {
		return err
	}
	s.kickReleased(ctx, id)
	return nil
}

// Reject dead-letters the message. Errors as Complete's.
func (s *Service) Reject(ctx context.Context, id Identity, lockToken string) error {
	return s.settle(ctx, id, lockToken, dps.SettleReject)
}

// Release ends a delivery without the device's answer (its connection
// closed before it acknowledged the message): the message is delivered
// again at once, its delivery count unchanged. Errors as Complete's.
func (s *Service) Release(ctx context.Context, id Identity, lockToken string) error {
	if err := s.settle(ctx, id, lockToken, dps.SettleRelease); err != nil {
		return err
	}
	s.kickReleased(ctx, id)
	return nil
}

// kickReleased tells the device's connections that a message is
// deliverable again: the one on this node, and the one another node may
// hold (the connection that released it may be the one being replaced,
// by a connection elsewhere that found the message still locked).
func (s *Service) kickReleased(ctx context.Context, id Identity) {
	s.conns.kickC2D(id.Hub, id.DeviceID)
	if s.o.Cluster != nil {
		s.publish(ctx, clusterMessage{Kind: msgC2D, Hub: id.Hub, Device: id.DeviceID})
	}
}

func (s *Service) settle(ctx context.Context, id Identity, lockToken string, how dps.Settlement) error {
	lockToken = strings.Trim(strings.TrimSpace(lockToken), `"`)
	return s.o.Store.SettleCloudMessage(ctx, id.Hub, id.DeviceID, lockToken, how, s.o.Now().UTC(), MaxC2DDeliveries)
}

// Purge deletes every message queued for a device and reports how many
// there were. Errors: KindNotFound for a device that is not on the hub.
func (s *Service) Purge(ctx context.Context, hub, deviceID string) (int, error) {
	d, err := s.serviceDevice(ctx, hub, deviceID)
	if err != nil {
		return 0, err
	}
	return s.o.Store.PurgeCloudMessages(ctx, hub, d.DeviceID, s.o.Now().UTC())
}

// Feedback limits: a batch holds at most MaxFeedbackBatch records and
// stays locked for FeedbackLockTime; the expiry sweep dead-letters
// C2DExpiryBatch messages per transaction, every C2DExpiryInterval.
const (
	MaxFeedbackBatch  = 100
	FeedbackLockTime  = time.Minute
	C2DExpiryBatch    = 500
	C2DExpiryInterval = 10 * time.Second
	// FeedbackTTL is how long a feedback record waits to be read (IoT
	// Hub's default feedback time to live, one hour).
	FeedbackTTL = time.Hour
)

// ReceiveFeedback locks the hub's oldest feedback records (at most
// MaxFeedbackBatch) under a new lock token for FeedbackLockTime and
// returns them with the token; none (an empty batch) when there are none.
func (s *Service) ReceiveFeedback(ctx context.Context, hub string) (lockToken string, batch []dps.CloudFeedback, err error) {
	lockToken = newLockToken()
	now := s.o.Now().UTC()
	batch, err = s.o.Store.ReceiveCloudFeedback(ctx, hub, lockToken, now, now.Add(FeedbackLockTime), MaxFeedbackBatch)
	if err != nil || len(batch) == 0 {
		return "", nil, err
	}
	return lockToken, batch, nil
}

// CompleteFeedback deletes the batch received with lockToken; Abandon
// gives it back. Errors: KindPrecondition with dps.CodeMessageLockLost
// when the lock is unknown or ended.
func (s *Service) CompleteFeedback(ctx context.Context, hub, lockToken string) error {
	return s.o.Store.SettleCloudFeedback(ctx, hub, strings.Trim(strings.TrimSpace(lockToken), `"`), true, s.o.Now().UTC())
}

// AbandonFeedback gives back the batch received with lockToken: its
// records may be received again at once. Errors as CompleteFeedback's.
func (s *Service) AbandonFeedback(ctx context.Context, hub, lockToken string) error {
	return s.o.Store.SettleCloudFeedback(ctx, hub, strings.Trim(strings.TrimSpace(lockToken), `"`), false, s.o.Now().UTC())
}

// ExpireC2D dead-letters every C2D message that expired by now, of every
// queue, in batches of C2DExpiryBatch, and reports how many: the Expired
// feedback of a device that never asks for its messages. It also deletes
// feedback records older than FeedbackTTL.
func (s *Service) ExpireC2D(ctx context.Context) (int, error) {
	// Feedback nobody read within its time to live goes, as on IoT Hub.
	if _, err := s.o.Store.DeleteCloudFeedbackBefore(ctx, s.o.Now().UTC().Add(-FeedbackTTL)); err != nil {
		return 0, err
	}
	total := 0
	for {
		n, err := s.o.Store.ExpireCloudMessages(ctx, s.o.Now().UTC(), C2DExpiryBatch)
		total += n
		if err != nil || n < C2DExpiryBatch || ctx.Err() != nil {
			return total, err
		}
	}
}

// RunC2DExpiry runs ExpireC2D every interval (C2DExpiryInterval when 0)
// until ctx ends; a failed sweep is logged and tried again next time.
func (s *Service) RunC2DExpiry(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = C2DExpiryInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.ExpireC2D(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.o.Logger.WarnContext(ctx, "C2D expiry sweep failed", "err", err)
		case n > 0:
			s.o.Logger.DebugContext(ctx, "C2D expiry sweep", "expired", n)
		}
	}
}

// QueueDepth counts the messages queued for a device that have not
// expired. Errors: KindNotFound for a device that is not on the hub.
func (s *Service) QueueDepth(ctx context.Context, hub, deviceID string) (int, error) {
	d, err := s.serviceDevice(ctx, hub, deviceID)
	if err != nil {
		return 0, err
	}
	return s.o.Store.CloudQueueDepth(ctx, hub, d.DeviceID, s.o.Now().UTC())
}

// newLockToken is a fresh lock token: 128 random bits in the form of a
// UUID, as IoT Hub's lock tokens are.
func newLockToken() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// kickC2D tells the device's connection that messages are waiting for
// it: on this node, or through the Cluster on the node that holds it.
func (s *Service) kickC2D(ctx context.Context, hub, deviceID string) {
	if a := s.conns.lookup(hub, deviceID); a != nil {
		a.c.C2D()
		return
	}
	if s.o.Cluster != nil {
		s.publish(ctx, clusterMessage{Kind: msgC2D, Hub: hub, Device: deviceID})
	}
}

// kickC2D tells the device's connection on this node, if any, that
// messages are waiting for it. It never blocks.
func (r *registry) kickC2D(hub, deviceID string) {
	if a := r.lookup(hub, deviceID); a != nil {
		a.c.C2D()
	}
}

// FormatExpiry is how the hub writes a C2D message's absolute expiry to a
// device (MQTT $.exp, HTTPS iothub-expiry): ISO 8601 in UTC with
// milliseconds.
func FormatExpiry(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
