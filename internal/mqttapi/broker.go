package mqttapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/faults"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wire"
)

// BrokerOptions configure a Broker.
type BrokerOptions struct {
	Adapter   *Adapter
	TLSConfig *tls.Config // required: DPS MQTT is TLS only
	Logger    *slog.Logger
	// MaxConnections bounds concurrent network connections, over TLS and
	// over WebSocket together, from accept (before the TLS handshake) to
	// close. Over the limit a TLS connection is closed at once and a
	// WebSocket upgrade is answered 429 with Retry-After; both are counted
	// in Stats.Refused. Default: 100000, or three quarters of the limit on
	// open files (RLIMIT_NOFILE) if that is lower, so that the process
	// runs out of MQTT slots before it runs out of descriptors.
	MaxConnections int64
	// RequestTimeout bounds the handling of one request (default 30s).
	RequestTimeout time.Duration
	// IdleTimeout closes a DPS connection that sends nothing for this long,
	// whatever keep-alive it asked for (default 5 minutes; DPS sessions are
	// short); hub connections have none (hub.go). HandshakeTimeout bounds
	// the TLS handshake (default 10s), ConnectTimeout the wait for CONNECT
	// after it (default 30s); a connection that misses either is closed.
	IdleTimeout      time.Duration
	HandshakeTimeout time.Duration
	ConnectTimeout   time.Duration
	// Listener, when set, is the TCP listener served instead of one opened
	// on the address given to Listen (dpsd wraps it in its connection
	// limits, internal/connlimit).
	Listener net.Listener

	// Hub serves the device protocol of dps's built-in IoT hubs on the
	// same listeners (nil: no hub). A CONNECT whose username is
	// {host}/{deviceId}/?… for a host Hub serves is a hub connection
	// (hub.go); every other CONNECT is a DPS one, as without Hub.
	Hub *iothub.Service
	// HubSessionExpiry is how long this node keeps the subscriptions of a
	// hub device after its CleanSession=0 connection ended (default one
	// hour; they never outlive the process).
	HubSessionExpiry time.Duration
}

// Broker is the embedded MQTT broker serving the DPS device protocol.
type Broker struct {
	o     BrokerOptions
	srv   *mqtt.Server
	ln    *listener
	hook  *hook
	conns conns
	close sync.Once

	refusals throttledLog // connections refused for MaxConnections
}

// Stats counts the broker's connections.
type Stats struct {
	Open         int64 // network connections open now, TLS and WebSocket
	Refused      int64 // connections closed or refused at once because MaxConnections were open
	AcceptErrors int64 // failed accepts on the TLS listener (each one retried)
}

