package mqttapi_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/wsstream"
)

// rawConn speaks MQTT packet by packet, so a test sees exactly what the
// broker writes, over either transport. Packets are read by a goroutine:
// a read deadline would break a WebSocket for good.
type rawConn struct {
	t *testing.T
	net.Conn
	v    byte // protocol version: 4 (3.1.1) or 5
	pkts chan packets.Packet
	err  chan error // the error that ended reading
}

func newRaw(t *testing.T, c net.Conn, v byte) *rawConn {
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, Conn: c, v: v, pkts: make(chan packets.Packet, 16), err: make(chan error, 1)}
	go func() {
		r := bufio.NewReader(c)
		for {
			pk, err := readPacket(r, v)
			if err != nil {
				rc.err <- err
				return
			}
			rc.pkts <- pk
		}
	}()
	return rc
}

// transports dials the broker's two transports: MQTT over TLS, and MQTT over
// WebSocket (subprotocol "mqtt") on an HTTPS server.
func transports(t *testing.T, b *mqttapi.Broker, tc *tls.Config) map[string]func(t *testing.T, v byte) *rawConn {
	m := map[string]func(*testing.T, byte) *rawConn{}
	for name, dial := range dialers(t, b, tc) {
		m[name] = func(t *testing.T, v byte) *rawConn {
			t.Helper()
			return newRaw(t, dial(t), v)
		}
	}
	return m
}

// dialers open the network connections of transports, with nothing reading
// from them.
func dialers(t *testing.T, b *mqttapi.Broker, tc *tls.Config) map[string]func(t *testing.T) net.Conn {
	url, wtc := wsServer(t, b)
	return map[string]func(*testing.T) net.Conn{
		"tls": func(t *testing.T) net.Conn {
			t.Helper()
			c, err := tls.Dial("tcp", b.Addr().String(), tc)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		},
		"websocket": func(t *testing.T) net.Conn {
			t.Helper()
			d := &websocket.Dialer{TLSClientConfig: wtc, Subprotocols: []string{"mqtt"}}
			ws, resp, err := d.Dial(url, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			c := wsstream.New(ws)
			t.Cleanup(func() { c.Close() })
			return c
		},
	}
}

func (c *rawConn) send(pk packets.Packet) {
	c.t.Helper()
	if _, err := c.Write(encode(c.t, pk, c.v)); err != nil {
		c.t.Fatalf("send packet type %d: %v", pk.FixedHeader.Type, err)
	}
}

// encode encodes a packet of protocol version v.
func encode(t *testing.T, pk packets.Packet, v byte) []byte {
	t.Helper()
	pk.ProtocolVersion = v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	default:
		err = fmt.Errorf("cannot send packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var errTimeout = errors.New("no packet in time")

// read returns the next packet within d, or the error that ended the
// connection, or errTimeout.
func (c *rawConn) read(d time.Duration) (packets.Packet, error) {
	select { // packets read before the error come first
	case pk := <-c.pkts:
		return pk, nil
	default:
	}
	select {
	case pk := <-c.pkts:
		return pk, nil
	case err := <-c.err:
		select {
		case pk := <-c.pkts:
			c.err <- err
			return pk, nil
		default:
		}
		c.err <- err // for the next read
		return packets.Packet{}, err
	case <-time.After(d):
		return packets.Packet{}, errTimeout
	}
}

// readPacket reads one packet of protocol version v.
func readPacket(r *bufio.Reader, v byte) (packets.Packet, error) {
	var pk packets.Packet
	pk.ProtocolVersion = v
	h, err := r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(h); err != nil {
		return pk, err
	}
	n, mult := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			return pk, err
		}
		n += int(b&127) * mult
		mult *= 128
		if b&128 == 0 {
			break
		}
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Disconnect:
		if len(body) > 0 {
			pk.ReasonCode = body[0]
		}
	}
	return pk, err
}

// next reads the next packet, which must come within 5 seconds.
func (c *rawConn) next() packets.Packet {
	c.t.Helper()
	pk, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("reading a packet: %v", err)
	}
	return pk
}

// closed checks that the broker closes the connection within d and writes
// nothing before it (in particular no DISCONNECT to a 3.1.1 client).
func (c *rawConn) closed(d time.Duration) {
	c.t.Helper()
	pk, err := c.read(d)
	if err == nil {
		c.t.Fatalf("received packet type %d (% x) before the connection closed, want nothing", pk.FixedHeader.Type, pk.ReasonCode)
	}
	if err == errTimeout {
		c.t.Fatalf("connection still open after %s", d)
	}
}

