package mqttapi_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/wsstream"
)

// wsServer serves the broker's WebSocket handler over real TLS on loopback.
func wsServer(t *testing.T, b *mqttapi.Broker) (url string, tc *tls.Config) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(mqttapi.WebSocketPath, b.WebSocket())
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return "wss://" + srv.Listener.Addr().String() + mqttapi.WebSocketPath, &tls.Config{RootCAs: pool}
}

// A device registers over MQTT over WebSocket (the SDKs' MqttWs
// transports) and gets the same response as over MQTT/TLS; closing the
// broker disconnects it.
func TestWebSocketRegister(t *testing.T) {
	b, _ := broker(t, mqttapi.BrokerOptions{})
	url, tc := wsServer(t, b)
	lost := make(chan struct{})
	o := paho.NewClientOptions().AddBroker(url).SetClientID("dev-ws").
		SetUsername("0ne00000001/registrations/dev-ws/api-version=2019-03-31").SetPassword("sas").
		SetTLSConfig(tc).SetAutoReconnect(false).SetProtocolVersion(4).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect over websocket: %v", tok.Error())
	}
	got := make(chan paho.Message, 1)
	if tok := c.Subscribe("$dps/registrations/res/#", 1, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := c.Publish("$dps/registrations/PUT/iotdps-register/?$rid=ws1", 1, false, `{"registrationId":"dev-ws","payload":{"a":1}}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-got:
		if !strings.HasPrefix(m.Topic(), "$dps/registrations/res/202/?$rid=ws1") || !strings.Contains(string(m.Payload()), `"operationId":"1.a.b"`) {
			t.Errorf("response %s %s", m.Topic(), m.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no response over websocket")
	}
	b.Close()
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the broker left a websocket client connected")
	}
}

// A request to the WebSocket path that is not an upgrade gets a clear
// error, rendered as every DPS error (trackingId, timestampUtc,
// x-ms-request-id).
func TestWebSocketPathWithoutUpgrade(t *testing.T) {
	b, _ := broker(t, mqttapi.BrokerOptions{})
	url, tc := wsServer(t, b)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := hc.Get("https" + strings.TrimPrefix(url, "wss"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	checkDPSError(t, resp, http.StatusBadRequest, 400004, "upgrade")
}

// checkDPSError checks an HTTP answer is a DPS JSON error.
func checkDPSError(t *testing.T, resp *http.Response, status, code int, says string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		ErrorCode    int    `json:"errorCode"`
		TrackingID   string `json:"trackingId"`
		Message      string `json:"message"`
		TimestampUtc string `json:"timestampUtc"`
	}
	if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != status || e.ErrorCode != code || e.TrackingID == "" ||
		e.TimestampUtc == "" || !strings.Contains(e.Message, says) {
		t.Errorf("answer %d %s, want %d with the DPS error JSON (errorCode %d, trackingId, timestampUtc, a message about %q)", resp.StatusCode, body, status, code, says)
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") || resp.Header.Get("x-ms-request-id") == "" ||
		resp.Header.Get("x-ms-error-code") != strconv.Itoa(code) {
		t.Errorf("headers %v, want a JSON content type, x-ms-request-id and x-ms-error-code", resp.Header)
	}
}

// A client that offers only other subprotocols (AMQP over WebSocket offers
// AMQPWSB10), or none at all, is refused at the handshake with a 400 DPS
// error saying the subprotocol mqtt is required; MQTT among others is chosen.
func TestWebSocketSubprotocolChoice(t *testing.T) {
	b, _ := broker(t, mqttapi.BrokerOptions{})
	url, tc := wsServer(t, b)
	for _, offered := range [][]string{nil, {"AMQPWSB10"}, {"amqp", "mqttv5"}} {
		_, resp, err := (&websocket.Dialer{TLSClientConfig: tc, Subprotocols: offered}).Dial(url, nil)
		if err == nil || resp == nil {
			t.Fatalf("offered %v: the handshake succeeded (%v)", offered, err)
		}
		checkDPSError(t, resp, http.StatusBadRequest, 400004, "requires the WebSocket subprotocol mqtt")
		resp.Body.Close()
	}
	ws, resp, err := (&websocket.Dialer{TLSClientConfig: tc, Subprotocols: []string{"AMQPWSB10", "MQTT"}}).Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ws.Subprotocol() != "MQTT" {
		t.Errorf("offered AMQPWSB10 and MQTT, got %q, want MQTT", ws.Subprotocol())
	}
	newRaw(t, wsstream.New(ws), 4).session("dev-proto", true)
	ws.Close()
}

// The subprotocol is echoed as the client spelled it: "mqtt" (Node,
// Python, .NET) and "MQTT" (C SDK) are both served.
func TestWebSocketSubprotocol(t *testing.T) {
	b, _ := broker(t, mqttapi.BrokerOptions{})
	url, tc := wsServer(t, b)
	for _, asked := range []string{"mqtt", "MQTT"} {
		d := &websocket.Dialer{TLSClientConfig: tc, Subprotocols: []string{asked}}
		ws, resp, err := d.Dial(url, nil)
		if err != nil {
			t.Fatalf("%s: %v", asked, err)
		}
		resp.Body.Close()
		if ws.Subprotocol() != asked {
			t.Errorf("asked %q, got %q", asked, ws.Subprotocol())
		}
		newRaw(t, wsstream.New(ws), 4).session("dev-"+asked, true)
		ws.Close()
	}
}