// Listen opens the TLS listener on addr; Serve starts answering.
func Listen(addr string, o BrokerOptions) (*Broker, error) {
	if o.TLSConfig == nil {
		return nil, errors.New("mqttapi: TLS configuration is required")
	}
	if o.Adapter == nil {
		return nil, errors.New("mqttapi: an Adapter is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Adapter.Logger == nil {
		o.Adapter.Logger = o.Logger
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = defaultMaxConnections()
		o.Logger.Debug("mqtt connection limit", "max_connections", o.MaxConnections)
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
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.HubSessionExpiry <= 0 {
		o.HubSessionExpiry = time.Hour
	}
	// Plain TCP: TLS is layered on each connection after the connection
	// limit, so connections over the limit cost no handshake.
	ln := o.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, err
		}
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumQos = 1                    // a QoS 2 subscription is granted 1
	caps.RetainAvailable = 0               // nothing is retained
	caps.SharedSubAvailable = 0            // no shared subscriptions
	caps.SubIDAvailable = 0                // no subscription identifiers
	caps.MaximumPacketSize = dpsMaxPacket  // payload plus topic and headers
	caps.MaximumClients = o.MaxConnections // bounded connections
	caps.MaximumSessionExpiryInterval = 0  // DPS sessions are never persistent
	caps.MaximumInflight = 64              // per connection
	caps.TopicAliasMaximum = 0             // no topic aliases
	// mochi's per-connection queue of publishes fanned out to subscribers
	// (a channel made for every connection): nothing is ever fanned out
	// here (OnPublish, no retained messages, wills or $SYS topics), so a
	// connection needs no room in it.
	caps.MaximumClientWritesPending = 1
	if o.Hub != nil {
		// Hub telemetry is up to 256 KB; OnPacketRead holds DPS
		// connections to dpsMaxPacket still.
		caps.MaximumPacketSize = hubMaxPacket
	}
	srv := mqtt.New(&mqtt.Options{
		Capabilities:            caps,
		ClientNetReadBufferSize: readBufferSize,
		Logger:                  slog.New(quieter{o.Logger.Handler()}).With("component", "mqtt"),
		SysTopicResendInterval:  0,
	})
	b := &Broker{o: o, srv: srv, conns: conns{max: o.MaxConnections}}
	b.hook = &hook{o: o, srv: srv, sessions: map[string]*mqtt.Client{}, hubSessions: map[string]*hubSession{}}
	b.ln = &listener{ln: ln, b: b}
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

// Stats reports the connection counters.
func (b *Broker) Stats() Stats {
	return Stats{Open: b.conns.n.Load(), Refused: b.conns.refused.Load(), AcceptErrors: b.ln.acceptErrors.Load()}
}

// Close disconnects every client and stops the broker. It may be called
// more than once.
func (b *Broker) Close() error {
	var err error
	b.close.Do(func() {
		b.ln.closed.Store(true)
		b.ln.ln.Close()
		b.hook.disconnectAll()
		b.conns.closeAll()
		err = b.srv.Close()
	})
	return err
}

// refused logs connections refused for the connection limit, at most every
// 10 seconds (a flood must not become a flood of log lines).
func (b *Broker) refused(transport string) {
	if _, ok := b.refusals.event(time.Now()); !ok {
		return
	}
	b.o.Logger.Warn("mqtt connections refused: MaxConnections are open", "transport", transport,
		"max_connections", b.o.MaxConnections, "refused_total", b.conns.refused.Load())
}

// logInterval is the shortest time between two log lines about the same
// recurring event (see throttledLog).
const logInterval = 10 * time.Second

// throttledLog lets an event that may come from thousands of devices at once
// (an outage, a flood) be logged once per logInterval: the first time at
// once, then at most one line per interval, counting the events not logged
// in between.
type throttledLog struct {
	last       atomic.Int64 // unix nanoseconds of the last line; 0: none yet
	suppressed atomic.Int64 // events not logged since that line
}

// event records an event at now. ok says whether to log a line for it;
// suppressed is then how many events since the previous line were not logged.
func (t *throttledLog) event(now time.Time) (suppressed int64, ok bool) {
	last := t.last.Load()
	if last != 0 && now.UnixNano()-last < int64(logInterval) || !t.last.CompareAndSwap(last, now.UnixNano()) {
		t.suppressed.Add(1)
		return 0, false
	}
	return t.suppressed.Swap(0), true
}

// listener is mochi's Listener over a TCP listener opened by us (so its
// address is known before serving). It caps connections, layers TLS, and
// survives accept errors.
type listener struct {
	ln           net.Listener
	b            *Broker
	closed       atomic.Bool
	acceptErrors atomic.Int64
}

func (l *listener) Init(*slog.Logger) error { return nil }
func (l *listener) ID() string              { return "dps-mqtts" }
func (l *listener) Address() string         { return l.ln.Addr().String() }
func (l *listener) Protocol() string        { return "mqtts" }

func (l *listener) Serve(establish listeners.EstablishFn) {
	var delay time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors (EMFILE) and the like: retry with
			// backoff, as net/http does, rather than end MQTT until a
			// restart while the kernel keeps queueing devices.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.acceptErrors.Add(1)
			l.b.o.Logger.Warn("mqtt accept failed; retrying", logkey.Error, err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !l.b.conns.acquire() {
			raw.Close()
			l.b.refused("mqtts")
			continue
		}
		go l.serve(raw, establish)
	}
}

// serve runs one accepted connection until mochi is done with it.
func (l *listener) serve(raw net.Conn, establish listeners.EstablishFn) {
	defer l.b.conns.release()
	raw.SetDeadline(time.Now().Add(l.b.o.HandshakeTimeout))
	c := &tlsConn{Conn: tls.Server(raw, l.b.o.TLSConfig), connState: newConnState(l.b.o.IdleTimeout)}
	defer c.finish()
	if !l.b.conns.track(c) {
		c.Close()
		return
	}
	// The handshake here, not on mochi's first read, so that it and the
	// wait for CONNECT each have their own deadline. A client that stalls
	// in either (slowloris) is closed.
	if err := c.Conn.HandshakeContext(c.ctx); err != nil {
		c.Close()
		l.b.conns.untrack(c)
		return
	}
	raw.SetDeadline(time.Now().Add(l.b.o.ConnectTimeout)) // CONNECT; mochi sets the keep-alive deadlines after it
	establish(l.ID(), c)
	c.Close()
	l.b.hook.forget(&c.connState)
	l.b.conns.untrack(c)
}

func (l *listener) Close(closeClients listeners.CloseFn) {
	closeClients(l.ID())
	if l.closed.CompareAndSwap(false, true) {
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

	mu       sync.Mutex
	sessions map[string]*mqtt.Client // the authenticated connection of each client ID

	hubMu       sync.Mutex
	hubSessions map[string]*hubSession // by (namespaced) client ID; see hub.go

	unavailable throttledLog // connections refused because the service failed
}

// readBufferSize is the size of the buffered reader mochi makes for every
// connection (2 KB by default), most of whose life is idle: room for the
// small packets (PINGREQ, PUBACK, SUBSCRIBE, a twin request) and the fixed
// header of any other. It bounds no packet: one larger than the buffer (a
// 256 KB telemetry message) is read past it, straight into the packet's
// own buffer.
const readBufferSize = 512

// dpsMaxPacket is the largest packet of a DPS connection: a request
// payload plus its topic and headers.
const dpsMaxPacket = MaxPayload + 4*1024

func (h *hook) ID() string { return "dps" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablish, mqtt.OnACLCheck,
		mqtt.OnPublish, mqtt.OnPublished, mqtt.OnPacketEncode,
		mqtt.OnPacketRead, mqtt.OnSubscribed, mqtt.OnSessionEstablished, mqtt.OnQosComplete,
	}, []byte{b})
}

// OnConnect authenticates the connection. mochi calls it before
// OnConnectAuthenticate, which can only say yes or no (and no becomes
// "bad username or password"); here the refusal says whether to retry. Any
// earlier connection with the same client ID is left alone: it is taken
// over only once this one is authenticated (OnSessionEstablish).
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	st := stateOf(cl)
	st.client.Store(cl)
	st.keepalive.Store(uint32(pk.Connect.Keepalive))
	// Keep-alive 0 is legal (the C SDK always sends it): debug, not the
	// warning mochi logs for every connection (quieter drops that one).
	h.o.Logger.Debug("mqtt connect", "client_id", cl.ID, "keepalive", pk.Connect.Keepalive,
		"protocol_version", pk.ProtocolVersion, "remote", cl.Net.Remote)
	if pk.Connect.WillFlag {
		// A will would be published to every subscriber of the response
		// filter, that is to every other device: DPS devices get answers
		// only to their own requests. No SDK sends one; it is dropped.
		cl.Properties.Will = mqtt.Will{}
		h.o.Logger.Debug("mqtt will dropped", "client_id", cl.ID)
	}
	authenticate := h.authenticate
	if hc := h.hubConnection(cl, pk, st); hc != nil {
		authenticate = hc.authenticate
	}
	if code := authenticate(cl, pk, st); code != packets.CodeSuccess {
		if err := h.srv.SendConnack(cl, code, false, nil); err != nil {
			return err
		}
		return fmt.Errorf("mqttapi: connection refused (CONNACK code %#x)", code.Code)
	}
	return nil
}

