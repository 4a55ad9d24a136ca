package mqttapi

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/opendps/dps/internal/wsstream"
)

// conns counts and tracks the broker's network connections, over TLS and
// over WebSocket. acquire/release bound how many are open (MaxConnections):
// a slot is taken when a connection is accepted, before any TLS work, so a
// flood of idle connections costs one accept and one close each.
// track/untrack let closing the broker close every connection it holds —
// mochi closes only the clients it has registered, not those still in a
// handshake or being authenticated — and wait until each is detached before
// mochi stops (its shutdown must not race with a connection being attached).
type conns struct {
	max     int64
	n       atomic.Int64
	refused atomic.Int64

	mu     sync.Mutex
	closed bool
	open   map[io.Closer]struct{}
	wg     sync.WaitGroup
}

// acquire takes a connection slot; false (and counted) when all are taken.
func (c *conns) acquire() bool {
	if c.n.Add(1) > c.max {
		c.n.Add(-1)
		c.refused.Add(1)
		return false
	}
	return true
}

func (c *conns) release() { c.n.Add(-1) }

// track registers an open connection; false when the broker is closing (the
// caller then closes it).
func (c *conns) track(x io.Closer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if c.open == nil {
		c.open = map[io.Closer]struct{}{}
	}
	c.open[x] = struct{}{}
	c.wg.Add(1)
	return true
}

func (c *conns) untrack(x io.Closer) {
	c.mu.Lock()
	delete(c.open, x)
	c.mu.Unlock()
	c.wg.Done()
}

// closeAll closes every tracked connection, refuses new ones, and waits
// until each has been untracked.
func (c *conns) closeAll() {
	c.mu.Lock()
	c.closed = true
	for x := range c.open {
		x.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

// connState is what the broker keeps about one network connection besides
// its bytes: its deadlines, the client mochi made of it, the identity it
// authenticated as, and its lifetime.
type connState struct {
	idle      time.Duration
	keepalive atomic.Uint32 // seconds, from CONNECT
	client    atomic.Pointer[mqtt.Client]
	identity  atomic.Pointer[Identity]
	// hub is set, in OnConnect, for a connection whose username names a
	// built-in hub (authenticated or not yet); nil for DPS connections.
	hub atomic.Pointer[hubConn]

	// ctx bounds the connection's requests; it is cancelled when the
	// connection is taken over (its answers could no longer be delivered)
	// and when it ends. done is closed once mochi and the broker are done
	// with the connection.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newConnState(idle time.Duration) connState {
	ctx, cancel := context.WithCancel(context.Background())
	return connState{idle: idle, ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// finish marks the connection as ended, once mochi has returned from it and
// the broker has forgotten it.
func (s *connState) finish() {
	s.cancel()
	close(s.done)
}

func (s *connState) state() *connState { return s }

// deadline adjusts a deadline mochi sets. mochi allows a client with
// keep-alive k only k + k/2 whole seconds (1 s for k=1, 4 s for k=3), but
// MQTT-3.1.2-24 gives it one and a half times k: a client that pings every
// k seconds (paho) would otherwise be dropped. And no connection may stay
// silent longer than idle: mochi sets no deadline at all for keep-alive 0.
//
// A hub connection gets one and a half times k too, but at most
// maxHubSilence (IoT Hub's 1767 s), and no idle limit: a hub device stays
// connected for hours (the C SDK pings every 240 s, which the DPS idle
// limit would cut). With keep-alive 0 it has no deadline at all; its
// connection still ends when its SAS token expires (see hubConn).
func (s *connState) deadline(t time.Time) time.Time {
	now := time.Now()
	if s.hub.Load() != nil {
		k := s.keepalive.Load()
		if k == 0 || t.IsZero() {
			return time.Time{}
		}
		return now.Add(min(time.Duration(k)*1500*time.Millisecond, maxHubSilence))
	}
	if k := s.keepalive.Load(); k > 0 && !t.IsZero() {
		t = now.Add(time.Duration(k) * 1500 * time.Millisecond)
	}
	if limit := now.Add(s.idle); t.IsZero() || t.After(limit) {
		t = limit
	}
	return t
}

// conn is what every connection the broker serves offers: both the TLS
// listener's connections (tlsConn) and the WebSocket ones (wsConn) carry
// the broker's state and the TLS state of the device's handshake.
type conn interface {
	net.Conn
	state() *connState
	ConnectionState() tls.ConnectionState
}

var (
	_ conn = (*tlsConn)(nil)
	_ conn = (*wsConn)(nil)
)

// stateOf returns the state of a client's connection (every connection the
// broker serves comes from its listener or its WebSocket handler).
func stateOf(cl *mqtt.Client) *connState {
	if c, ok := cl.Net.Conn.(conn); ok {
		return c.state()
	}
	return nil
}

// tlsConn is a connection accepted by the TLS listener.
type tlsConn struct {
	*tls.Conn
	connState
}

func (c *tlsConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.deadline(t)) }

// wsConn is the MQTT byte stream of one WebSocket, with the TLS state of
// the HTTPS connection carrying it (client certificates).
type wsConn struct {
	*wsstream.Conn
	connState
	tls tls.ConnectionState
}

func (c *wsConn) SetDeadline(t time.Time) error { return c.Conn.SetDeadline(c.deadline(t)) }

// ConnectionState is the TLS state of the HTTPS connection.
func (c *wsConn) ConnectionState() tls.ConnectionState { return c.tls }
