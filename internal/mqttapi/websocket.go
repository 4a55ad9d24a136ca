package mqttapi

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

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
		// The subprotocol is MQTT, whatever its case: the Node, Python and
		// .NET SDKs ask for "mqtt", the C SDK for "MQTT". It is echoed as
		// asked; a client asking for none is served too.
		var h http.Header
		for _, p := range websocket.Subprotocols(r) {
			if strings.EqualFold(p, "mqtt") {
				h = http.Header{"Sec-Websocket-Protocol": {p}}
				break
			}
		}
		c, err := up.Upgrade(w, r, h)
		if err != nil {
			return // the upgrader answered
		}
		defer c.Close()
		c.NetConn().SetDeadline(time.Now().Add(b.ln.connect)) // CONNECT; the HTTP server's deadlines no longer apply
		conn := &wsConn{Conn: wsstream.New(c), idle: b.ln.idle}
		if r.TLS != nil {
			conn.state = *r.TLS
		}
		if !b.ws.add(conn) {
			return // the broker is closing
		}
		defer b.ws.done(conn)
		if err := b.srv.EstablishConnection(wsListenerID, conn); err != nil && !errors.Is(err, io.EOF) {
			b.hook.o.Logger.Debug("mqtt over websocket: connection ended", logkey.Error, err)
		}
	})
}

// wsListenerID names WebSocket clients in the broker (logs, client listing).
const wsListenerID = "dps-mqtt-ws"

// wsClients tracks the WebSocket connections, which the broker's own
// listeners do not: closing the broker closes them and waits until they are
// detached, before the broker stops (mochi's shutdown must not race with a
// connection being attached).
type wsClients struct {
	mu     sync.Mutex
	closed bool
	conns  map[*wsConn]struct{}
	wg     sync.WaitGroup
}

func (w *wsClients) add(c *wsConn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	if w.conns == nil {
		w.conns = map[*wsConn]struct{}{}
	}
	w.conns[c] = struct{}{}
	w.wg.Add(1)
	return true
}

func (w *wsClients) done(c *wsConn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
	w.wg.Done()
}

func (w *wsClients) closeAll() {
	w.mu.Lock()
	w.closed = true
	for c := range w.conns {
		c.Close()
	}
	w.mu.Unlock()
	w.wg.Wait()
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