// authenticate checks the username, client ID and SAS password (or client
// certificate) and returns the CONNACK code.
func (h *hook) authenticate(cl *mqtt.Client, pk packets.Packet, st *connState) packets.Code {
	v := pk.ProtocolVersion
	scope, regID, err := ParseUsername(string(pk.Connect.Username))
	cred := dps.Credential{SAS: string(pk.Connect.Password)}
	if tc, ok := cl.Net.Conn.(conn); ok {
		cred.Certificates = tc.ConnectionState().PeerCertificates
	}
	if err != nil || !strings.EqualFold(regID, cl.ID) {
		const reason = "mqtt connect: the username is not {idScope}/registrations/{registrationId}/… or the client ID is not the registration ID"
		h.o.Logger.Info("device refused", "reason", reason,
			logkey.RegistrationID, cl.ID, "transport", transportOf(cl), "source", cl.Net.Remote)
		h.recordConnectRefusal(cl, cl.ID, cred, &dps.Error{Kind: dps.KindUnauthorized, Code: dps.CodeUnauthorized, Message: reason})
		return refusal(v, false)
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.o.RequestTimeout)
	defer cancel()
	if err := h.o.Adapter.Registrar.Authenticate(ctx, scope, regID, cred); err != nil {
		h.recordConnectRefusal(cl, regID, cred, err)
		retry := retryable(err)
		if !retry { // the service's failures: the rate-limited error line below
			_, eb := wire.Error(err, "", time.Now())
			h.o.Logger.Info("device refused", "reason", "mqtt connect: "+dps.AsError(err).Message, logkey.ErrorCode, eb.ErrorCode,
				logkey.RegistrationID, regID, "transport", transportOf(cl), "source", cl.Net.Remote)
		}
		h.o.Logger.Debug("mqtt connect refused", logkey.RegistrationID, regID, "retryable", retry, logkey.Error, err)
		// During an outage every device that retries is refused again:
		// one error line per logInterval, not one per connection.
		if retry {
			if n, ok := h.unavailable.event(time.Now()); ok {
				h.o.Logger.Error("mqtt connections refused: the service failed (devices are told to retry)", logkey.Error, err,
					"refused_since_last_line", n+1)
			}
		}
		return refusal(v, retry)
	}
	st.identity.Store(&Identity{IDScope: scope, RegistrationID: regID, Credential: cred, Transport: transportOf(cl), Source: cl.Net.Remote,
		APIVersion: UsernameAPIVersion(string(pk.Connect.Username))})
	return packets.CodeSuccess
}

