package mqttapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/sas"
)

const (
	hubA = "hub-a.example.net"
	hubB = "hub-b.example.net"
)

// hubStore is an in-memory iothub.Store, its C2D queues in a real
// SQLite store. Device ids are folded as the stores fold them.
type hubStore struct {
	iothub.CloudStore
	mu      sync.Mutex
	devices map[string]dps.HubDevice
	etag    int
	msgs    []dps.Message
	// appendDelay slows AppendMessages down; appendErr makes it fail.
	appendDelay time.Duration
	appendErr   error
}

func storeKey(hub, id string) string { return strings.ToLower(hub) + "\x00" + strings.ToLower(id) }

func (s *hubStore) HubDevice(_ context.Context, hub, id string) (dps.HubDevice, error) {
	if id == "store-down" {
		return dps.HubDevice{}, &dps.Error{Kind: dps.KindUnavailable, Message: "the database is unavailable"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[storeKey(hub, id)]
	if !ok {
		return dps.HubDevice{}, dps.Errorf(dps.KindNotFound, "no device %s", id)
	}
	return d, nil
}

// ListHubDevices lists a hub's devices in folded device-ID order after
// after, as the real stores do.
func (s *hubStore) ListHubDevices(_ context.Context, hub, after string, limit int) ([]dps.HubDevice, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []dps.HubDevice
	for _, d := range s.devices {
		if strings.EqualFold(d.Hub, hub) && dps.FoldID(d.DeviceID) > dps.FoldID(after) {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b dps.HubDevice) int { return strings.Compare(dps.FoldID(a.DeviceID), dps.FoldID(b.DeviceID)) })
	return out[:min(limit, len(out))], nil
}

func (s *hubStore) PutHubDevice(_ context.Context, d dps.HubDevice) (dps.HubDevice, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := storeKey(d.Hub, d.DeviceID)
	if cur, ok := s.devices[k]; d.Replaces != "" && (!ok || cur.ETag != d.Replaces) {
		return dps.HubDevice{}, dps.Errorf(dps.KindConflict, "etag")
	}
	s.etag++
	d.ETag, d.Replaces = fmt.Sprint(s.etag), ""
	s.devices[k] = d
	return d, nil
}

func (s *hubStore) AppendMessages(ctx context.Context, msgs []dps.Message) ([]dps.Message, error) {
	s.mu.Lock()
	delay, fail := s.appendDelay, s.appendErr
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]dps.Message, len(msgs))
	for i, m := range msgs {
		m.Seq = int64(len(s.msgs) + 1)
		s.msgs = append(s.msgs, m)
		out[i] = m
	}
	return out, nil
}

func (s *hubStore) messages() []dps.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []dps.Message
	for _, m := range s.msgs {
		if m.System[iothub.PropMessageSource] == iothub.SourceTelemetry { // not the hub's connection events
			out = append(out, m)
		}
	}
	return out
}

// hubEnv is a broker serving DPS and the hubs hubA and hubB.
type hubEnv struct {
	b     *mqttapi.Broker
	svc   *iothub.Service
	store *hubStore
	dial  map[string]func(*testing.T, byte) *rawConn
	tc    *tls.Config
}

func newHubEnv(t *testing.T, o mqttapi.BrokerOptions) *hubEnv {
	t.Helper()
	e := &hubEnv{store: &hubStore{CloudStore: dpstest.NewSQLite(t), devices: map[string]dps.HubDevice{}}}
	e.svc = iothub.New(iothub.Options{Store: e.store, Hubs: []string{hubA, hubB}})
	o.Hub = e.svc
	e.b, e.tc = broker(t, o)
	e.dial = transports(t, e.b, e.tc)
	return e
}