// quiet checks that nothing arrives within d and the connection stays open.
func (c *rawConn) quiet(d time.Duration) {
	c.t.Helper()
	pk, err := c.read(d)
	if err == nil {
		c.t.Fatalf("received packet type %d on %q (%d bytes), want nothing", pk.FixedHeader.Type, pk.TopicName, len(pk.Payload))
	}
	if err != errTimeout {
		c.t.Fatalf("connection lost: %v", err)
	}
}

func connectPacket(id, password string, keepalive uint16) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{
		ProtocolName: []byte("MQTT"), ClientIdentifier: id, Clean: true, Keepalive: keepalive,
		UsernameFlag: true, Username: []byte("0ne00000001/registrations/" + id + "/api-version=2019-03-31"),
		PasswordFlag: true, Password: []byte(password)}}
}

// connect sends CONNECT and returns the CONNACK.
func (c *rawConn) connect(pk packets.Packet) packets.Packet {
	c.t.Helper()
	c.send(pk)
	ack := c.next()
	if ack.FixedHeader.Type != packets.Connack {
		c.t.Fatalf("got packet type %d, want CONNACK", ack.FixedHeader.Type)
	}
	return ack
}

// session connects with a good password and subscribes to the responses.
func (c *rawConn) session(id string, clean bool) {
	c.t.Helper()
	pk := connectPacket(id, "sas", 60)
	pk.Connect.Clean = clean
	if ack := c.connect(pk); ack.ReasonCode != 0 || ack.SessionPresent {
		c.t.Fatalf("CONNACK code %#x, session present %v; want 0, false", ack.ReasonCode, ack.SessionPresent)
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: mqttapi.ResponseFilter, Qos: 1}}})
	if pk := c.next(); pk.FixedHeader.Type != packets.Suback {
		c.t.Fatalf("got packet type %d, want SUBACK", pk.FixedHeader.Type)
	}
}