// recordConnectRefusal records a refused DPS CONNECT in the events feed.
func (h *hook) recordConnectRefusal(cl *mqtt.Client, regID string, cred dps.Credential, err error) {
	_, eb := wire.Error(err, wire.NewTrackingID(), time.Now())
	eb.Message = "mqtt connect: " + strings.TrimPrefix(eb.Message, "mqtt connect: ")
	id := Identity{RegistrationID: regID, Credential: cred, Transport: transportOf(cl), Source: cl.Net.Remote}
	h.o.Adapter.recordRefusal(refusedRequest{id: id}, eb, dps.RefusalCause(err))
}

// transportOf is "mqtt", or "mqttws" for a connection over WebSocket.
func transportOf(cl *mqtt.Client) string {
	if cl.Net.Listener == wsListenerID {
		return faults.TransportMQTTWS
	}
	return faults.TransportMQTT
}

// retryable reports whether a failed authentication was the service's
// fault (the database is down, a timeout): the device should try again
// rather than conclude its credential is bad.
func retryable(err error) bool {
	switch dps.KindOf(err) { // an error that is not a *dps.Error (a timeout) is KindInternal
	case dps.KindInternal, dps.KindUnavailable, dps.KindThrottled:
		return true
	}
	return false
}

// refusal is the CONNACK code that refuses a connection. "Not authorized"
// makes SDKs give up (C# treats 3.1.1 codes 1, 2, 4 and 5 as permanent);
// "server unavailable" is the refusal they retry.
func refusal(protocolVersion byte, retryable bool) packets.Code {
	switch {
	case protocolVersion >= 5 && retryable:
		return packets.ErrServerUnavailable // 0x88
	case protocolVersion >= 5:
		return packets.ErrNotAuthorized // 0x87
	case retryable:
		return packets.Err3ServerUnavailable // 3
	default:
		return packets.Err3NotAuthorized // 5
	}
}

