package mqttapi

// Cloud-to-device messages on a hub connection. Once the device has
// subscribed to devices/{id}/messages/devicebound/# (or its session kept
// that subscription), the connection pulls the messages waiting for it
// from the hub — when the hub kicks it (iothub.Conn.C2D: a message was
// sent), when the device subscribes or connects, after a PUBACK, and when
// the lock of a message it delivered ends — and writes each as a QoS 1
// PUBLISH on devices/{id}/messages/devicebound/{bag}, in queue order, at
// most hubC2DWindow unacknowledged at a time. The device's PUBACK
// completes the message (there is no reject or abandon on MQTT). A
// message not acknowledged within its lock (iothub.C2DLockTime, a
// minute) is delivered again, under a new packet ID; the messages in
// flight when the connection ends are released, so that the device's
// next connection gets them at once.
//
// The delivery loop, its kick channel and its in-flight map exist only
// once the connection has had a C2D subscription (startC2D, at most one
// loop per connection, kept until the connection ends): an idle device
// that never subscribes costs none of them. A device that unsubscribes
// keeps its loop, which pulls nothing until it subscribes again.

import (
	"context"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/logkey"
)

const (
	// hubC2DWindow bounds the C2D messages delivered and not yet
	// acknowledged on one connection.
	hubC2DWindow = 8
	// hubC2DRetry is how long the connection waits before it pulls again
	// after the hub failed (the store is down).
	hubC2DRetry = 5 * time.Second
)

// c2dState is a hub connection's C2D delivery. Its zero value is a
// connection whose delivery has not started.
type c2dState struct {
	mu       sync.Mutex
	kick     chan struct{}        // capacity 1: "messages may be waiting"; nil until the loop starts
	inflight map[uint16]c2dFlight // by packet ID; nil until the loop starts
	closed   bool                 // the connection ended: nothing more goes in flight, no loop starts
}

// c2dFlight is a delivered message waiting for its PUBACK.
type c2dFlight struct {
	lock  string
	until time.Time // the lock's end
}

// startC2D starts the delivery loop, the first time the connection has a
// C2D subscription, and kicks it: the messages waiting are delivered.
func (c *hubConn) startC2D() {
	c.c2d.mu.Lock()
	if c.c2d.kick == nil && !c.c2d.closed {
		c.c2d.kick = make(chan struct{}, 1)
		c.c2d.inflight = map[uint16]c2dFlight{}
		go c.c2dLoop(c.c2d.kick)
	}
	c.c2d.mu.Unlock()
	c.C2D()
}

// C2D is the hub's kick: messages are waiting for the device. It never
// blocks; the delivery loop pulls them if the device subscribed. Before
// the first C2D subscription there is no loop to kick: startC2D pulls
// what waits by then.
func (c *hubConn) C2D() {
	c.c2d.mu.Lock()
	kick := c.c2d.kick
	c.c2d.mu.Unlock()
	if kick == nil {
		return
	}
	select {
	case kick <- struct{}{}:
	default:
	}
}

// c2dLoop delivers C2D messages until the connection ends.
func (c *hubConn) c2dLoop(kick <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-c.st.ctx.Done():
			return
		case <-kick:
		case <-timer.C:
		}
		if next := c.pullC2D(); !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// pullC2D forgets the deliveries whose lock ended, delivers what the