// register publishes a register request and checks its PUBACK and answer.
func (c *rawConn) register(rid string) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2,
		TopicName: "$dps/registrations/PUT/iotdps-register/?$rid=" + rid, Payload: []byte(`{"payload":{"a":1}}`)})
	if pk := c.next(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 2 {
		c.t.Fatalf("got packet type %d (id %d), want the PUBACK of the request", pk.FixedHeader.Type, pk.PacketID)
	}
	pk := c.next()
	if pk.FixedHeader.Type != packets.Publish || !strings.HasPrefix(pk.TopicName, "$dps/registrations/res/202/?$rid="+rid+"&") {
		c.t.Fatalf("got packet type %d on %q, want the answer to %s", pk.FixedHeader.Type, pk.TopicName, rid)
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
}

// A CONNECT that fails authentication leaves the connected device with the
// same client ID alone (MQTT-3.1.4-3: the old session is taken over only
// "if validation is successful"): it stays connected and its registration
// is answered, on both transports.
func TestUnauthenticatedConnectTakesNothingOver(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	for name, dial := range transports(t, b, tc) {
		for _, v := range []byte{4, 5} {
			t.Run(fmt.Sprintf("%s/intruder-v%d", name, v), func(t *testing.T) {
				victim := dial(t, 4)
				victim.session("dev-1", true)
				intruder := dial(t, v)
				want := map[byte]byte{4: 5, 5: 0x87}[v] // not authorized
				if ack := intruder.connect(connectPacket("dev-1", "bad", 60)); ack.ReasonCode != want || ack.SessionPresent {
					t.Fatalf("intruder CONNACK code %#x, session present %v; want %#x, false", ack.ReasonCode, ack.SessionPresent, want)
				}
				intruder.closed(5 * time.Second)
				victim.register("after-intruder")
			})
		}
	}
}

// An authenticated second connection with the same client ID replaces the
// first, whose connection is closed: without a DISCONNECT for a 3.1.1
// client, with DISCONNECT 0x8E (session taken over) for an MQTT 5 one. The
// new connection never gets a session, even when both asked for one.
func TestAuthenticatedConnectTakesOver(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	for name, dial := range transports(t, b, tc) {
		for _, v := range []byte{4, 5} {
			t.Run(fmt.Sprintf("%s/first-v%d", name, v), func(t *testing.T) {
				first := dial(t, v)
				first.session("dev-2", false)
				second := dial(t, 4)
				second.session("dev-2", false) // checks SessionPresent=0
				if v == 5 {
					if pk := first.next(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrSessionTakenOver.Code {
						t.Fatalf("MQTT 5 client got packet type %d code %#x, want DISCONNECT 0x8E", pk.FixedHeader.Type, pk.ReasonCode)
					}
				}
				first.closed(5 * time.Second)
				second.register("second")
			})
		}
	}
}

// The broker never writes DISCONNECT to a 3.1.1 client (3.1.1 defines it
// only from client to server; paho Python calls it a protocol error): a
// refused publish, a request it cannot answer and the broker's shutdown
// close the connection instead. MQTT 5 clients are told why.
func TestNoDisconnectPacketFor311Clients(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	dials := transports(t, b, tc)
	for name, dial := range dials {
		t.Run(name+"/publish-to-another-topic", func(t *testing.T) {
			c := dial(t, 4)
			c.session("dev-3", true)
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 3,
				TopicName: "devices/dev-3/messages/events/", Payload: []byte(`{}`)})
			c.closed(5 * time.Second)
		})
		t.Run(name+"/request-without-rid", func(t *testing.T) {
			c := dial(t, 4)
			c.session("dev-4", true)
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 3,
				TopicName: "$dps/registrations/PUT/iotdps-register/?x=1", Payload: []byte(`{}`)})
			if pk := c.next(); pk.FixedHeader.Type != packets.Puback {
				t.Fatalf("got packet type %d, want PUBACK", pk.FixedHeader.Type)
			}
			c.closed(5 * time.Second)
		})
	}
	var v4, v5 []*rawConn
	for name, dial := range dials {
		c := dial(t, 4)
		c.session("dev-close-4-"+name, true)
		v4 = append(v4, c)
		c = dial(t, 5)
		c.session("dev-close-5-"+name, true)
		v5 = append(v5, c)
	}
	b.Close()
	for _, c := range v4 {
		c.closed(5 * time.Second)
	}
	for _, c := range v5 {
		if pk := c.next(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrServerShuttingDown.Code {
			t.Errorf("MQTT 5 client got packet type %d code %#x at shutdown, want DISCONNECT 0x8B", pk.FixedHeader.Type, pk.ReasonCode)
		}
		c.closed(5 * time.Second)
	}
}

// A keep-alive of k seconds allows one and a half times k of silence
// (MQTT-3.1.2-24), not k + k/2 in whole seconds: with k=1 a client pinging
// every 1.1 s stays connected (400 ms to spare; whole seconds allow 1 s),
// and silence ends the connection after about 1.5 s (not before 1.15 s);
// with k=3, after about 4.5 s (4 s in whole seconds).
func TestKeepAliveIsOneAndAHalfTimes(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	for name, dial := range transports(t, b, tc) {
		t.Run(name+"/k=1", func(t *testing.T) {
			t.Parallel()
			c := dial(t, 4)
			if ack := c.connect(connectPacket("ka-1-"+name, "sas", 1)); ack.ReasonCode != 0 {
				t.Fatalf("CONNACK %#x", ack.ReasonCode)
			}
			for range 4 {
				time.Sleep(1100 * time.Millisecond)
				c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
				if pk := c.next(); pk.FixedHeader.Type != packets.Pingresp {
					t.Fatalf("got packet type %d, want PINGRESP", pk.FixedHeader.Type)
				}
			}
			silent(t, c, 1150*time.Millisecond, 2500*time.Millisecond)
		})
		t.Run(name+"/k=1-slow-answer", func(t *testing.T) {
			// The broker takes 2 s to answer: longer than the keep-alive
			// allows, but the client was not silent, the broker was busy.
			t.Parallel()
			c := dial(t, 4)
			if ack := c.connect(connectPacket("ka-slow-"+name, "sas", 1)); ack.ReasonCode != 0 {
				t.Fatalf("CONNACK %#x", ack.ReasonCode)
			}
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2,
				TopicName: "$dps/registrations/PUT/iotdps-register/?$rid=slow", Payload: []byte(`{"payload":"slow"}`)})
			if pk := c.next(); pk.FixedHeader.Type != packets.Puback {
				t.Fatalf("got packet type %d, want PUBACK", pk.FixedHeader.Type)
			}
			if pk := c.next(); pk.FixedHeader.Type != packets.Publish || !strings.HasPrefix(pk.TopicName, "$dps/registrations/res/202/?$rid=slow") {
				t.Fatalf("got packet type %d on %q, want the answer", pk.FixedHeader.Type, pk.TopicName)
			}
		})
		t.Run(name+"/k=3", func(t *testing.T) {
			t.Parallel()
			c := dial(t, 4)
			if ack := c.connect(connectPacket("ka-3-"+name, "sas", 3)); ack.ReasonCode != 0 {
				t.Fatalf("CONNACK %#x", ack.ReasonCode)
			}
			silent(t, c, 4300*time.Millisecond, 6*time.Second)
		})
	}
}

