package mqttapi_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/mqttapi"
)

// c2dPublish reads the next packet, which must be a QoS 1 C2D PUBLISH
// with body want, and returns it.
func (c *rawConn) c2dPublish(want string) packets.Packet {
	c.t.Helper()
	pk := c.next()
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 1 || pk.PacketID == 0 || string(pk.Payload) != want ||
		!strings.HasPrefix(pk.TopicName, "devices/dev-c/messages/devicebound/") {
		c.t.Fatalf("got packet type %d QoS %d id %d on %q (%s), want a QoS 1 C2D PUBLISH of %q", pk.FixedHeader.Type, pk.FixedHeader.Qos,
			pk.PacketID, pk.TopicName, pk.Payload, want)
	}
	return pk
}

func (c *rawConn) puback(id uint16) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
}

// C2D over MQTT: messages sent while the device was offline arrive once
// it subscribes, in order, as QoS 1 PUBLISHes with IoT Hub's property
// bag; a PUBACK completes a message; one not acknowledged comes again on
// the next connection (whose CleanSession=0 session kept the
// subscription); a message sent while the device is connected arrives at
// once. Over TLS and over WebSocket.
func TestHubC2D(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-c", "")
	ctx := context.Background()
	exp := time.Now().Add(30 * time.Minute).UTC()
	send := func(m dps.CloudMessage) {
		t.Helper()
		if _, err := e.svc.SendC2D(ctx, hubA, "dev-c", m); err != nil {
			t.Fatal(err)
		}
	}
	depth := func(want int) {
		t.Helper()
		waitFor(t, func() bool { n, err := e.svc.QueueDepth(ctx, hubA, "dev-c"); return err == nil && n == want })
	}
	send(dps.CloudMessage{MessageID: "m/1", CorrelationID: "c1", Ack: "full", ContentType: "application/json", ContentEncoding: "utf-8",
		Expiry: exp, Properties: map[string]string{"temperature": "45", "a b": "x&y"}, Body: []byte(`{"n":1}`)})
	send(dps.CloudMessage{Body: []byte("two")})

	first := e.dial["tls"](t, 4)
	first.hubSession(hubA, "dev-c", key, false, false)
	first.quiet(200 * time.Millisecond) // nothing before the subscription
	if codes := first.subscribe("devices/dev-c/messages/devicebound/#@1"); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("SUBACK %v, want [1]", codes)
	}
	m1 := first.c2dPublish(`{"n":1}`)
	wantTopic := "devices/dev-c/messages/devicebound/%24.mid=m%2F1&%24.to=%2Fdevices%2Fdev-c%2Fmessages%2Fdevicebound&%24.cid=c1" +
		"&%24.ct=application%2Fjson&%24.ce=utf-8&%24.exp=" + strings.ReplaceAll(iothub.FormatExpiry(exp), ":", "%3A") +
		"&iothub-ack=full&a%20b=x%26y&temperature=45"
	if m1.TopicName != wantTopic {
		t.Errorf("topic\n%s\nwant\n%s", m1.TopicName, wantTopic)
	}
	m2 := first.c2dPublish("two")
	if !strings.HasPrefix(m2.TopicName, "devices/dev-c/messages/devicebound/%24.to=%2Fdevices%2Fdev-c%2Fmessages%2Fdevicebound&%24.exp=") ||
		!strings.HasSuffix(m2.TopicName, "&iothub-ack=none") {
		t.Errorf("second topic %q", m2.TopicName)
	}
	first.puback(m1.PacketID)
	depth(1)
	first.Close() // m2 not acknowledged
	waitFor(t, func() bool { _, ok := e.svc.Connected(hubA, "dev-c"); return !ok })

	again := e.dial["websocket"](t, 4)
	again.hubSession(hubA, "dev-c", key, false, true)
	r := again.c2dPublish("two") // at once, not after the lock: the ended connection released it
	again.puback(r.PacketID)
	depth(0)

	send(dps.CloudMessage{MessageID: "live", Body: []byte("three")})
	live := again.c2dPublish("three")
	if !strings.HasPrefix(live.TopicName, "devices/dev-c/messages/devicebound/%24.mid=live&") {
		t.Errorf("live topic %q", live.TopicName)
	}
	again.puback(live.PacketID)
	depth(0)
	again.quiet(200 * time.Millisecond)

	// A takeover by a clean session: it gets the message the old one did
	// not acknowledge, but only once it subscribes (embedded C's
	// devices/+/… filter is the device's own).
	send(dps.CloudMessage{Body: []byte("four")})
	again.c2dPublish("four") // not acknowledged
	clean := e.dial["tls"](t, 4)
	clean.hubSession(hubA, "dev-c", key, true, false)
	again.closed(5 * time.Second)
	clean.quiet(200 * time.Millisecond)
	clean.subscribe("devices/+/messages/devicebound/#@1")
	clean.puback(clean.c2dPublish("four").PacketID)
	depth(0)
}

