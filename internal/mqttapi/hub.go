package mqttapi

// The device protocol of dps's built-in IoT hubs on the DPS broker.
//
// A CONNECT whose username parses as a hub username
// ({host}/{deviceId}/?api-version=…) for a host BrokerOptions.Hub serves
// is a hub connection; the hook's methods hand it to a hubConn. Hub and
// DPS connections share the listeners, the takeover rules (only after
// authentication; the earlier connection is closed without a DISCONNECT,
// which MQTT 3.1.1 does not allow a server) and the connection limit.
//
// Sessions. mochi keys sessions by client ID, and a device provisioned by
// DPS uses the same ID on DPS and on its hub (so may a device of another
// hub): a hub connection's client ID is rewritten to
// "hub\x00{hub}\x00{deviceId}" in OnConnect, before mochi looks for an
// earlier session, so it can never take over a DPS session or a device of
// another hub. mochi itself keeps no session (OnSessionEstablish removes
// the earlier client). This file keeps, per device and on this node, the
// kinds of subscriptions it was granted: a CleanSession=0 connection finds
// them again after a reconnect or a takeover — the Node SDK reconnects to
// renew its token and never subscribes again — for
// BrokerOptions.HubSessionExpiry after its connection ended; a
// CleanSession=1 connection starts without any, and its subscriptions are
// dropped when it ends. CONNACK reports SessionPresent=1 when a
// CleanSession=0 connection found such a session (MQTT-3.2.2-2), 0
// otherwise — the real hub's answer to a first CONNECT.
//
// Refusals (CONNACK, MQTT 3.1.1 codes): a bad, expired or mis-scoped SAS
// token, a certificate that does not match, an unknown device, a module
// identity, or a ClientId that is not the username's device → 5 (not
// authorized); a disabled device or a failure of the store → 3 (server
// unavailable, which the SDKs retry); MQTT 3.1 → 1 (unacceptable protocol
// version). IoT Hub speaks MQTT 3.1.1 only: an MQTT 5 CONNECT is refused
// with the MQTT 5 code 0x84 (unsupported protocol version), which an MQTT
// 5 client can read, rather than accepted with MQTT 5 semantics no SDK
// uses on IoT Hub.
//
// Keep-alive: one and a half times the client's, at most 1767 s, and no
// idle limit (connState.deadline); keep-alive 0 means no timeout but the
// SAS token's expiry. The connection is closed (no DISCONNECT) when the
// token it authenticated with expires; a certificate never expires a
// connection.

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/iothub"
	"github.com/opendps/dps/internal/logkey"
	"github.com/opendps/dps/internal/wire"
)

const (
	// maxHubSilence is the longest a hub connection may stay silent,
	// whatever keep-alive it asked for (IoT Hub's 1767 s).
	maxHubSilence = 1767 * time.Second
	// hubMaxPacket is the largest packet the broker reads when it serves
	// a hub: a 256 KB telemetry payload plus the longest topic MQTT allows
	// (65535 bytes and its length), a packet ID and the fixed header.
	hubMaxPacket = iothub.DefaultMaxMessageSize + 2 + 65535 + 2 + 5
	// hubQueue bounds the hub's messages (desired-property notifications,
	// method requests) waiting to be written to one connection; see
	// hubConn.enqueue.
	hubQueue = 16
	// logDeviceID is the log key of a hub device's id.
	logDeviceID = "device_id"
)

// The system properties of a telemetry property bag that dps.Message has no
// field for go into its System map under their IoT Hub names ($.mid,
// $.cid, $.uid, $.ct and $.ce are Message fields).
const (
	sysTo          = "to"                   // $.to
	sysExpiry      = "absolute-expiry-time" // $.exp, as sent (ISO 8601)
	sysInterfaceID = "iothub-interface-id"  // $.ifid
	sysSubject     = "dt-subject"           // $.sub, the component name
	// propRetain is the application property a telemetry message gets
	// when the device published it with RETAIN=1 (IoT Hub's mqtt-retain);
	// nothing is retained.
	propRetain = "mqtt-retain"
)

