package mqttapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/registration"
)

// BrokerOptions configure a Broker.
type BrokerOptions struct {
	Adapter   *Adapter
	TLSConfig *tls.Config // required: DPS MQTT is TLS only
	Logger    *slog.Logger
	// MaxConnections bounds concurrent connections (default 100000).
	MaxConnections int64
	// RequestTimeout bounds the handling of one request (default 30s).
	RequestTimeout time.Duration
	// IdleTimeout closes a connection that sends nothing for this long,
	// whatever keep-alive it asked for (default 5 minutes; DPS sessions are
	// short). ConnectTimeout bounds the TLS handshake and CONNECT (default 30s).
	IdleTimeout    time.Duration
	ConnectTimeout time.Duration
}

// Broker is the embedded MQTT broker serving the DPS device protocol.
type Broker struct {
	srv   *mqtt.Server
	ln    *listener
	hook  *hook
	ws    wsClients
	close sync.Once
}

// Listen opens the TLS listener on addr; Serve starts answering.
func Listen(addr string, o BrokerOptions) (*Broker, error) {
	if o.TLSConfig == nil {
		return nil, errors.New("mqttapi: TLS configuration is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = 100000
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	ln, err := tls.Listen("tcp", addr, o.TLSConfig)
	if err != nil {
		return nil, err
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1                          // a QoS 2 subscription is granted 1
	caps.RetainAvailable = 0                     // nothing is retained
	caps.SharedSubAvailable = 0                  // no shared subscriptions
	caps.SubIDAvailable = 0                      // no subscription identifiers
	caps.MaximumPacketSize = MaxPayload + 4*1024 // payload plus topic and headers
	caps.MaximumClients = o.MaxConnections       // bounded connections
	caps.MaximumSessionExpiryInterval = 0        // DPS sessions are never persistent
	caps.MaximumInflight = 64                    // per connection
	caps.MaximumClientWritesPending = 64         // per connection
	caps.TopicAliasMaximum = 0                   // no topic aliases
	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		Logger:                 slog.New(quieter{o.Logger.Handler()}).With("component", "mqtt"),
		SysTopicResendInterval: 0,
	})
	b := &Broker{srv: srv, ln: &listener{ln: ln, idle: o.IdleTimeout, connect: o.ConnectTimeout}}
	b.hook = &hook{o: o, srv: srv}
	if err := srv.AddHook(b.hook, nil); err != nil {
		ln.Close()
		return nil, err
	}
	if err := srv.AddListener(b.ln); err != nil {
		ln.Close()
		return nil, err
	}
	return b, nil
}

// Addr is the listening address.
func (b *Broker) Addr() net.Addr { return b.ln.ln.Addr() }

// Serve starts accepting connections; it returns at once.
func (b *Broker) Serve() error { return b.srv.Serve() }

// Close disconnects every client and stops the broker. It may be called
// more than once.
func (b *Broker) Close() error {
	var err error
	b.close.Do(func() {
		b.ws.closeAll()
		err = b.srv.Close()
	})
	return err
}

// listener adapts a net.Listener opened by us (so its address is known
// before serving) to mochi's Listener.
type listener struct {
	ln            net.Listener
	idle, connect time.Duration
	closed        atomic.Bool
}

func (l *listener) Init(*slog.Logger) error { return nil }
func (l *listener) ID() string              { return "dps-mqtts" }
func (l *listener) Address() string         { return l.ln.Addr().String() }
func (l *listener) Protocol() string        { return "mqtts" }

func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		ic := &idleConn{Conn: conn, idle: l.idle}
		conn.SetDeadline(time.Now().Add(l.connect)) // handshake and CONNECT
		go establish(l.ID(), ic)
	}
}

// idleConn bounds how long a connection may stay silent: the broker
// disables deadlines for clients without keep-alive, and caps none.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) SetDeadline(t time.Time) error {
	if limit := time.Now().Add(c.idle); t.IsZero() || t.After(limit) {
		t = limit
	}
	return c.Conn.SetDeadline(t)
}