// silent waits, sending nothing, until the broker closes c, which must
// happen between lo and hi from now.
func silent(t *testing.T, c *rawConn, lo, hi time.Duration) {
	t.Helper()
	start := time.Now()
	c.closed(hi + time.Second)
	if d := time.Since(start); d < lo || d > hi {
		t.Errorf("a silent client was dropped after %s, want between %s and %s", d.Round(time.Millisecond), lo, hi)
	}
}

// A wrong credential is refused for good (not authorized); an outage or a
// timeout of the service gets the refusal clients retry (server
// unavailable), in MQTT 3.1.1 and MQTT 5 codes.
func TestConnectRefusals(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	for name, dial := range transports(t, b, tc) {
		for _, tt := range []struct {
			password string
			v3, v5   byte
		}{
			{"bad", 5, 0x87},
			{"down", 3, 0x88},
			{"slow", 3, 0x88},
		} {
			for _, v := range []byte{4, 5} {
				t.Run(fmt.Sprintf("%s/%s/v%d", name, tt.password, v), func(t *testing.T) {
					want := map[byte]byte{4: tt.v3, 5: tt.v5}[v]
					c := dial(t, v)
					if ack := c.connect(connectPacket("dev-r", tt.password, 60)); ack.ReasonCode != want || ack.SessionPresent {
						t.Errorf("CONNACK code %#x, session present %v; want %#x, false", ack.ReasonCode, ack.SessionPresent, want)
					}
					c.closed(5 * time.Second)
				})
			}
		}
		t.Run(name+"/username-of-another-device", func(t *testing.T) {
			c := dial(t, 4)
			pk := connectPacket("dev-r", "sas", 60)
			pk.Connect.Username = []byte("0ne00000001/registrations/dev-other/api-version=2019-03-31")
			if ack := c.connect(pk); ack.ReasonCode != 5 {
				t.Errorf("CONNACK code %#x, want 5", ack.ReasonCode)
			}
		})
	}
}

// A device's will, even one on the response filter itself, reaches no
// other device when it disconnects ungracefully; nor does anything else a
// device publishes or asks to retain.
func TestNothingCrossesDevices(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	fake := []byte(`{"operationId":"x","status":"assigned","registrationState":{"assignedHub":"evil.example.net","deviceId":"x","status":"assigned","pad":"` +
		strings.Repeat("A", 60*1024) + `"}}`)
	for name, dial := range transports(t, b, tc) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var victims []*rawConn
			for i := range 3 {
				c := dial(t, 4)
				c.session(fmt.Sprintf("victim-%s-%d", name, i), true)
				victims = append(victims, c)
			}
			for i, topic := range []string{mqttapi.ResponseFilter, "$dps/registrations/res/200/?$rid=1"} {
				attacker := dial(t, 4)
				pk := connectPacket(fmt.Sprintf("attacker-%s-%d", name, i), "sas", 60)
				pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillQos = true, topic, fake, 1
				if ack := attacker.connect(pk); ack.ReasonCode != 0 {
					t.Fatalf("attacker CONNACK %#x", ack.ReasonCode)
				}
				// Retained and plain publishes on the request topics, at QoS 0
				// (refused topics at QoS 0 are dropped without a word).
				for _, topic := range []string{"$dps/registrations/PUT/iotdps-register/?$rid=r", "$dps/registrations/res/200/?$rid=1"} {
					attacker.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: topic, Payload: fake})
				}
				attacker.Close() // no DISCONNECT: the will is due
			}
			victims[0].quiet(time.Second)
			for _, c := range victims[1:] {
				c.quiet(100 * time.Millisecond)
			}
			late := dial(t, 4)
			late.session("late-"+name, true)
			late.quiet(500 * time.Millisecond)
			victims[0].register("still-fine")
		})
	}
}