// device creates an enabled symmetric-key device and returns its key.
func (e *hubEnv) device(t *testing.T, hub, id string, status dps.DeviceStatus) []byte {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	_, err := e.store.PutHubDevice(context.Background(), dps.HubDevice{Hub: hub, DeviceID: id, GenerationID: "gen-" + id, Status: status,
		Auth: dps.HubAuth{Type: dps.HubAuthSAS, PrimaryKey: dps.Key(base64.StdEncoding.EncodeToString(key))},
		Twin: json.RawMessage(`{"tags":{"site":"x"},"properties":{"desired":{"interval":5}}}`), Updated: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func hubToken(hub, id string, key []byte, exp time.Time) string {
	return sas.New(hub+"/devices/"+id, key, "", exp)
}

// hubConnect is the CONNECT of the Node SDK (clean session 0, keep-alive
// 180 unless told otherwise).
func hubConnect(hub, id, password string) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{
		ProtocolName: []byte("MQTT"), ClientIdentifier: id, Clean: false, Keepalive: 180,
		UsernameFlag: true, Username: []byte(hub + "/" + id + "/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4"),
		PasswordFlag: true, Password: []byte(password)}}
}

// hubSession connects a device with its key and checks the CONNACK.
func (c *rawConn) hubSession(hub, id string, key []byte, clean bool, present bool) {
	c.t.Helper()
	pk := hubConnect(hub, id, hubToken(hub, id, key, time.Now().Add(time.Hour)))
	pk.Connect.Clean = clean
	if ack := c.connect(pk); ack.ReasonCode != 0 || ack.SessionPresent != present {
		c.t.Fatalf("CONNACK code %#x, session present %v; want 0, %v", ack.ReasonCode, ack.SessionPresent, present)
	}
}

// subscribe sends one SUBSCRIBE with the filters (QoS 0 unless "filter@q")
// and returns the SUBACK's codes.
func (c *rawConn) subscribe(filters ...string) []byte {
	c.t.Helper()
	var subs packets.Subscriptions
	for _, f := range filters {
		var q byte
		if name, qos, ok := strings.Cut(f, "@"); ok {
			f, q = name, qos[0]-'0'
		}
		subs = append(subs, packets.Subscription{Filter: f, Qos: q})
	}
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 11, Filters: subs})
	pk := c.next()
	if pk.FixedHeader.Type != packets.Suback || pk.PacketID != 11 {
		c.t.Fatalf("got packet type %d, want the SUBACK", pk.FixedHeader.Type)
	}
	return pk.ReasonCodes
}

func (c *rawConn) publish(qos byte, id uint16, topic string, body []byte) {
	c.t.Helper()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, PacketID: id, TopicName: topic, Payload: body})
}

// hubPublish reads the next packet, which must be a QoS 0 PUBLISH on topic.
func (c *rawConn) hubPublish(topic string) []byte {
	c.t.Helper()
	pk := c.next()
	if pk.FixedHeader.Type != packets.Publish || pk.TopicName != topic || pk.FixedHeader.Qos != 0 {
		c.t.Fatalf("got packet type %d QoS %d on %q (%s), want a QoS 0 PUBLISH on %q", pk.FixedHeader.Type, pk.FixedHeader.Qos, pk.TopicName, pk.Payload, topic)
	}
	return pk.Payload
}

// twinGet asks for the twin at QoS 0 and returns the answer's body.
func (c *rawConn) twinGet(rid string) []byte {
	c.t.Helper()
	c.publish(0, 0, "$iothub/twin/GET/?$rid="+rid, []byte(" "))
	return c.hubPublish("$iothub/twin/res/200/?$rid=" + rid)
}

