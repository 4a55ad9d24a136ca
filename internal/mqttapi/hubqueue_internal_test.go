package mqttapi

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/iothub"
)

const qHub = "hub-q.example.net"

func (c *hubConn) queued() int {
	c.out.mu.Lock()
	defer c.out.mu.Unlock()
	return len(c.out.pending)
}

// pipeHubConn is an established hub connection, subscribed to methods,
// whose device is the other end of a synchronous pipe: nothing written to
// it goes anywhere until the test reads.
func pipeHubConn(t *testing.T) (*hubConn, *bufio.Reader) {
	t.Helper()
	server, device := net.Pipe()
	srv := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	cl := srv.NewClient(server, "t", hubClientID(qHub, "dev-q"), false)
	st := newConnState(time.Minute)
	h := &hook{o: BrokerOptions{Logger: slog.New(slog.DiscardHandler), RequestTimeout: time.Second}, srv: srv}
	c := newHubConn(h, cl, &st, qHub, hubproto.Username{Host: qHub, DeviceID: "dev-q"}, true)
	c.id = iothub.Identity{Hub: qHub, DeviceID: "dev-q"}
	c.session = &hubSession{}
	c.session.add(hubproto.FilterMethods)
	t.Cleanup(func() {
		st.cancel()
		server.Close()
		device.Close()
	})
	device.SetReadDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(device)
}

// readPublish reads the next packet from the device's end, which must be a
// QoS 0 PUBLISH, and returns its payload.
func readPublish(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	b, err := r.ReadByte()
	if err != nil {
		t.Fatal(err)
	}
	var fh packets.FixedHeader
	if err := fh.Decode(b); err != nil {
		t.Fatal(err)
	}
	if fh.Remaining, _, err = packets.DecodeLength(r); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 4}
	if fh.Type != packets.Publish || fh.Qos != 0 {
		t.Fatalf("packet type %d QoS %d, want a QoS 0 PUBLISH", fh.Type, fh.Qos)
	}
	if err := pk.PublishDecode(buf); err != nil {
		t.Fatal(err)
	}
	return string(pk.Payload)
}

// The hub's messages to a device that does not read: hubQueue wait, and
// the next ones are dropped (Method reports false) — before CONNACK, when
// nothing is written yet, and once the writer is stuck writing one message
// to the device (that one no longer counts). What was queued is delivered
// in order once the device reads.
func TestHubQueueFull(t *testing.T) {
	c, dev := pipeHubConn(t)
	method := func(n int) bool { return c.Method("m", fmt.Sprint(n), fmt.Appendf(nil, "%d", n)) }
	for i := 1; i <= hubQueue; i++ {
		if !method(i) {
			t.Fatalf("message %d dropped, want queued (%d wait at most)", i, hubQueue)
		}
	}
	if method(hubQueue + 1) {
		t.Fatalf("message %d queued, want dropped: %d already wait", hubQueue+1, hubQueue)
	}
	time.Sleep(50 * time.Millisecond)
	if n := c.queued(); n != hubQueue {
		t.Fatalf("%d messages wait before CONNACK, want %d: nothing is written before it", n, hubQueue)
	}
	c.established() // the writer takes message 1 and is stuck writing it
	waitUntil(t, func() bool { return c.queued() == hubQueue-1 })
	if !method(hubQueue + 2) {
		t.Fatalf("message %d dropped, want queued: the one being written does not count", hubQueue+2)
	}
	if method(hubQueue + 3) {
		t.Fatalf("message %d queued, want dropped", hubQueue+3)
	}
	want := []string{}
	for i := 1; i <= hubQueue; i++ {
		want = append(want, fmt.Sprint(i))
	}
	want = append(want, fmt.Sprint(hubQueue+2))
	for i, w := range want {
		if got := readPublish(t, dev); got != w {
			t.Fatalf("message %d delivered is %q, want %q", i+1, got, w)
		}
	}
	// Drained: the queue takes hubQueue again while the device does not read.
	waitUntil(t, func() bool { return c.queued() == 0 })
	if !method(100) {
		t.Fatal("a message to a drained queue was dropped")
	}
	if got := readPublish(t, dev); got != "100" {
		t.Fatalf("got %q, want 100", got)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}