var (
	errHubTokenExpired = errors.New("mqttapi: the SAS token of the connection expired")
	errHubProtocol     = errors.New("mqttapi: hub device broke the protocol")
)

// hubClientID is the mochi client ID of a hub device's connection.
func hubClientID(hub, deviceID string) string { return "hub\x00" + hub + "\x00" + deviceID }

// hubSession is what this node keeps about a hub device across its
// connections: the kinds of subscriptions it was granted.
type hubSession struct {
	subs atomic.Uint32 // bit 1<<hubproto.FilterKind per granted kind

	// Guarded by hook.hubMu.
	owner *connState  // the connection using the session; nil once it ended
	drop  *time.Timer // forgets the session HubSessionExpiry after owner ended
}

func (s *hubSession) has(k hubproto.FilterKind) bool { return s.subs.Load()&(1<<k) != 0 }
func (s *hubSession) add(k hubproto.FilterKind)      { s.subs.Or(1 << k) }
func (s *hubSession) remove(k hubproto.FilterKind)   { s.subs.And(^uint32(1 << k)) }

// hubConn is one hub connection, from its CONNECT to its end. It is the
// connection the iothub.Service sees (iothub.Conn).
type hubConn struct {
	h     *hook
	st    *connState
	cl    *mqtt.Client
	hub   string // the hub's configured host name
	user  hubproto.Username
	clean bool

	// Set by authenticate before authed; read-only afterwards.
	id     iothub.Identity
	authed atomic.Bool

	// Set by establish (before CONNACK), on the connection's goroutine.
	session *hubSession
	present bool // CONNACK's SessionPresent
	detach  func()
	// expiry closes the connection when its token expires (established).
	expiry *time.Timer

	out hubOut   // the hub's messages to the device; see enqueue
	c2d c2dState // cloud-to-device delivery (c2d.go)
}

// hubOut is a hub connection's queue of messages to the device, waiting
// for its writer. It holds nothing — no buffer, no goroutine — while
// nothing waits, as for most of an idle device's life: the slice grows up
// to hubQueue on demand, and the writer runs only while it is not empty.
type hubOut struct {
	mu      sync.Mutex
	pending []hubMsg // at most hubQueue
	open    bool     // CONNACK has been written: the writer may run
	writing bool     // a writer goroutine runs
}

// hubMsg is a QoS 0 publish waiting in a hubOut.
type hubMsg struct {
	topic string
	body  []byte
}

var _ iothub.Conn = (*hubConn)(nil)

// hubOf returns the hub connection of a client, nil for a DPS one.
func hubOf(cl *mqtt.Client) *hubConn {
	if st := stateOf(cl); st != nil {
		return st.hub.Load()
	}
	return nil
}

// hubConnection makes a CONNECT whose username names one of the hubs a hub
// connection: it returns its hubConn, having renamed the client, or nil
// for a DPS connection.
func (h *hook) hubConnection(cl *mqtt.Client, pk packets.Packet, st *connState) *hubConn {
	if h.o.Hub == nil {
		return nil
	}
	u, err := hubproto.ParseUsername(string(pk.Connect.Username))
	if err != nil {
		return nil
	}
	hub, ok := h.o.Hub.Hub(u.Host)
	if !ok {
		return nil
	}
	hc := newHubConn(h, cl, st, hub, u, pk.Connect.Clean)
	st.hub.Store(hc)
	cl.ID = hubClientID(hub, u.DeviceID) // before mochi looks for its session
	return hc
}

// newHubConn is the hub connection of client cl, of device u.DeviceID on
// hub.
func newHubConn(h *hook, cl *mqtt.Client, st *connState, hub string, u hubproto.Username, clean bool) *hubConn {
	return &hubConn{h: h, st: st, cl: cl, hub: hub, user: u, clean: clean}
}