// OnConnectAuthenticate accepts the connections OnConnect authenticated.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	st := stateOf(cl)
	if hc := st.hub.Load(); hc != nil {
		return hc.authed.Load()
	}
	return st.identity.Load() != nil
}

// OnSessionEstablish runs once the connection is authenticated, before
// mochi looks for an earlier session of its client ID. The earlier
// connection is closed here — MQTT-3.1.4-3 takes a session over only "if
// validation is successful" — and the new one waits until it has ended
// (takeOver). The client ID is then absent from mochi's clients, so mochi
// never inherits a session: DPS sessions never persist, and a hub
// device's subscriptions are kept by hub.go, not by mochi (hubConn.establish).
func (h *hook) OnSessionEstablish(cl *mqtt.Client, pk packets.Packet) {
	h.mu.Lock()
	old := h.sessions[cl.ID]
	h.sessions[cl.ID] = cl
	h.mu.Unlock()
	if old != nil && old != cl {
		h.o.Logger.Debug("mqtt session taken over", "client_id", cl.ID, "old_remote", old.Net.Remote, "remote", cl.Net.Remote)
		h.takeOver(old)
	}
	h.srv.Clients.Delete(cl.ID)
	if hc := stateOf(cl).hub.Load(); hc != nil {
		hc.establish()
	}
}

// takeoverWait bounds how long a CONNECT taking a session over waits for
// the earlier connection to end (see takeOver).
const takeoverWait = 5 * time.Second

// takeOver closes old, the earlier connection of a client ID, and waits
// until mochi and the broker are done with it. mochi's teardown of a
// connection removes its client ID from mochi's clients and its client ID's
// subscriptions from the topic index: run after the new connection has been
// added and has subscribed, it would remove the new connection's entries.
// The request old may be handling is cancelled (its answer could not be
// delivered any more), so that its teardown is not held up by it.
//
// If old still has not ended after takeoverWait (a request that ignores
// its cancellation), the new connection goes on without it. Losing those
// entries then costs nothing: nothing is delivered through subscriptions
// (OnPublish, OnPublished), the hook's sessions — not mochi's clients —
// decide takeovers and shutdown, and forget removes only its own client.
func (h *hook) takeOver(old *mqtt.Client) {
	st := stateOf(old)
	h.disconnect(packets.ErrSessionTakenOver, old)
	st.cancel() // once old is closed: the request's failure is not written to it
	select {
	case <-st.done:
	case <-time.After(takeoverWait):
		h.o.Logger.Debug("mqtt session taken over before the earlier connection ended", "client_id", old.ID, "old_remote", old.Net.Remote)
	}
}