// Hub CONNECTs are refused with the codes of the reference: not authorized
// for a wrong key, an expired token, an unknown device, a module, a client
// ID that is not the username's device; server unavailable (retried) for a
// disabled device and a store failure; MQTT 3.1 and MQTT 5 as unsupported
// versions. A refused connection is closed.
func TestHubConnectRefusals(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-ok", "")
	offKey := e.device(t, hubA, "dev-off", dps.DeviceDisabled)
	other := make([]byte, 32)
	soon := time.Now().Add(time.Hour)
	for _, tt := range []struct {
		name string
		pk   packets.Packet
		v    byte
		want byte
	}{
		{"ok", hubConnect(hubA, "dev-ok", hubToken(hubA, "dev-ok", key, soon)), 4, 0},
		{"ok-host-in-upper-case", hubConnect(strings.ToUpper(hubA), "dev-ok", hubToken(hubA, "dev-ok", key, soon)), 4, 0},
		{"wrong-key", hubConnect(hubA, "dev-ok", hubToken(hubA, "dev-ok", other, soon)), 4, 5},
		{"expired-token", hubConnect(hubA, "dev-ok", hubToken(hubA, "dev-ok", key, time.Now().Add(-time.Hour))), 4, 5},
		{"token-of-another-hub", hubConnect(hubA, "dev-ok", hubToken(hubB, "dev-ok", key, soon)), 4, 5},
		{"unknown-device", hubConnect(hubA, "dev-none", hubToken(hubA, "dev-none", key, soon)), 4, 5},
		{"device-of-another-hub", hubConnect(hubB, "dev-ok", hubToken(hubB, "dev-ok", key, soon)), 4, 5},
		{"disabled", hubConnect(hubA, "dev-off", hubToken(hubA, "dev-off", offKey, soon)), 4, 3},
		{"store-down", hubConnect(hubA, "store-down", hubToken(hubA, "store-down", key, soon)), 4, 3},
		{"module", func() packets.Packet {
			pk := hubConnect(hubA, "dev-ok", hubToken(hubA, "dev-ok", key, soon))
			pk.Connect.ClientIdentifier = "dev-ok/mod"
			pk.Connect.Username = []byte(hubA + "/dev-ok/mod/?api-version=2021-04-12")
			return pk
		}(), 4, 5},
		{"client-id-mismatch", func() packets.Packet {
			pk := hubConnect(hubA, "dev-ok", hubToken(hubA, "dev-ok", key, soon))
			pk.Connect.ClientIdentifier = "dev-other"
			return pk
		}(), 4, 5},
		{"mqtt-3.1", func() packets.Packet {
			pk := hubConnect(hubA, "dev-ok", hubToken(hubA, "dev-ok", key, soon))
			pk.Connect.ProtocolName = []byte("MQIsdp")
			return pk
		}(), 3, 1},
		{"mqtt-5", hubConnect(hubA, "dev-ok", hubToken(hubA, "dev-ok", key, soon)), 5, 0x84},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial["tls"](t, tt.v)
			ack := c.connect(tt.pk)
			if ack.ReasonCode != tt.want || tt.want != 0 && ack.SessionPresent {
				t.Fatalf("CONNACK code %#x, session present %v; want %#x, false", ack.ReasonCode, ack.SessionPresent, tt.want)
			}
			if tt.want != 0 {
				c.closed(5 * time.Second)
			}
		})
	}
}

// A hub CONNECT that fails authentication leaves the connected device
// alone; an authenticated one replaces it (the first is closed without a
// DISCONNECT) and is the device's connection for the hub.
func TestHubTakeover(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-t", "")
	first := e.dial["tls"](t, 4)
	first.hubSession(hubA, "dev-t", key, true, false)
	first.subscribe("$iothub/twin/res/#")

	intruder := e.dial["tls"](t, 4)
	if ack := intruder.connect(hubConnect(hubA, "dev-t", hubToken(hubA, "dev-t", make([]byte, 32), time.Now().Add(time.Hour)))); ack.ReasonCode != 5 {
		t.Fatalf("intruder CONNACK %#x, want 5", ack.ReasonCode)
	}
	intruder.closed(5 * time.Second)
	first.twinGet("after-intruder")
	if _, ok := e.svc.Connected(hubA, "dev-t"); !ok {
		t.Fatal("the device is no longer connected after a refused CONNECT")
	}

	second := e.dial["tls"](t, 4)
	second.hubSession(hubA, "dev-t", key, true, false)
	first.closed(5 * time.Second)
	second.subscribe("$iothub/twin/res/#")
	second.twinGet("second")
}

// The same id as a DPS registration, and as a device of two hubs, are
// three sessions: none takes another over.
func TestHubAndDPSSessionsDoNotCollide(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	const id = "dev-same"
	keyA := e.device(t, hubA, id, "")
	keyB := e.device(t, hubB, id, "")
	for name, dial := range e.dial {
		t.Run(name, func(t *testing.T) {
			d := dial(t, 4)
			d.session(id, false)
			a := dial(t, 4)
			a.hubSession(hubA, id, keyA, true, false)
			a.subscribe("$iothub/twin/res/#")
			b := dial(t, 4)
			b.hubSession(hubB, id, keyB, true, false)
			b.subscribe("$iothub/twin/res/#")
			d.register("dps")
			a.twinGet("a")
			b.twinGet("b")
			d.quiet(100 * time.Millisecond)
		})
	}
}