// window allows, and returns when to pull again without a kick (the end
// of the earliest lock in flight; zero: only on a kick).
func (c *hubConn) pullC2D() time.Time {
	if c.session == nil || !c.session.has(hubproto.FilterC2D) {
		return time.Time{}
	}
	log := c.h.o.Logger.With(logkey.Hub, c.hub, logDeviceID, c.id.DeviceID)
	now := time.Now()
	c.c2d.mu.Lock()
	for pid, f := range c.c2d.inflight {
		if !now.Before(f.until) {
			delete(c.c2d.inflight, pid)
			if c.cl.State.Inflight.Delete(pid) {
				c.cl.State.Inflight.IncreaseSendQuota()
			}
		}
	}
	room := hubC2DWindow - len(c.c2d.inflight)
	c.c2d.mu.Unlock()
	for ; room > 0; room-- {
		ctx, cancel := context.WithTimeout(c.st.ctx, c.h.o.RequestTimeout)
		m, ok, err := c.h.o.Hub.Receive(ctx, c.id, iothub.C2DLockTime)
		cancel()
		if err != nil {
			if c.st.ctx.Err() != nil {
				return time.Time{}
			}
			log.Warn("mqtt hub C2D messages not received from the store; retrying", logkey.Error, err)
			return time.Now().Add(hubC2DRetry)
		}
		if !ok {
			break
		}
		if !c.deliverC2D(m) {
			return time.Time{}
		}
	}
	c.c2d.mu.Lock()
	defer c.c2d.mu.Unlock()
	var next time.Time
	for _, f := range c.c2d.inflight {
		if next.IsZero() || f.until.Before(next) {
			next = f.until
		}
	}
	if !next.IsZero() {
		next = next.Add(10 * time.Millisecond) // the store's lock has ended by then
	}
	return next
}

// deliverC2D writes a received message as a QoS 1 PUBLISH; false when the
// connection is gone (the message is released).
func (c *hubConn) deliverC2D(m dps.CloudMessage) bool {
	pid, err := c.cl.NextPacketID()
	c.c2d.mu.Lock()
	if err != nil || c.c2d.closed {
		c.c2d.mu.Unlock()
		c.releaseC2D(m.LockToken)
		return false
	}
	c.c2d.inflight[uint16(pid)] = c2dFlight{lock: m.LockToken, until: m.LockedUntil}
	c.c2d.mu.Unlock()
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName: hubproto.C2DTopic(c.id.DeviceID, hubproto.C2DProperties{
			MessageID: m.MessageID, To: "/devices/" + c.id.DeviceID + "/messages/devicebound", CorrelationID: m.CorrelationID,
			UserID: m.UserID, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding, Expiry: iothub.FormatExpiry(m.Expiry),
			Ack: m.Ack, Properties: m.Properties,
		}),
		Payload:  m.Body,
		PacketID: uint16(pid),
		Created:  time.Now().Unix(),
	}
	if c.cl.State.Inflight.Set(out) { // so that mochi reports its PUBACK (OnQosComplete)
		c.cl.State.Inflight.DecreaseSendQuota()
	}
	if err := c.cl.WritePacket(out); err != nil {
		c.h.o.Logger.Debug("mqtt hub C2D message not delivered", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
		return false // end releases it
	}
	return true
}

// puback completes the message delivered under packet ID pid, and pulls
// the next one.
func (c *hubConn) puback(pid uint16) {
	c.c2d.mu.Lock()
	f, ok := c.c2d.inflight[pid]
	delete(c.c2d.inflight, pid)
	c.c2d.mu.Unlock()
	if !ok {
		return // not a C2D delivery, or its lock ended and it went out again
	}
	ctx, cancel := context.WithTimeout(c.st.ctx, c.h.o.RequestTimeout)
	defer cancel()
	if err := c.h.o.Hub.Complete(ctx, c.id, f.lock); err != nil {
		c.h.o.Logger.Debug("mqtt hub C2D message not completed", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
	}
	c.C2D()
}

// endC2D releases the messages in flight when the connection ends.
func (c *hubConn) endC2D() {
	c.c2d.mu.Lock()
	c.c2d.closed = true
	locks := make([]string, 0, len(c.c2d.inflight))
	for _, f := range c.c2d.inflight {
		locks = append(locks, f.lock)
	}
	clear(c.c2d.inflight)
	c.c2d.mu.Unlock()
	for _, l := range locks {
		c.releaseC2D(l)
	}
}

func (c *hubConn) releaseC2D(lock string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.h.o.RequestTimeout)
	defer cancel()
	if err := c.h.o.Hub.Release(ctx, c.id, lock); err != nil && dps.KindOf(err) != dps.KindPrecondition {
		c.h.o.Logger.Debug("mqtt hub C2D message not released", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
	}
}