// authenticate checks a hub CONNECT and returns its CONNACK code. Only the
// device id is logged, never the credential.
func (c *hubConn) authenticate(cl *mqtt.Client, pk packets.Packet, _ *connState) packets.Code {
	log := c.h.o.Logger.With(logkey.Hub, c.hub, logDeviceID, c.user.DeviceID)
	switch pk.ProtocolVersion {
	case 4:
	case 5:
		c.logRefusal(cl, "MQTT 5: IoT Hub speaks MQTT 3.1.1", nil)
		return packets.ErrUnsupportedProtocolVersion // 0x84
	default:
		c.logRefusal(cl, "MQTT 3.1: IoT Hub speaks MQTT 3.1.1", nil)
		return packets.Err3UnsupportedProtocolVersion // 1
	}
	if c.user.ModuleID != "" {
		c.logRefusal(cl, "module identities are not supported", nil, slog.String("module_id", c.user.ModuleID))
		return packets.Err3NotAuthorized
	}
	if err := c.user.CheckClientID(pk.Connect.ClientIdentifier); err != nil {
		c.logRefusal(cl, "the client ID is not the username's device", nil, slog.String("client_id", pk.Connect.ClientIdentifier))
		return packets.Err3NotAuthorized
	}
	cred := dps.Credential{SAS: string(pk.Connect.Password)}
	if tc, ok := cl.Net.Conn.(conn); ok {
		cred.Certificates = tc.ConnectionState().PeerCertificates
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.h.o.RequestTimeout)
	defer cancel()
	id, err := c.h.o.Hub.Authenticate(ctx, c.hub, c.user.DeviceID, cred)
	if err != nil {
		switch kind := dps.KindOf(err); kind {
		case dps.KindUnauthorized:
			c.logRefusal(cl, "not authenticated", err)
			return packets.Err3NotAuthorized
		case dps.KindForbidden: // disabled: the SDKs keep retrying on 3
			c.logRefusal(cl, "the device is disabled", err)
			return packets.Err3ServerUnavailable
		default:
			log.Debug("mqtt hub connect refused (retryable)", logkey.Error, err)
			if n, ok := c.h.unavailable.event(time.Now()); ok {
				c.h.o.Logger.Error("mqtt hub connections refused: the service failed (devices are told to retry)", logkey.Error, err,
					"refused_since_last_line", n+1)
			}
			return packets.Err3ServerUnavailable
		}
	}
	id.ModelID = c.user.ModelID
	c.id = id
	c.authed.Store(true)
	return packets.CodeSuccess
}

// establish runs once the connection is authenticated and has taken over
// any earlier connection of the device, before CONNACK: it finds or starts
// the device's session and makes the connection the device's one for the
// hub. Messages for the device wait in the queue until CONNACK is written
// (established).
func (c *hubConn) establish() {
	h, key := c.h, c.cl.ID
	h.hubMu.Lock()
	s := h.hubSessions[key]
	switch {
	case s == nil || c.clean:
		s = &hubSession{}
		h.hubSessions[key] = s
	default:
		c.present = true
	}
	if s.drop != nil {
		s.drop.Stop()
		s.drop = nil
	}
	s.owner = c.st
	c.session = s
	h.hubMu.Unlock()
	c.detach = h.o.Hub.Attach(c.id, c)
	h.o.Logger.Debug("mqtt hub device connected", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID,
		"keepalive", c.cl.State.Keepalive, "clean_session", c.clean, "session_present", c.present)
}

// established runs once CONNACK has been written: the messages queued
// meanwhile are written, a session that kept its C2D subscription gets
// what waits, and the token's expiry is due.
func (c *hubConn) established() {
	c.out.mu.Lock()
	c.out.open = true
	c.startWriter()
	c.out.mu.Unlock()
	if c.session != nil && c.session.has(hubproto.FilterC2D) {
		c.startC2D()
	}
	if !c.id.Expires.IsZero() {
		c.expiry = time.AfterFunc(time.Until(c.id.Expires), func() {
			c.h.o.Logger.Debug("mqtt hub connection closed: its SAS token expired", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID)
			c.cl.Stop(errHubTokenExpired) // a plain close: MQTT 3.1.1 has no server DISCONNECT
		})
	}
}