// A takeover admits the new connection only once the earlier one has ended:
// mochi's teardown of the earlier connection removes its client ID from the
// broker's clients and subscriptions, and must not remove the new
// connection's. The earlier connection is in the middle of a slow request
// (2 s) when it is taken over; the request is cancelled, so the new
// connection does not wait for it.
func TestTakeoverKeepsTheNewSession(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	for name, dial := range transports(t, b, tc) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			id := "keep-" + name
			first := dial(t, 4)
			first.session(id, true)
			first.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2,
				TopicName: "$dps/registrations/PUT/iotdps-register/?$rid=slow", Payload: []byte(`{"payload":"slow"}`)})
			if pk := first.next(); pk.FixedHeader.Type != packets.Puback {
				t.Fatalf("got packet type %d, want PUBACK", pk.FixedHeader.Type)
			}
			slowEnds := time.Now().Add(2 * time.Second)
			second := dial(t, 4)
			start := time.Now()
			second.session(id, true)
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Errorf("the takeover took %s: it waited for the earlier connection's request", d.Round(time.Millisecond))
			}
			first.closed(5 * time.Second)
			// Past the end the slow request would have had, the earlier
			// connection's teardown has run whatever the order.
			time.Sleep(time.Until(slowEnds) + 300*time.Millisecond)
			remote, subscribed := b.MochiClient(id)
			if remote != second.LocalAddr().String() || !subscribed {
				t.Errorf("after the takeover the broker holds client %q (subscribed %v), want the new connection %s, subscribed",
					remote, subscribed, second.LocalAddr())
			}
			second.register("after-takeover")
		})
	}
}

// A client that stopped reading holds neither a takeover of its session nor
// the broker's shutdown longer than the broker tries to write it a
// DISCONNECT (2 s), over either transport. The client asks for 256 KB
// answers without reading them until the broker's writes block.
func TestStalledClientHoldsNothing(t *testing.T) {
	for _, transport := range []string{"tls", "websocket"} {
		for _, when := range []string{"takeover", "shutdown"} {
			t.Run(transport+"/"+when, func(t *testing.T) {
				t.Parallel()
				f := &fakeRegistrar{}
				b, tc := broker(t, mqttapi.BrokerOptions{Adapter: &mqttapi.Adapter{Registrar: f}})
				id := "stalled-" + transport + "-" + when
				dial := dialers(t, b, tc)[transport]
				stalled := dial(t)
				if _, err := stalled.Write(encode(t, connectPacket(id, "sas", 60), 5)); err != nil {
					t.Fatal(err)
				}
				if ack, err := readPacket(bufio.NewReader(stalled), 5); err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
					t.Fatalf("CONNACK %+v, %v", ack, err)
				}
				const requests = 200
				var polls [][]byte
				for i := range requests {
					polls = append(polls, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish},
						TopicName: fmt.Sprintf("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%d&operationId=big", i)}, 5))
				}
				go func() { // blocks once the broker stops reading; ends when the test closes the connection
					for _, p := range polls {
						if _, err := stalled.Write(p); err != nil {
							return
						}
					}
				}()
				answered := stalls(t, &f.big)
				if answered >= requests {
					t.Fatalf("all %d answers were written: the client's buffers never filled and the test proves nothing", answered)
				}

				start := time.Now()
				switch when {
				case "takeover":
					second := newRaw(t, dial(t), 4)
					second.session(id, true) // within 5 s
					second.register("after-stall")
				case "shutdown":
					closed := make(chan struct{})
					go func() {
						b.Close()
						close(closed)
					}()
					select {
					case <-closed:
					case <-time.After(5 * time.Second):
						t.Fatal("the broker's shutdown waits for a client that does not read")
					}
				}
				if d := time.Since(start); d > 4*time.Second {
					t.Errorf("%s took %s with a stalled client", when, d.Round(time.Millisecond))
				}
			})
		}
	}
}

// stalls waits until n stops growing (the broker is stuck writing to a
// client) and returns it.
func stalls(t *testing.T, n *atomic.Int64) int64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	last, since := n.Load(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if cur := n.Load(); cur != last {
			last, since = cur, time.Now()
		} else if cur > 0 && time.Since(since) > 500*time.Millisecond {
			return cur
		}
	}
	t.Fatalf("the broker kept answering (%d answers)", last)
	return 0
}
