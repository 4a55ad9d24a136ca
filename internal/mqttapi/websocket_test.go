package mqttapi_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/opendps/dps/internal/mqttapi"
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

// A request to the WebSocket path that is not an upgrade gets a clear error.
func TestWebSocketPathWithoutUpgrade(t *testing.T) {
	b, _ := broker(t, mqttapi.BrokerOptions{})
	url, tc := wsServer(t, b)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := hc.Get("https" + strings.TrimPrefix(url, "wss"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"errorCode":400001`) || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

// The subprotocol is echoed as the client spelled it ("MQTT" from the C SDK).
func TestWebSocketSubprotocol(t *testing.T) {
	b, _ := broker(t, mqttapi.BrokerOptions{})
	url, tc := wsServer(t, b)
	for _, asked := range []string{"mqtt", "MQTT"} {
		d := &websocket.Dialer{TLSClientConfig: tc, Subprotocols: []string{asked}}
		ws, resp, err := d.Dial(url, nil)
		if err != nil {
			t.Fatalf("%s: %v", asked, err)
		}
		if ws.Subprotocol() != asked {
			t.Errorf("asked %q, got %q", asked, ws.Subprotocol())
		}
		resp.Body.Close()
		ws.Close()
	}
}