// end runs once mochi is done with the connection (forget): the device is
// no longer connected here, and its session is kept (CleanSession=0) or
// dropped.
func (c *hubConn) end() {
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.detach != nil {
		c.detach()
	}
	if c.authed.Load() {
		c.endC2D()
	}
	s := c.session
	if s == nil {
		return // never authenticated, or ended before its session
	}
	h, key := c.h, c.cl.ID
	h.hubMu.Lock()
	defer h.hubMu.Unlock()
	if s.owner != c.st {
		return // a newer connection of the device has it
	}
	s.owner = nil
	if c.clean {
		if h.hubSessions[key] == s {
			delete(h.hubSessions, key)
		}
		return
	}
	s.drop = time.AfterFunc(h.o.HubSessionExpiry, func() {
		h.hubMu.Lock()
		defer h.hubMu.Unlock()
		if h.hubSessions[key] == s && s.owner == nil {
			delete(h.hubSessions, key)
		}
	})
}

// read checks a packet of the device as soon as it is decoded: a PUBLISH
// at QoS 2 (IoT Hub closes the connection; mochi would lower it to QoS 1
// before OnPublish and leave the client waiting for a PUBREC), to a topic
// that is not the hub's, or with another device's telemetry, ends the
// connection. UNSUBSCRIBE drops the filters' kinds from the session.
func (c *hubConn) read(pk packets.Packet) (packets.Packet, error) {
	if !c.authed.Load() {
		return pk, nil // the CONNECT itself
	}
	switch pk.FixedHeader.Type {
	case packets.Publish:
		if pk.FixedHeader.Qos > 1 {
			c.protocolError("a QoS 2 publish", pk.TopicName)
			return pk, packets.ErrRejectPacket
		}
		if _, err := c.parse(pk.TopicName); err != nil {
			c.protocolError(err.Error(), pk.TopicName)
			return pk, packets.ErrRejectPacket
		}
	case packets.Unsubscribe:
		for _, sub := range pk.Filters {
			if f, err := hubproto.ParseFilter(sub.Filter); err == nil && c.session != nil {
				c.session.remove(f.Kind)
			}
		}
	}
	return pk, nil
}

func (c *hubConn) protocolError(what, topic string) {
	c.h.o.Logger.Debug("mqtt hub connection closed: "+what, logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, "topic", topic)
}

// parse parses the topic of a device's PUBLISH: a topic of the hub's
// device protocol, and telemetry only for the connection's own device.
func (c *hubConn) parse(topic string) (hubproto.Publish, error) {
	p, err := hubproto.ParseTopic(topic)
	if err != nil {
		return p, err
	}
	if p.Kind == hubproto.KindTelemetry && (p.DeviceID != c.id.DeviceID || p.ModuleID != "") {
		return p, errors.New("telemetry of another device or of a module")
	}
	return p, nil
}

// allowed is the ACL of a hub device: it publishes to the hub's topics
// (read has already closed the connection for any other), and subscribes
// to the documented filters, C2D only for itself (devices/+/… is its own).
// Anything else is SUBACK 0x80.
func (c *hubConn) allowed(topic string, write bool) bool {
	if write {
		_, err := c.parse(topic)
		return err == nil
	}
	f, err := hubproto.ParseFilter(topic)
	return err == nil && (f.Kind != hubproto.FilterC2D || f.DeviceID == "" || f.DeviceID == c.id.DeviceID)
}

// subscribed records the kinds of the filters SUBACK grants (mochi grants
// QoS 2 requests QoS 1, caps.MaximumQos); a C2D subscription starts the
// delivery of the messages waiting (c2d.go).
func (c *hubConn) subscribed(pk packets.Packet, codes []byte) {
	if c.session == nil {
		return
	}
	for i, sub := range pk.Filters {
		if i >= len(codes) || codes[i] > packets.CodeGrantedQos2.Code {
			continue
		}
		if f, err := hubproto.ParseFilter(sub.Filter); err == nil {
			c.session.add(f.Kind)
			if f.Kind == hubproto.FilterC2D {
				c.startC2D()
			}
		}
	}
}

