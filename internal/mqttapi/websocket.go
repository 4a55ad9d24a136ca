package mqttapi

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/httpapi"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wsstream"
)

// WebSocketPath is where devices speak MQTT over WebSocket, on the HTTPS
// port (the SDKs' MqttWs transports: wss://host:443/$iothub/websocket).
const WebSocketPath = "/$iothub/websocket"

// wsListenerID names WebSocket clients in the broker (logs, client listing).
const wsListenerID = "dps-mqtt-ws"

// WebSocket returns the HTTP handler serving MQTT over WebSocket
// (subprotocol "mqtt", binary frames) with this broker: the same
// authentication, topics and limits as the TLS listener. Client
// certificates are those of the HTTPS connection carrying the WebSocket.
// Requests it cannot serve get the DPS error JSON, as on the device API.
func (b *Broker) WebSocket() http.Handler {
	up := &websocket.Upgrader{
		HandshakeTimeout: b.o.ConnectTimeout,
		// Devices are not browsers: there is no origin to protect, and
		// every connection authenticates in CONNECT.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	errs := httpapi.New(httpapi.Options{Logger: b.o.Logger, RetryAfter: b.o.Adapter.RetryAfter})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			errs.WriteError(w, r, dps.Errorf(dps.KindInvalid, "MQTT over WebSocket: a WebSocket upgrade request is expected"))
			return
		}
		offered := websocket.Subprotocols(r)
		proto, ok := subprotocol(offered)
		if !ok {
			list := strings.Join(offered, ", ")
			if list == "" {
				list = "none"
			}
			errs.WriteError(w, r, dps.Errorf(dps.KindInvalid, "MQTT over WebSocket requires the WebSocket subprotocol mqtt; the request offered %s", list))
			return
		}
		if !b.conns.acquire() {
			// 429 with Retry-After: the refusal is logged by b.refused,
			// at most every 10 s, not once per request.
			b.refused("mqtt-ws")
			errs.WriteError(w, r, dps.Errorf(dps.KindThrottled, "too many MQTT connections are open; retry later"))
			return
		}
		defer b.conns.release()
		c, err := up.Upgrade(w, r, http.Header{"Sec-Websocket-Protocol": {proto}})
		if err != nil {
			return // the upgrader answered
		}
		defer c.Close()
		c.NetConn().SetDeadline(time.Now().Add(b.o.ConnectTimeout)) // CONNECT; the HTTP server's deadlines no longer apply
		stream := wsstream.New(c)
		stream.WriteTimeout = b.o.RequestTimeout // a device that stops reading does not hold a writer
		conn := &wsConn{Conn: stream, connState: newConnState(b.o.IdleTimeout)}
		defer conn.finish()
		if r.TLS != nil {
			conn.tls = *r.TLS
		}
		if !b.conns.track(conn) {
			return // the broker is closing
		}
		if err := b.srv.EstablishConnection(wsListenerID, conn); err != nil && !errors.Is(err, io.EOF) {
			b.o.Logger.Debug("mqtt over websocket: connection ended", logkey.Error, err)
		}
		b.hook.forget(&conn.connState)
		b.conns.untrack(conn)
	})
}

// subprotocol picks MQTT among the subprotocols a client offered, spelled
// as it was offered, whatever its case: the Node, Python and .NET SDKs ask
// for "mqtt", the C SDK for "MQTT". ok is false when the client offered
// other protocols only (an AMQP-over-WebSocket client offers "AMQPWSB10")
// or none at all: such a client is refused at the handshake with a clear
// error instead of failing later on a malformed packet. Every SDK offers
// the subprotocol, and an MQTT client must (MQTT-6.0.0-3): a request
// without one is not from an MQTT client.
func subprotocol(offered []string) (proto string, ok bool) {
	for _, p := range offered {
		if strings.EqualFold(p, "mqtt") {
			return p, true
		}
	}
	return "", false
}