// The twin as a device reads it has desired and reported properties with
// their versions, no tags; a reported patch is answered 204 with the new
// version and shows in the next GET; a patch that is not JSON gets 400 with
// IoT Hub's error body. A device that asked for answers at QoS 1 (C#,
// Python) gets the PUBACK first. Without a subscription to the responses a
// request is carried out but not answered.
func TestHubTwin(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-twin", "")
	c := e.dial["tls"](t, 4)
	c.hubSession(hubA, "dev-twin", key, false, false)
	c.publish(0, 0, "$iothub/twin/PATCH/properties/reported/?$rid=silent", []byte(`{"unanswered":true}`))
	c.quiet(300 * time.Millisecond)
	if codes := c.subscribe("$iothub/twin/res/#"); !bytes.Equal(codes, []byte{0}) {
		t.Fatalf("SUBACK %v", codes)
	}

	var doc map[string]map[string]any
	body := c.twinGet("1")
	if err := json.Unmarshal(body, &doc); err != nil || len(doc) != 2 || doc["desired"] == nil || doc["reported"] == nil {
		t.Fatalf("twin GET body %s, want {desired, reported}", body)
	}
	if doc["desired"]["interval"] != 5.0 || doc["desired"]["$version"] == nil || doc["reported"]["$version"] == nil || doc["reported"]["unanswered"] != true {
		t.Fatalf("twin GET body %s", body)
	}
	version := int64(doc["reported"]["$version"].(float64))

	c.publish(1, 5, "$iothub/twin/PATCH/properties/reported/?$rid=abc-2", []byte(`{"battery":55}`))
	if pk := c.next(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 5 {
		t.Fatalf("got packet type %d, want the PUBACK of the patch", pk.FixedHeader.Type)
	}
	if b := c.hubPublish(fmt.Sprintf("$iothub/twin/res/204/?$rid=abc-2&$version=%d", version+1)); len(b) != 0 {
		t.Fatalf("204 with body %q", b)
	}
	body = c.twinGet("3")
	if err := json.Unmarshal(body, &doc); err != nil || doc["reported"]["battery"] != 55.0 {
		t.Fatalf("twin GET after the patch: %s", body)
	}

	c.publish(0, 0, "$iothub/twin/PATCH/properties/reported/?$rid=4", []byte(`not json`))
	body = c.hubPublish("$iothub/twin/res/400/?$rid=4")
	var eb struct {
		ErrorCode    int    `json:"errorCode"`
		TrackingID   string `json:"trackingId"`
		Message      string `json:"message"`
		TimestampUtc string `json:"timestampUtc"`
	}
	if err := json.Unmarshal(body, &eb); err != nil || eb.ErrorCode != dps.CodeFormatError || eb.TrackingID == "" || eb.Message == "" || eb.TimestampUtc == "" {
		t.Fatalf("error body %s", body)
	}
}

// Telemetry is in the event log before its PUBACK (the store takes 300 ms
// here), with the bag's system properties as message fields and System
// entries, the application properties, and mqtt-retain for RETAIN=1;
// nothing reaches another device.
func TestHubTelemetryStoredBeforePuback(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	e.store.appendDelay = 300 * time.Millisecond
	key := e.device(t, hubA, "dev-tel", "")
	other := e.device(t, hubA, "dev-peer", "")
	peer := e.dial["tls"](t, 4)
	peer.hubSession(hubA, "dev-peer", other, true, false)
	if codes := peer.subscribe("devices/+/messages/devicebound/#@1", "$iothub/twin/res/#"); !bytes.Equal(codes, []byte{1, 0}) {
		t.Fatalf("SUBACK %v", codes)
	}
	for name, dial := range e.dial {
		t.Run(name, func(t *testing.T) {
			c := dial(t, 4)
			c.hubSession(hubA, "dev-tel", key, true, false)
			before := len(e.store.messages())
			bag := "%24.mid=m-1&%24.cid=c-1&%24.uid=u-1&%24.ct=application%2Fjson&%24.ce=utf-8&%24.to=%2Fsomewhere" +
				"&%24.exp=2030-01-01T00%3A00%3A00.000Z&%24.ifid=urn%3Ax&%24.sub=thermostat1&temp=21&alert&temp=22&%24.ctime=now"
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, PacketID: 9,
				TopicName: "devices/dev-tel/messages/events/" + bag, Payload: []byte(`{"t":21}`)})
			pk := c.next()
			msgs := e.store.messages()
			if pk.FixedHeader.Type != packets.Puback || pk.PacketID != 9 {
				t.Fatalf("got packet type %d, want the PUBACK", pk.FixedHeader.Type)
			}
			if len(msgs) != before+1 {
				t.Fatalf("PUBACK with %d messages stored, want %d: acknowledged before it was durable", len(msgs), before+1)
			}
			m := msgs[len(msgs)-1]
			if m.Hub != hubA || m.DeviceID != "dev-tel" || m.MessageID != "m-1" || m.CorrelationID != "c-1" || m.UserID != "u-1" ||
				m.ContentType != "application/json" || m.ContentEncoding != "utf-8" || string(m.Body) != `{"t":21}` {
				t.Errorf("message %+v", m)
			}
			for k, v := range map[string]string{"to": "/somewhere", "absolute-expiry-time": "2030-01-01T00:00:00.000Z",
				"iothub-interface-id": "urn:x", "dt-subject": "thermostat1", "iothub-connection-device-id": "dev-tel"} {
				if m.System[k] != v {
					t.Errorf("System[%q] = %q, want %q (%v)", k, m.System[k], v, m.System)
				}
			}
			wantProps := map[string]string{"temp": "21", "alert": "", "$.ctime": "now", "mqtt-retain": "true"}
			if fmt.Sprint(m.Properties) != fmt.Sprint(wantProps) {
				t.Errorf("Properties %v, want %v", m.Properties, wantProps)
			}
			// QoS 0, no bag, an empty body.
			c.publish(0, 0, "devices/dev-tel/messages/events/", nil)
			waitFor(t, func() bool { return len(e.store.messages()) == before+2 })
			if m := e.store.messages()[before+1]; m.Body == nil || len(m.Body) != 0 || m.Properties != nil {
				t.Errorf("empty message %+v", m)
			}
			c.quiet(100 * time.Millisecond)
		})
	}
	peer.quiet(100 * time.Millisecond)
	peer.twinGet("peer-fine")
}