// forget drops what the broker holds about a connection mochi is done with,
// whatever way it ended (mochi calls OnDisconnect only for connections that
// got their CONNACK). The connection leaves the sessions last, under the
// lock: until then a new connection with its client ID takes it over, and so
// waits for it to end before mochi adds the new one (see takeOver).
func (h *hook) forget(st *connState) {
	cl := st.client.Load()
	if cl == nil {
		return
	}
	if hc := st.hub.Load(); hc != nil {
		hc.end()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.srv.Clients.Get(cl.ID); ok && cur == cl {
		h.srv.UnsubscribeClient(cl)
		h.srv.Clients.Delete(cl.ID)
	}
	if h.sessions[cl.ID] == cl {
		delete(h.sessions, cl.ID)
	}
}

// disconnectAll tells every authenticated client that the server is going
// away (MQTT 5 clients receive DISCONNECT 0x8B; see OnPacketEncode for 3.1.1).
func (h *hook) disconnectAll() {
	h.mu.Lock()
	all := make([]*mqtt.Client, 0, len(h.sessions))
	for _, cl := range h.sessions {
		all = append(all, cl)
	}
	h.mu.Unlock()
	h.disconnect(packets.ErrServerShuttingDown, all...)
}

// disconnectWait bounds how long writing a DISCONNECT may take (see
// disconnect).
const disconnectWait = 2 * time.Second

// disconnect writes DISCONNECT with code to each client (OnPacketEncode
// closes a 3.1.1 client instead) and closes them, all at once. mochi writes
// synchronously, under the client's lock, and a client that stopped reading
// holds the write as long as the connection's write deadline allows — over
// WebSocket there is none (gorilla replaces it with its own, unset, on every
// message). A client still being written to after disconnectWait is closed,
// which fails the pending write.
func (h *hook) disconnect(code packets.Code, cls ...*mqtt.Client) {
	var wg sync.WaitGroup
	for _, cl := range cls {
		wg.Go(func() { h.srv.DisconnectClient(cl, code) })
	}
	written := make(chan struct{})
	go func() {
		wg.Wait()
		close(written)
	}()
	select {
	case <-written:
	case <-time.After(disconnectWait):
		for _, cl := range cls {
			cl.Stop(code)
		}
	}
}

// OnPacketEncode sees every packet the broker writes, whoever decided to
// write it (mochi on a takeover or a refused publish, this hook, shutdown):
//   - MQTT 3.1.1 defines DISCONNECT only from client to server, and paho
//     (Python) takes one from the server as a protocol error. For a 3.1.1
//     client the connection is closed instead, here, before the packet is
//     written: the write that follows fails on the closed connection, and
//     mochi's DisconnectClient then finds the client stopped.
//   - CONNACK never reports a session to DPS devices (C# fails the
//     registration otherwise); a hub connection's reports the session
//     this node kept for the device (hubConn.establish).
func (h *hook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Disconnect:
		if cl.Properties.ProtocolVersion < 5 {
			cl.Stop(packets.Code{Code: pk.ReasonCode, Reason: pk.Properties.ReasonString})
		}
	case packets.Connack:
		pk.SessionPresent = false
		if hc := hubOf(cl); hc != nil && pk.ReasonCode == packets.CodeSuccess.Code && hc.authed.Load() {
			pk.SessionPresent = hc.present
		}
	}
	return pk
}

// OnACLCheck allows publishing only the two request topics and subscribing
// only to the response filter. Nothing is ever delivered through
// subscriptions: requests are not fanned out (OnPublish), nothing is
// retained, wills are dropped (OnConnect), and responses are written to
// the requesting connection (OnPublished).
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if hc := hubOf(cl); hc != nil {
		return hc.allowed(topic, write)
	}
	if write {
		return strings.HasPrefix(topic, registerPrefix) || strings.HasPrefix(topic, pollPrefix)
	}
	return topic == ResponseFilter
}

// OnPublish marks every request as not for delivery to subscribers; the
// broker still acknowledges it.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if hc := hubOf(cl); hc != nil {
		return hc.publish(pk)
	}
	return pk, packets.CodeSuccessIgnore
}

// OnPublished runs after the PUBACK of a QoS 1 request has been written,
// on the connection's own goroutine, so requests of one connection are
// answered in order.
func (h *hook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	st := stateOf(cl)
	if hc := st.hub.Load(); hc != nil {
		hc.published(pk)
		return
	}
	id := st.identity.Load()
	if id == nil {
		h.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		return
	}
	ctx, cancel := context.WithTimeout(st.ctx, h.o.RequestTimeout)
	defer cancel()
	topic, body, ok, drop := h.o.Adapter.HandleDrop(ctx, *id, pk.TopicName, pk.Payload)
	if drop {
		// An injected fault: the connection fails before the answer.
		cl.Stop(errFaultDrop)
		return
	}
	restartKeepalive(cl)
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
	pid, err := cl.NextPacketID()
	if err != nil {
		h.srv.DisconnectClient(cl, packets.ErrQuotaExceeded)
		return
	}
	out.PacketID = uint16(pid)
	if cl.State.Inflight.Set(out) {
		cl.State.Inflight.DecreaseSendQuota()
	}
	if err := cl.WritePacket(out); err != nil {
		h.o.Logger.Debug("mqtt response not delivered", "client_id", cl.ID, logkey.Error, err)
	}
}

