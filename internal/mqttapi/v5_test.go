package mqttapi_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps/internal/mqttapi"
)

// read5 reads one packet of an MQTT 5 connection.
func read5(t *testing.T, r *bufio.Reader) packets.Packet {
	t.Helper()
	pk, err := readPacket(r, 5)
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// An MQTT 5 device gets the same exchange as an MQTT 3.1.1 one: CONNACK
// without a session, SUBACK, then PUBACK before the QoS 1 response.
func TestMQTT5Exchange(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{})
	conn, err := tls.Dial("tcp", b.Addr().String(), tc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	send := func(pk packets.Packet, enc func(*packets.Packet, *bytes.Buffer) error) {
		t.Helper()
		pk.ProtocolVersion = 5
		var buf bytes.Buffer
		if err := enc(&pk, &buf); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{
		ProtocolName: []byte("MQTT"), ClientIdentifier: "dev-1", Clean: true, Keepalive: 60,
		UsernameFlag: true, Username: []byte("0ne00000001/registrations/dev-1/api-version=2019-03-31"),
		PasswordFlag: true, Password: []byte("sas")}}, (*packets.Packet).ConnectEncode)
	if pk := read5(t, r); pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != 0 || pk.SessionPresent {
		t.Fatalf("CONNACK = %+v", pk)
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 7,
		Filters: packets.Subscriptions{{Filter: "$dps/registrations/res/#", Qos: 1}}}, (*packets.Packet).SubscribeEncode)
	if pk := read5(t, r); pk.FixedHeader.Type != packets.Suback || pk.PacketID != 7 || len(pk.ReasonCodes) != 1 || pk.ReasonCodes[0] != 1 {
		t.Fatalf("SUBACK = %+v", pk)
	}
	send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 8,
		TopicName: "$dps/registrations/PUT/iotdps-register/?$rid=v5", Payload: []byte(`{"payload":{"v":5}}`)}, (*packets.Packet).PublishEncode)
	if pk := read5(t, r); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 8 {
		t.Fatalf("expected the PUBACK first, got %+v", pk)
	}
	pk := read5(t, r)
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 1 || pk.PacketID == 0 ||
		!strings.HasPrefix(pk.TopicName, "$dps/registrations/res/202/?$rid=v5") || !bytes.Contains(pk.Payload, []byte(`"operationId":"1.a.b"`)) {
		t.Fatalf("response = %+v (%s)", pk, pk.Payload)
	}
}