// A message the hub cannot make durable is never acknowledged: the
// connection is closed (the device sends it again). So are messages over
// 256 KB; one just under the limit is accepted.
func TestHubTelemetryRefusals(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-r", "")
	c := e.dial["tls"](t, 4)
	c.hubSession(hubA, "dev-r", key, true, false)
	c.publish(1, 1, "devices/dev-r/messages/events/", make([]byte, iothub.DefaultMaxMessageSize-10))
	if pk := c.next(); pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("got packet type %d, want the PUBACK of a message under 256 KB", pk.FixedHeader.Type)
	}
	c.publish(1, 2, "devices/dev-r/messages/events/", make([]byte, iothub.DefaultMaxMessageSize+1))
	c.closed(5 * time.Second)

	e.store.mu.Lock()
	e.store.appendErr = &dps.Error{Kind: dps.KindUnavailable, Message: "down"}
	e.store.mu.Unlock()
	c = e.dial["tls"](t, 4)
	c.hubSession(hubA, "dev-r", key, true, false)
	c.publish(1, 3, "devices/dev-r/messages/events/", []byte("x"))
	c.closed(5 * time.Second)
}

// A hub device that publishes another device's telemetry, at QoS 2, to a
// topic of no kind the hub knows or with a wildcard, is disconnected
// without a word, and nothing is stored.
func TestHubPublishViolationsClose(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-v", "")
	for _, tt := range []struct {
		name  string
		qos   byte
		topic string
	}{
		{"telemetry-of-another-device", 1, "devices/dev-w/messages/events/"},
		{"telemetry-of-another-device-qos0", 0, "devices/dev-w/messages/events/"},
		{"module-telemetry", 1, "devices/dev-v/modules/m/messages/events/"},
		{"qos2", 2, "devices/dev-v/messages/events/"},
		{"qos2-twin", 2, "$iothub/twin/GET/?$rid=1"},
		{"undocumented", 1, "devices/dev-v/messages/devicebound/x"},
		{"undocumented-qos0", 0, "$dps/registrations/PUT/iotdps-register/?$rid=1"},
		{"wildcard", 1, "devices/+/messages/events/"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := e.dial["tls"](t, 4)
			c.hubSession(hubA, "dev-v", key, true, false)
			c.publish(tt.qos, 4, tt.topic, []byte("x"))
			c.closed(5 * time.Second)
		})
	}
	if n := len(e.store.messages()); n != 0 {
		t.Errorf("%d messages stored", n)
	}
}

