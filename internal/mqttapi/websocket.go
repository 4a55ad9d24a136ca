package mqttapi

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wsstream"
)

// WebSocketPath is where devices speak MQTT over WebSocket, on the HTTPS
// port (the SDKs' MqttWs transports: wss://host:443/$iothub/websocket).
const WebSocketPath = "/$iothub/websocket"

// WebSocket returns the HTTP handler serving MQTT over WebSocket
// (subprotocol "mqtt", binary frames) with this broker: the same
// authentication, topics and limits as the TLS listener. Client
// certificates are those of the HTTPS connection carrying the WebSocket.
func (b *Broker) WebSocket() http.Handler {
	up := &websocket.Upgrader{
		Subprotocols:     []string{"mqtt"},
		HandshakeTimeout: b.ln.connect,
		// Devices are not browsers: there is no origin to protect, and
		// every connection authenticates in CONNECT.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errorCode":400001,"message":"MQTT over WebSocket: a WebSocket upgrade request is expected"}`)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader answered
		}
		defer c.Close()
		c.NetConn().SetDeadline(time.Now().Add(b.ln.connect)) // CONNECT; the HTTP server's deadlines no longer apply
		conn := &wsConn{Conn: wsstream.New(c), idle: b.ln.idle}
		if r.TLS != nil {
			conn.state = *r.TLS
		}
		if err := b.srv.EstablishConnection(wsListenerID, conn); err != nil && !errors.Is(err, io.EOF) {
			b.hook.o.Logger.Debug("mqtt over websocket: connection ended", logkey.Error, err)
		}
	})
}

const wsListenerID = "dps-mqtt-ws"

// wsListener is registered with the broker so that closing the broker
// disconnects the WebSocket clients too; connections arrive through
// WebSocket, not through this listener.
type wsListener struct {
	done chan struct{}
	once sync.Once
}

func (l *wsListener) Init(*slog.Logger) error     { return nil }
func (l *wsListener) ID() string                  { return wsListenerID }
func (l *wsListener) Address() string             { return WebSocketPath }
func (l *wsListener) Protocol() string            { return "wss" }
func (l *wsListener) Serve(listeners.EstablishFn) { <-l.done }
func (l *wsListener) Close(closeClients listeners.CloseFn) {
	closeClients(wsListenerID)
	l.once.Do(func() { close(l.done) })
}

// wsConn is the MQTT byte stream of one WebSocket, with the idle limit of
// the TLS listener's connections and the TLS state of the HTTPS connection.
type wsConn struct {
	*wsstream.Conn
	idle  time.Duration
	state tls.ConnectionState
}

// SetDeadline: as idleConn, a connection may stay silent at most idle.
func (c *wsConn) SetDeadline(t time.Time) error {
	if limit := time.Now().Add(c.idle); t.IsZero() || t.After(limit) {
		t = limit
	}
	return c.Conn.SetDeadline(t)
}

// ConnectionState is the TLS state of the HTTPS connection (client certificates).
func (c *wsConn) ConnectionState() tls.ConnectionState { return c.state }