// restartKeepalive restarts a connection's keep-alive clock, as when mochi
// reads a packet, after a request was handled: the time the handling took
// is not the client's silence (its pings wait unread), and the deadline
// also bounds writing the answer.
func restartKeepalive(cl *mqtt.Client) {
	var deadline time.Time // keep-alive 0: none (connState applies the idle limit)
	if k := cl.State.Keepalive; k > 0 {
		deadline = time.Now().Add(time.Duration(k) * time.Second)
	}
	cl.Net.Conn.SetDeadline(deadline)
}

// OnPacketRead sees every packet a client sends, once decoded. A DPS
// connection's packet over dpsMaxPacket ends the connection, as mochi's
// own limit does when no hub raises it; a hub connection's packets are
// checked by hubConn.read. Returning packets.ErrRejectPacket makes mochi's
// Client.ReadPacket fail, which ends the connection without a word.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if hc := hubOf(cl); hc != nil {
		return hc.read(pk)
	}
	if h.o.Hub != nil && uint32(pk.FixedHeader.Remaining+1) > dpsMaxPacket {
		h.o.Logger.Debug("mqtt packet over the DPS limit; connection closed", "client_id", cl.ID, "bytes", pk.FixedHeader.Remaining)
		return pk, packets.ErrRejectPacket
	}
	return pk, nil
}

// OnSubscribed records a hub device's granted subscriptions; DPS
// subscriptions need no record.
func (h *hook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if hc := hubOf(cl); hc != nil {
		hc.subscribed(pk, codes)
	}
}

// OnSessionEstablished runs once CONNACK has been written: a hub
// connection may now be written to by others (desired properties, methods).
func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	if h.dropAfterConnack(cl) {
		return
	}
	if hc := hubOf(cl); hc != nil {
		hc.established()
	}
}

// errFaultDrop ends a connection an injected fault drops.
var errFaultDrop = errors.New("mqttapi: connection dropped by an injected fault")

// dropAfterConnack closes a connection just acknowledged when a fault rule
// (drop: afterConnack) matches it: operation register for a DPS
// connection, hubConnect for a hub one.
func (h *hook) dropAfterConnack(cl *mqtt.Client) bool {
	if h.o.Adapter.Faults == nil {
		return false
	}
	transport := faults.TransportMQTT
	if cl.Net.Listener == wsListenerID {
		transport = faults.TransportMQTTWS
	}
	p := faults.Point{Transport: transport, Operation: faults.OpRegister, Connect: true}
	st := stateOf(cl)
	if hc := st.hub.Load(); hc != nil {
		p.Operation, p.RegistrationID = faults.OpHubConnect, hc.id.DeviceID
	} else if id := st.identity.Load(); id != nil {
		p.RegistrationID = id.RegistrationID
	} else {
		return false
	}
	if _, ok := h.o.Adapter.Faults.Check(context.Background(), p); !ok {
		return false
	}
	cl.Stop(errFaultDrop)
	return true
}

// OnQosComplete sees the PUBACK of a QoS 1 publish the broker sent: a
// hub device's completes the C2D message it acknowledges (c2d.go).
func (h *hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if hc := hubOf(cl); hc != nil && pk.FixedHeader.Type == packets.Puback {
		hc.puback(pk.PacketID)
	}
}

// quieter passes the broker's own messages on at warning level and above,
// or at every level when debug logging is on: at info it narrates every
// start step and connection.
type quieter struct{ slog.Handler }

// Handle drops mochi's warning about keep-alives under 5 s: it comes for
// every connection of the C SDK (keep-alive 0, which is legal), before the
// client ID is known; OnConnect logs the connection at debug instead.
func (q quieter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == mqtt.ErrMinimumKeepalive.Error() {
		return nil
	}
	return q.Handler.Handle(ctx, r)
}

func (q quieter) Enabled(ctx context.Context, l slog.Level) bool {
	if q.Handler.Enabled(ctx, slog.LevelDebug) {
		return true
	}
	return l >= slog.LevelWarn && q.Handler.Enabled(ctx, l)
}

func (q quieter) WithAttrs(a []slog.Attr) slog.Handler { return quieter{q.Handler.WithAttrs(a)} }
func (q quieter) WithGroup(n string) slog.Handler      { return quieter{q.Handler.WithGroup(n)} }