// SUBSCRIBE: one code per filter in order; the documented filters are
// granted at most QoS 1, devices/+/… as the device's own C2D filter;
// another device's filter, wildcards and anything else get 0x80.
func TestHubSubscribe(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-s", "")
	c := e.dial["tls"](t, 4)
	c.hubSession(hubA, "dev-s", key, true, false)
	codes := c.subscribe("$iothub/twin/res/#", "$iothub/methods/POST/#@1", "$iothub/twin/PATCH/properties/desired/#@2",
		"devices/+/messages/devicebound/#@1", "devices/dev-s/messages/devicebound/#@1", "devices/dev-x/messages/devicebound/#@1",
		"#", "$iothub/#", "$iothub/twin/res/+", "devices/dev-s/modules/m/#@1", "$dps/registrations/res/#")
	if want := []byte{0, 1, 1, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}; !bytes.Equal(codes, want) {
		t.Fatalf("SUBACK codes %v, want %v", codes, want)
	}
}

// With CleanSession 0 the device's subscriptions survive a reconnect and a
// takeover (the Node SDK never subscribes again after renewing its token):
// a desired patch after the reconnect arrives without a new SUBSCRIBE, and
// CONNACK says a session was present. CleanSession 1 starts, and ends,
// without them; a session is dropped HubSessionExpiry after its connection
// ended.
func TestHubSessionSurvivesReconnect(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{HubSessionExpiry: 500 * time.Millisecond})
	key := e.device(t, hubA, "dev-p", "")
	ctx := context.Background()
	patch := func(n int) string {
		t.Helper()
		body := fmt.Sprintf(`{"n":%d}`, n)
		if _, err := e.svc.PatchDesired(ctx, hubA, "dev-p", []byte(body)); err != nil {
			t.Fatal(err)
		}
		return body
	}
	expect := func(c *rawConn, n int) {
		t.Helper()
		pk := c.next()
		var got map[string]any
		if pk.FixedHeader.Type != packets.Publish || !strings.HasPrefix(pk.TopicName, "$iothub/twin/PATCH/properties/desired/?$version=") ||
			json.Unmarshal(pk.Payload, &got) != nil || got["n"] != float64(n) || pk.TopicName != fmt.Sprintf("$iothub/twin/PATCH/properties/desired/?$version=%v", got["$version"]) {
			t.Fatalf("got packet type %d on %q (%s), want desired patch %d", pk.FixedHeader.Type, pk.TopicName, pk.Payload, n)
		}
	}

	first := e.dial["tls"](t, 4)
	first.hubSession(hubA, "dev-p", key, false, false)
	first.subscribe("$iothub/twin/PATCH/properties/desired/#")
	patch(1)
	expect(first, 1)
	first.Close()
	waitFor(t, func() bool { _, ok := e.svc.Connected(hubA, "dev-p"); return !ok })

	again := e.dial["websocket"](t, 4)
	again.hubSession(hubA, "dev-p", key, false, true)
	patch(2)
	expect(again, 2)

	taker := e.dial["tls"](t, 4)
	taker.hubSession(hubA, "dev-p", key, false, true)
	again.closed(5 * time.Second)
	patch(3)
	expect(taker, 3)

	clean := e.dial["tls"](t, 4)
	clean.hubSession(hubA, "dev-p", key, true, false)
	taker.closed(5 * time.Second)
	patch(4)
	clean.quiet(300 * time.Millisecond)
	clean.subscribe("$iothub/twin/PATCH/properties/desired/#")
	clean.Close()
	waitFor(t, func() bool { _, ok := e.svc.Connected(hubA, "dev-p"); return !ok })

	after := e.dial["tls"](t, 4)
	after.hubSession(hubA, "dev-p", key, false, false) // clean 1 ended the session
	after.subscribe("$iothub/twin/PATCH/properties/desired/#")
	after.Close()
	waitFor(t, func() bool { _, ok := e.svc.Connected(hubA, "dev-p"); return !ok })
	time.Sleep(time.Second) // past HubSessionExpiry
	late := e.dial["tls"](t, 4)
	late.hubSession(hubA, "dev-p", key, false, false)
	patch(5)
	late.quiet(300 * time.Millisecond)

	// UNSUBSCRIBE ends notifications.
	late.subscribe("$iothub/twin/PATCH/properties/desired/#")
	patch(6)
	expect(late, 6)
	var buf bytes.Buffer
	un := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 12, ProtocolVersion: 4,
		Filters: packets.Subscriptions{{Filter: "$iothub/twin/PATCH/properties/desired/#"}}}
	if err := un.UnsubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	late.Write(buf.Bytes())
	if pk := late.next(); pk.FixedHeader.Type != packets.Unsuback {
		t.Fatalf("got packet type %d, want UNSUBACK", pk.FixedHeader.Type)
	}
	patch(7)
	late.quiet(300 * time.Millisecond)
}