// ConnectionState exposes the TLS state (client certificates) of the wrapped connection.
func (c *idleConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

func (l *listener) Close(closeClients listeners.CloseFn) {
	if l.closed.CompareAndSwap(false, true) {
		closeClients(l.ID())
		l.ln.Close()
	}
}

// hook connects the broker to the Adapter. Responses are written only to
// the requesting connection, after the broker has sent the PUBACK of the
// request; inbound publishes are never fanned out.
type hook struct {
	mqtt.HookBase
	o   BrokerOptions
	srv *mqtt.Server
	ids sync.Map // *mqtt.Client → Identity
}

func (h *hook) ID() string { return "dps" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnDisconnect,
		mqtt.OnPublish, mqtt.OnPublished,
	}, []byte{b})
}

// OnConnect drops any earlier session of the same client ID, so CONNACK
// always reports SessionPresent=0 (C# fails otherwise).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if old, ok := h.srv.Clients.Get(cl.ID); ok && old != cl {
		h.srv.DisconnectClient(old, packets.ErrSessionTakenOver)
		h.srv.UnsubscribeClient(old)
		h.srv.Clients.Delete(cl.ID)
	}
	return nil
}

// OnConnectAuthenticate checks the username, client ID and SAS password.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	scope, regID, err := ParseUsername(string(pk.Connect.Username))
	if err != nil || !strings.EqualFold(regID, cl.ID) {
		h.o.Logger.Debug("mqtt connect refused: bad username or client ID", "client_id", cl.ID)
		return false
	}
	cred := registration.Credential{SAS: string(pk.Connect.Password)}
	if tc, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		cred.Certificates = tc.ConnectionState().PeerCertificates
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.o.RequestTimeout)
	defer cancel()
	if err := h.o.Adapter.Registrar.Authenticate(ctx, scope, regID, cred); err != nil {
		h.o.Logger.Debug("mqtt connect refused", logkey.RegistrationID, regID, logkey.Error, err)
		return false
	}
	h.ids.Store(cl, Identity{IDScope: scope, RegistrationID: regID, Credential: cred})
	return true
}

// OnACLCheck allows publishing only the two request topics and subscribing
// only to the response filter.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write {
		return strings.HasPrefix(topic, registerPrefix) || strings.HasPrefix(topic, pollPrefix)
	}
	return topic == ResponseFilter
}

// OnPublish marks every request as not for delivery to subscribers; the
// broker still acknowledges it.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	return pk, packets.CodeSuccessIgnore
}

// OnPublished runs after the PUBACK of a QoS 1 request has been written,
// on the connection's own goroutine, so requests of one connection are
// answered in order.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	v, ok := h.ids.Load(cl)
	if !ok {
		h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.o.RequestTimeout)
	defer cancel()
	topic, body, ok := h.o.Adapter.Handle(ctx, v.(Identity), pk.TopicName, pk.Payload)
	if !ok {
		h.srv.DisconnectClient(cl, packets.ErrProtocolViolation)
		return
	}
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
		TopicName:   topic,
		Payload:     body,
		Created:     time.Now().Unix(),
	}
	id, err := cl.NextPacketID()
	if err != nil {
		h.srv.DisconnectClient(cl, packets.ErrQuotaExceeded)
		return
	}
	out.PacketID = uint16(id)
	if cl.State.Inflight.Set(out) {
		cl.State.Inflight.DecreaseSendQuota()
	}
	if err := cl.WritePacket(out); err != nil {
		h.o.Logger.Debug("mqtt response not delivered", "client_id", cl.ID, logkey.Error, err)
	}
}

// OnDisconnect forgets the connection; DPS sessions never persist.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.ids.Delete(cl)
	if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur == cl {
		h.srv.UnsubscribeClient(cl)
		h.srv.Clients.Delete(cl.ID)
	}
}

// quieter passes the broker's own messages on at warning level and above,
// or at every level when debug logging is on: at info it narrates every
// start step and connection.
type quieter struct{ slog.Handler }

func (q quieter) Enabled(ctx context.Context, l slog.Level) bool {
	if q.Handler.Enabled(ctx, slog.LevelDebug) {
		return true
	}
	return l >= slog.LevelWarn && q.Handler.Enabled(ctx, l)
}

func (q quieter) WithAttrs(a []slog.Attr) slog.Handler { return quieter{q.Handler.WithAttrs(a)} }
func (q quieter) WithGroup(n string) slog.Handler      { return quieter{q.Handler.WithGroup(n)} }