// publish handles a device's PUBLISH in OnPublish. Telemetry is accepted
// here: mochi v2.7.9's Server.processPublish calls the OnPublish hooks
// before it builds and writes the PUBACK, on the connection's goroutine,
// so the PUBACK goes out only once iothub.Service.Send has made the
// message durable. When Send fails (the store, a message over the size
// limit) the connection is closed and nothing is acknowledged: the device
// sends the message again. Twin and method requests are answered in
// OnPublished (published). Nothing a device publishes is ever delivered
// to subscribers (CodeSuccessIgnore).
func (c *hubConn) publish(pk packets.Packet) (packets.Packet, error) {
	p, err := c.parse(pk.TopicName)
	if err != nil { // read closed the connection already
		c.cl.Stop(errHubProtocol)
		return pk, packets.ErrRejectPacket
	}
	if p.Kind != hubproto.KindTelemetry {
		return pk, packets.CodeSuccessIgnore
	}
	ctx, cancel := context.WithTimeout(c.st.ctx, c.h.o.RequestTimeout)
	defer cancel()
	refuse, dropAfter := c.telemetryFault(ctx) // guard.go
	if refuse {
		c.cl.Stop(errFaultDrop)
		return pk, packets.ErrRejectPacket
	}
	if _, err := c.h.o.Hub.Send(ctx, c.id, telemetry(pk, p)); err != nil {
		log := c.h.o.Logger.Debug
		if k := dps.KindOf(err); k != dps.KindTooLarge && k != dps.KindInvalid {
			log = c.h.o.Logger.Warn
		}
		log("mqtt hub telemetry not accepted; connection closed, nothing acknowledged", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
		c.cl.Stop(err)
		return pk, packets.ErrRejectPacket
	}
	if dropAfter {
		c.cl.Stop(errFaultDrop)
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// telemetry is the message a telemetry PUBLISH carries. The bag's $.mid,
// $.cid, $.uid, $.ct and $.ce are the message's fields; $.to, $.exp, $.ifid
// and $.sub go into System as "to", "absolute-expiry-time",
// "iothub-interface-id" and "dt-subject"; every other member is an
// application property (the first of the same name wins; a bare key is an
// empty value). RETAIN=1 adds the application property mqtt-retain=true.
func telemetry(pk packets.Packet, p hubproto.Publish) dps.Message {
	sys, app := hubproto.SplitProperties(p.Properties)
	m := dps.Message{
		MessageID:       sys.MessageID,
		CorrelationID:   sys.CorrelationID,
		UserID:          sys.UserID,
		ContentType:     sys.ContentType,
		ContentEncoding: sys.ContentEncoding,
		Body:            append([]byte{}, pk.Payload...), // an empty body is empty, not absent
	}
	for _, kv := range [...][2]string{{sysTo, sys.To}, {sysExpiry, sys.Expiry}, {sysInterfaceID, sys.InterfaceID}, {sysSubject, sys.Subject}} {
		if kv[1] != "" {
			if m.System == nil {
				m.System = map[string]string{}
			}
			m.System[kv[0]] = kv[1]
		}
	}
	if len(app) > 0 || pk.FixedHeader.Retain {
		m.Properties = make(map[string]string, len(app)+1)
	}
	for _, a := range app {
		if _, dup := m.Properties[a.Key]; !dup {
			m.Properties[a.Key] = a.Value
		}
	}
	if pk.FixedHeader.Retain {
		m.Properties[propRetain] = "true"
	}
	return m
}

// published answers a device's twin request, or passes on its answer to a
// direct method, after mochi acknowledged the request (QoS 1), on the
// connection's goroutine: one connection's requests are answered in order.
// Twin answers go out at QoS 0, only to a device subscribed to
// $iothub/twin/res/# (the request is carried out all the same).
func (c *hubConn) published(pk packets.Packet) {
	p, err := c.parse(pk.TopicName)
	if err != nil || p.Kind == hubproto.KindTelemetry {
		return
	}
	if p.Kind == hubproto.KindMethodResponse {
		c.h.o.Hub.MethodResponse(c.id, p.RequestID, p.Status, pk.Payload)
		return
	}
	if p.Kind == hubproto.KindIssueCertificate {
		c.issueCertificate(p.RequestID, pk.Payload)
		return
	}
	ctx, cancel := context.WithTimeout(c.st.ctx, c.h.o.RequestTimeout)
	defer cancel()
	var topic string
	var body []byte
	answered, dropAfter := false, false
	if p.Kind == hubproto.KindTwinGet || p.Kind == hubproto.KindReportedPatch {
		topic, body, answered, dropAfter = c.twinGuard(ctx, p.RequestID) // guard.go
	}
	switch {
	case answered:
	case p.Kind == hubproto.KindTwinGet:
		twin, err := c.h.o.Hub.Twin(ctx, c.id)
		if err != nil {
			topic, body = c.twinError(p.RequestID, err)
		} else {
			topic, body = hubproto.TwinResponseTopic(200, p.RequestID), twin
		}
	case p.Kind == hubproto.KindReportedPatch:
		version, err := c.h.o.Hub.PatchReported(ctx, c.id, pk.Payload)
		if err != nil {
			topic, body = c.twinError(p.RequestID, err)
		} else {
			topic = hubproto.ReportedResponseTopic(p.RequestID, version) // 204, empty body
		}
	default:
		return
	}
	if dropAfter {
		c.cl.Stop(errFaultDrop)
		return
	}
	restartKeepalive(c.cl)
	if !c.session.has(hubproto.FilterTwinResponses) {
		return
	}
	out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: body}
	if err := c.cl.WritePacket(out); err != nil {
		c.h.o.Logger.Debug("mqtt hub twin response not delivered", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
	}
}

// issueCertificate renews the device's operational certificate, as IoT
// Hub's certificate renewal: $iothub/credentials/res/202/?$rid= with
// {"correlationId","operationExpires"} once the request is checked and
// the certificate issued, then
// $iothub/credentials/res/200/?$rid= with {"correlationId","certificates"}
// (base64 DER, leaf first), or an error status and IoT Hub's error body
// (400040 for a request the hub refuses). Answers go out at QoS 0, only to
// a device subscribed to $iothub/credentials/res/#; the new certificate
// takes effect at the device's next connection (this one goes on).
func (c *hubConn) issueCertificate(rid string, body []byte) {
	ctx, cancel := context.WithTimeout(c.st.ctx, c.h.o.RequestTimeout)
	defer cancel()
	correlation := wire.NewTrackingID()
	restartKeepalive(c.cl)
	expires := time.Now().Add(c.h.o.RequestTimeout).UTC().Format(time.RFC3339)
	// The body and the CSR are checked (and the certificate issued, which
	// takes no longer) before the 202: a request the hub refuses gets only
	// its error, never "accepted" first.
	chain, err := c.h.o.Hub.IssueCertificate(ctx, c.id, body)
	if err != nil {
		if k := dps.KindOf(err); k == dps.KindInternal || k == dps.KindUnavailable {
			c.h.o.Logger.Warn("mqtt hub certificate renewal failed", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
		}
		status, eb := wire.Error(err, wire.NewTrackingID(), time.Now())
		c.credentialsAnswer(hubproto.CredentialsResponseTopic(status, rid), map[string]any{
			"errorCode": eb.ErrorCode, "message": eb.Message, "trackingId": eb.TrackingID, "timestampUtc": eb.TimestampUtc,
			"info": map[string]string{"correlationId": correlation}})
		return
	}
	c.credentialsAnswer(hubproto.CredentialsResponseTopic(202, rid), map[string]string{"correlationId": correlation, "operationExpires": expires})
	c.credentialsAnswer(hubproto.CredentialsResponseTopic(200, rid), map[string]any{"correlationId": correlation, "certificates": chain})
}

// credentialsAnswer publishes an answer to a renewal (QoS 0) if the
// device subscribed to them.
func (c *hubConn) credentialsAnswer(topic string, v any) {
	if !c.session.has(hubproto.FilterCredentials) {
		return
	}
	body, err := wire.Marshal(v)
	if err != nil {
		return
	}
	out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: topic, Payload: body}
	if err := c.cl.WritePacket(out); err != nil {
		c.h.o.Logger.Debug("mqtt hub credentials answer not delivered", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
	}
}

// twinError is the answer to a twin request that failed: the status of
// the error's Kind and IoT Hub's JSON error body, which every SDK can
// parse (Node treats a response as an error only when its body has an
// errorCode).
func (c *hubConn) twinError(rid string, err error) (string, []byte) {
	if k := dps.KindOf(err); k == dps.KindInternal || k == dps.KindUnavailable {
		c.h.o.Logger.Warn("mqtt hub twin request failed", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
	}
	status, eb := wire.Error(err, wire.NewTrackingID(), time.Now())
	body, merr := wire.Marshal(eb)
	if merr != nil {
		body = []byte(`{"errorCode":500001,"message":"Internal server error."}`)
	}
	return hubproto.TwinResponseTopic(status, rid), body
}

// Desired sends a desired-property notification (QoS 0) if the device
// subscribed to them.
func (c *hubConn) Desired(version int64, body []byte) bool {
	if !c.session.has(hubproto.FilterDesired) {
		return false
	}
	c.enqueue(hubproto.DesiredPatchTopic(version), body)
	return true
}

// Method sends a direct-method request (QoS 0) if the device subscribed to
// methods. It reports false, so that the caller is told at once that the
// device cannot take the call, when the request was dropped because the
// device does not read fast enough.
func (c *hubConn) Method(name, rid string, body []byte) bool {
	if !c.session.has(hubproto.FilterMethods) {
		return false
	}
	if len(body) == 0 {
		body = []byte("null") // the Node SDK JSON.parses every request body
	}
	return c.enqueue(hubproto.MethodRequestTopic(name, rid), body)
}

// Close ends the connection without a DISCONNECT (MQTT 3.1.1): another
// authenticated connection of the device replaced it, or the identity went
// away.
func (c *hubConn) Close(reason error) {
	c.h.o.Logger.Debug("mqtt hub connection closed by the hub", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, "reason", reason)
	c.cl.Stop(reason)
}

// enqueue queues a QoS 0 publish for the writer without blocking the
// caller (a service request, another device's goroutine): when hubQueue
// messages already wait for a device that does not read, the message is
// dropped, as QoS 0 allows. The message the writer is writing no longer
// waits; messages queued before CONNACK wait for it (established).
func (c *hubConn) enqueue(topic string, body []byte) bool {
	c.out.mu.Lock()
	ok := len(c.out.pending) < hubQueue
	if ok {
		c.out.pending = append(c.out.pending, hubMsg{topic: topic, body: body})
		c.startWriter()
	}
	c.out.mu.Unlock()
	if !ok {
		c.h.o.Logger.Debug("mqtt hub message dropped: the device does not read", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID,
			"topic", strings.SplitN(topic, "?", 2)[0])
	}
	return ok
}

// startWriter starts the writer if messages wait, CONNACK has been
// written, none runs, and the connection has not ended. c.out.mu is held.
func (c *hubConn) startWriter() {
	if len(c.out.pending) > 0 && c.out.open && !c.out.writing && c.st.ctx.Err() == nil {
		c.out.writing = true
		go c.write()
	}
}

// write writes the queued messages, one at a time and in order, until
// none waits or the connection ends.
func (c *hubConn) write() {
	for {
		c.out.mu.Lock()
		if len(c.out.pending) == 0 || c.st.ctx.Err() != nil {
			c.out.writing = false
			if len(c.out.pending) == 0 {
				c.out.pending = nil // an idle connection keeps no buffer
			}
			c.out.mu.Unlock()
			return
		}
		m := c.out.pending[0]
		n := copy(c.out.pending, c.out.pending[1:])
		c.out.pending[n] = hubMsg{}
		c.out.pending = c.out.pending[:n]
		c.out.mu.Unlock()
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: m.topic, Payload: m.body}
		if err := c.cl.WritePacket(pk); err != nil {
			c.h.o.Logger.Debug("mqtt hub message not delivered", logkey.Hub, c.hub, logDeviceID, c.id.DeviceID, logkey.Error, err)
		}
	}
}