// A direct method reaches the subscribed device at QoS 0 with a JSON body
// (null for none), and its answer goes back to the caller; a device that
// did not subscribe to methods is not online for them.
func TestHubDirectMethod(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-m", "")
	ctx := context.Background()
	c := e.dial["tls"](t, 4)
	c.hubSession(hubA, "dev-m", key, true, false)
	if _, err := e.svc.InvokeMethod(ctx, hubA, "dev-m", "reboot", nil, 5*time.Second); dps.KindOf(err) != dps.KindNotFound {
		t.Fatalf("method to an unsubscribed device: %v, want not found", err)
	}
	c.subscribe("$iothub/methods/POST/#")
	for _, tt := range []struct{ payload, body string }{{`{"delay":1}`, `{"delay":1}`}, {"", "null"}} {
		type result struct {
			r   iothub.MethodResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := e.svc.InvokeMethod(ctx, hubA, "dev-m", "reboot", json.RawMessage(tt.payload), 10*time.Second)
			done <- result{r, err}
		}()
		pk := c.next()
		rid, ok := strings.CutPrefix(pk.TopicName, "$iothub/methods/POST/reboot/?$rid=")
		if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 0 || !ok || rid == "" || strings.ContainsAny(rid, "&/") || string(pk.Payload) != tt.body {
			t.Fatalf("got packet type %d QoS %d on %q (%s), want the method request with %s", pk.FixedHeader.Type, pk.FixedHeader.Qos, pk.TopicName, pk.Payload, tt.body)
		}
		c.publish(0, 0, "$iothub/methods/res/201/?$rid="+rid, []byte(`{"ok":true}`))
		select {
		case res := <-done:
			if res.err != nil || res.r.Status != 201 || string(res.r.Payload) != `{"ok":true}` {
				t.Fatalf("InvokeMethod = %+v, %v", res.r, res.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the device's answer did not reach the caller")
		}
	}
}

// A connection ends, without a DISCONNECT, when the SAS token it
// authenticated with expires.
func TestHubTokenExpiryCloses(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-x", "")
	c := e.dial["tls"](t, 4)
	exp := time.Now().Add(2 * time.Second)
	if ack := c.connect(hubConnect(hubA, "dev-x", hubToken(hubA, "dev-x", key, exp))); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ack.ReasonCode)
	}
	c.closed(5 * time.Second)
	if d := time.Until(exp.Truncate(time.Second)); d > 100*time.Millisecond {
		t.Errorf("closed %s before the token expired", d)
	}
}