func (c *rawConn) unsubscribe(filters ...string) {
	c.t.Helper()
	var subs packets.Subscriptions
	for _, f := range filters {
		subs = append(subs, packets.Subscription{Filter: f})
	}
	var buf bytes.Buffer
	un := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 12, ProtocolVersion: 4, Filters: subs}
	if err := un.UnsubscribeEncode(&buf); err != nil {
		c.t.Fatal(err)
	}
	c.Write(buf.Bytes())
	if pk := c.next(); pk.FixedHeader.Type != packets.Unsuback {
		c.t.Fatalf("got packet type %d, want the UNSUBACK", pk.FixedHeader.Type)
	}
}

// goroutines counts the goroutines of the process running fn (a
// function's qualified name, as in a stack trace).
func goroutines(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), fn)
		}
		buf = make([]byte, 2*len(buf))
	}
}

const (
	c2dLoopFn   = "mqttapi.(*hubConn).c2dLoop("
	hubWriterFn = "mqttapi.(*hubConn).write("
)

// A hub connection runs no C2D delivery loop and no writer of its own
// until it needs one: the loop starts with the first C2D subscription and
// delivers what was sent before it; a second subscription (the same filter
// again, embedded C's devices/+/… filter) starts no second loop and
// delivers nothing twice; after UNSUBSCRIBE nothing is delivered, and
// subscribing again delivers what was sent meanwhile, once. The loop ends
// with the connection.
func TestHubC2DSubscribe(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-c", "")
	ctx := context.Background()
	send := func(body string) {
		t.Helper()
		if _, err := e.svc.SendC2D(ctx, hubA, "dev-c", dps.CloudMessage{Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	depth := func(want int) {
		t.Helper()
		waitFor(t, func() bool { n, err := e.svc.QueueDepth(ctx, hubA, "dev-c"); return err == nil && n == want })
	}
	loops := func(want int) {
		t.Helper()
		waitFor(t, func() bool { return goroutines(c2dLoopFn) == want })
	}
	loops(0) // earlier tests' connections have ended
	send("one")
	c := e.dial["tls"](t, 4)
	c.hubSession(hubA, "dev-c", key, true, false)
	c.quiet(200 * time.Millisecond)
	if n := goroutines(c2dLoopFn); n != 0 {
		t.Fatalf("%d C2D loops before the device subscribed, want 0", n)
	}
	if n := goroutines(hubWriterFn); n != 0 {
		t.Fatalf("%d writers of an idle connection, want 0", n)
	}

	c.subscribe("devices/dev-c/messages/devicebound/#@1")
	one := c.c2dPublish("one")
	loops(1)
	c.subscribe("devices/dev-c/messages/devicebound/#@1")
	c.subscribe("devices/+/messages/devicebound/#@1")
	c.quiet(300 * time.Millisecond) // "one" is in flight: not delivered again
	if n := goroutines(c2dLoopFn); n != 1 {
		t.Fatalf("%d C2D loops after three subscriptions, want 1", n)
	}
	c.puback(one.PacketID)
	depth(0)
	send("two")
	c.puback(c.c2dPublish("two").PacketID)
	depth(0)
	c.quiet(200 * time.Millisecond)

	c.unsubscribe("devices/dev-c/messages/devicebound/#", "devices/+/messages/devicebound/#")
	send("three")
	c.quiet(300 * time.Millisecond)
	depth(1)
	c.subscribe("devices/dev-c/messages/devicebound/#@1")
	c.puback(c.c2dPublish("three").PacketID)
	depth(0)
	c.quiet(300 * time.Millisecond)
	if n := goroutines(c2dLoopFn); n != 1 {
		t.Fatalf("%d C2D loops after subscribing again, want 1", n)
	}
	c.Close()
	loops(0)
}
