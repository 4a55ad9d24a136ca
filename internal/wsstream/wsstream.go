// Package wsstream carries a byte stream (MQTT) over WebSocket binary
// messages, as MQTT over WebSocket does: message boundaries mean nothing,
// the bytes of consecutive messages form one stream.
package wsstream

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is a net.Conn over a WebSocket. Addresses and deadlines are those of
// the underlying connection.
type Conn struct {
	net.Conn
	ws  *websocket.Conn
	r   io.Reader // the message being read
	wmu sync.Mutex

	// WriteTimeout bounds the writing of one message (0: no bound). Set it
	// before the first Write. The WebSocket library applies its own write
	// deadline to every frame (none unless set), replacing any deadline set
	// on the underlying connection, so without it a peer that stops reading
	// blocks a writer until TCP gives up.
	WriteTimeout time.Duration
}

// New wraps ws.
func New(ws *websocket.Conn) *Conn { return &Conn{Conn: ws.NetConn(), ws: ws} }

// ErrNotBinary is returned when the peer sends a text message.
var ErrNotBinary = errors.New("wsstream: only binary messages carry the stream")

// Read reads the stream, across message boundaries.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			kind, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if kind != websocket.BinaryMessage {
				return 0, ErrNotBinary
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil // the next message continues the stream
			err = nil
			if n == 0 {
				continue
			}
		}
		return n, err
	}
}

// Write sends p as one binary message; it is safe for concurrent use.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.WriteTimeout > 0 {
		c.ws.SetWriteDeadline(time.Now().Add(c.WriteTimeout))
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the underlying connection.
func (c *Conn) Close() error { return c.ws.Close() }