// A hub connection with keep-alive k may be silent one and a half times k;
// with keep-alive 0 it has no timeout, not even the DPS idle limit.
func TestHubKeepAlive(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{IdleTimeout: 300 * time.Millisecond})
	key := e.device(t, hubA, "dev-k1", "")
	key0 := e.device(t, hubA, "dev-k0", "")
	t.Run("k=1", func(t *testing.T) {
		t.Parallel()
		c := e.dial["tls"](t, 4)
		pk := hubConnect(hubA, "dev-k1", hubToken(hubA, "dev-k1", key, time.Now().Add(time.Hour)))
		pk.Connect.Keepalive = 1
		if ack := c.connect(pk); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ack.ReasonCode)
		}
		silent(t, c, 1150*time.Millisecond, 2500*time.Millisecond)
	})
	t.Run("k=0", func(t *testing.T) {
		t.Parallel()
		c := e.dial["websocket"](t, 4)
		pk := hubConnect(hubA, "dev-k0", hubToken(hubA, "dev-k0", key0, time.Now().Add(time.Hour)))
		pk.Connect.Keepalive = 0
		if ack := c.connect(pk); ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ack.ReasonCode)
		}
		c.quiet(1500 * time.Millisecond)
	})
}

// A hub device connects over MQTT over WebSocket (the SDKs' MqttWs
// transports) and reads its twin.
func TestHubOverWebSocket(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	key := e.device(t, hubA, "dev-ws", "")
	c := e.dial["websocket"](t, 4)
	c.hubSession(hubA, "dev-ws", key, false, false)
	c.subscribe("$iothub/twin/res/#")
	if body := c.twinGet("ws"); !bytes.Contains(body, []byte(`"interval":5`)) {
		t.Fatalf("twin %s", body)
	}
}

// Serving a hub raises the broker's packet limit for hub telemetry; DPS
// connections keep theirs (a request packet over 100 KB ends the
// connection, as without a hub).
func TestHubKeepsTheDPSPacketLimit(t *testing.T) {
	e := newHubEnv(t, mqttapi.BrokerOptions{})
	for name, dial := range e.dial {
		t.Run(name, func(t *testing.T) {
			c := dial(t, 4)
			c.session("dps-big-"+name, true)
			c.publish(1, 2, "$dps/registrations/PUT/iotdps-register/?$rid=big", make([]byte, 120*1024))
			c.closed(5 * time.Second)
		})
	}
}

// lockedLog is a log sink safe for the broker's goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestHubConnectRefusalLogged: a refused hub CONNECT is logged at info
// with the reason, hub, device ID, transport and source address, never the
// SAS token.
func TestHubConnectRefusalLogged(t *testing.T) {
	var out lockedLog
	e := newHubEnv(t, mqttapi.BrokerOptions{Logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	e.device(t, hubA, "dev-log", "")
	tok := hubToken(hubA, "dev-log", make([]byte, 32), time.Now().Add(time.Hour))
	c := e.dial["tls"](t, 4)
	if ack := c.connect(hubConnect(hubA, "dev-log", tok)); ack.ReasonCode != 5 {
		t.Fatalf("CONNACK %#x, want 5", ack.ReasonCode)
	}
	c.closed(5 * time.Second)
	var line string
	for end := time.Now().Add(5 * time.Second); line == "" && time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.Contains(l, `msg="device refused"`) && strings.Contains(l, "device_id=dev-log") {
				line = l
			}
		}
	}
	for _, want := range []string{"level=INFO", `reason="not authenticated"`, "hub=" + hubA, "transport=mqtt", "source=127.0.0.1:", "signature does not match"} {
		if !strings.Contains(line, want) {
			t.Errorf("refusal log line %q lacks %q", line, want)
		}
	}
	if sig := tok[strings.Index(tok, "sig=")+4:]; strings.Contains(out.String(), sig[:10]) {
		t.Error("the log holds the token's signature")
	}
}
