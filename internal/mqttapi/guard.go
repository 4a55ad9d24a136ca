package mqttapi

import (
	"context"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/throttle"
	"github.com/opendps/dps/internal/wire"
)

// Throttling and fault injection on a built-in hub's MQTT connections
// (the DPS side is in mqttapi.go): twin requests have their own
// per-device limit (throttling.device.twinPer10s, off by default); fault rules of
// operation twin and telemetry apply here.

func (c *hubConn) transport() string {
	if c.cl.Net.Listener == wsListenerID {
		return faults.TransportMQTTWS
	}
	return faults.TransportMQTT
}

func (c *hubConn) point(op string) faults.Point {
	return faults.Point{Transport: c.transport(), Operation: op, RegistrationID: c.id.DeviceID}
}

// twinGuard runs before a twin request is served. answered: topic and body
// are the answer (429 throttled, or an injected status). dropAfter: serve
// the request, then close the connection instead of answering.
func (c *hubConn) twinGuard(ctx context.Context, rid string) (topic string, body []byte, answered, dropAfter bool) {
	a := c.h.o.Adapter
	if _, ok := a.Throttle.Allow(c.transport(), throttle.Twin, c.hub+"/"+c.id.DeviceID); !ok {
		topic, body = c.twinError(rid, &dps.Error{Kind: dps.KindThrottled, Code: dps.CodeThrottled, Message: throttle.Message})
		return topic, body, true, false
	}
	f, ok := a.Faults.Check(ctx, c.point(faults.OpTwin))
	if !ok {
		return "", nil, false, false
	}
	switch act := f.Action; {
	case act.Status != 0:
		status, eb := httpapi.FaultAnswer(act, wire.NewTrackingID(), time.Now())
		b, _ := wire.Marshal(eb)
		return hubproto.TwinResponseTopic(status, rid), b, true, false
	case act.DelayMs > 0:
		wait(ctx, time.Duration(act.DelayMs)*time.Millisecond)
	case act.Drop == faults.DropBeforeResponse:
		return "", nil, false, true
	}
	return "", nil, false, false
}

// telemetryFault applies a telemetry fault rule before the message is
// appended: an injected status refuses it as a failed append would (the
// connection is closed, nothing acknowledged: refuse true); a delay holds
// it; dropAfter appends it, then closes the connection before the PUBACK
// (the device sends it again: a duplicate, as after a real network failure).
func (c *hubConn) telemetryFault(ctx context.Context) (refuse, dropAfter bool) {
	f, ok := c.h.o.Adapter.Faults.Check(ctx, c.point(faults.OpTelemetry))
	if !ok {
		return false, false
	}
	switch act := f.Action; {
	case act.Status != 0:
		return true, false
	case act.DelayMs > 0:
		wait(ctx, time.Duration(act.DelayMs)*time.Millisecond)
	case act.Drop == faults.DropBeforeResponse:
		return false, true
	}
	return false, false
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
