package device

// A device's connection to its IoT hub over MQTT 3.1.1 (TLS on 8883, or
// WebSocket on 443): the hub protocol of Azure IoT Hub, which dps's
// built-in hubs serve as well.
//
// One goroutine reads the connection: it hands twin answers, PUBACKs and
// SUBACKs to the call waiting for them and queues desired-property
// patches, method calls and cloud-to-device messages for a second
// goroutine that runs the handlers one at a time, in the order they
// arrived, so that a handler may itself call the Hub's methods.

import (
	"bufio"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opendps/dps/internal/sas"
)

// HubAPIVersion is the api-version a Hub sends in its MQTT username.
const HubAPIVersion = "2021-04-12"

// ErrHubClosed is wrapped by the error of a Hub call made when the
// connection has ended (Close, the hub closed it, or the network failed);
// Hub.Err says why.
var ErrHubClosed = errors.New("device: hub connection closed")

// HubOptions say how to connect a device to its IoT hub.
type HubOptions struct {
	// Host is the hub's host name: the assignedHub of the device's
	// registration, for example "localhost" for dps's built-in hub. It is
	// the MQTT username's host, the SAS token's audience and the TLS
	// server name (unless TLS.ServerName is set).
	Host string
	// DeviceID is the device's ID on the hub (the registration's deviceId).
	DeviceID string
	// Credential is SymmetricKey(deviceKey), or Certificate(cert) for an
	// X.509 device (a TLS client certificate, no password). Any other
	// Credential's Authorization is sent as the password, for resource
	// "{Host}/devices/{DeviceID}".
	Credential Credential
	// Address is host:port to dial (default: Host and port 8883, or 443
	// with WebSocket).
	Address string
	// WebSocket carries MQTT over a WebSocket on the HTTPS port
	// (wss://Address/$iothub/websocket), for networks that pass only 443.
	WebSocket bool
	// TLS configures the connection's TLS (trusted roots, a client
	// certificate); nil is the system roots.
	TLS *tls.Config
	// TokenTTL is the lifetime of the SAS token signed with a symmetric
	// key (default one hour). The hub closes the connection when the token
	// expires; connect again then (Done, Err).
	TokenTTL time.Duration
	// KeepAlive is the MQTT keep-alive (default 60 s, at most 65535 s); the
	// Hub pings at half of it.
	KeepAlive time.Duration
}

// Twin is a device's twin as the device reads it: its desired and
// reported properties, each with its "$version".
type Twin struct {
	Desired  json.RawMessage `json:"desired"`
	Reported json.RawMessage `json:"reported"`
}

// CloudMessage is a cloud-to-device message. Its system properties are
// fields; "" when the hub did not send one.
type CloudMessage struct {
	Body            []byte
	MessageID       string // $.mid
	CorrelationID   string // $.cid
	UserID          string // $.uid
	To              string // $.to
	ContentType     string // $.ct
	ContentEncoding string // $.ce
	Expiry          string // $.exp: absolute expiry time (ISO 8601)
	Ack             string // iothub-ack: the feedback the sender asked for
	// Properties are the application properties.
	Properties map[string]string
}

// HubError is an error answer of the hub to a twin request.
type HubError struct {
	Status     int    `json:"-"` // the status in the response topic
	ErrorCode  int    `json:"errorCode"`
	TrackingID string `json:"trackingId"`
	Message    string `json:"message"`
}

func (e *HubError) Error() string {
	if e.ErrorCode != 0 {
		return fmt.Sprintf("device: hub answered %d, error %d: %s (tracking ID %s)", e.Status, e.ErrorCode, e.Message, e.TrackingID)
	}
	return fmt.Sprintf("device: hub answered %d", e.Status)
}

// Certificate returns the credential of an X.509 device: ConnectHub
// presents cert in the TLS handshake and sends no password. Its
// Authorization is empty; to register an X.509 device, put the certificate
// in Client.TLSConfig (MQTT) or Client.HTTPClient (HTTPS) and pass a nil
// credential.
func Certificate(cert tls.Certificate) Credential { return certificate{cert} }

type certificate struct{ cert tls.Certificate }

func (certificate) Authorization(string, time.Time, time.Duration) (string, error) { return "", nil }

// hubPassword is the MQTT password of a hub connection.
func hubPassword(cred Credential, resource string, now time.Time, ttl time.Duration) (string, error) {
	switch c := cred.(type) {
	case nil, certificate:
		return "", nil
	case symmetricKey:
		raw, err := base64.StdEncoding.DecodeString(string(c))
		if err != nil {
			return "", fmt.Errorf("device: symmetric key is not base64: %w", err)
		}
		return sas.New(resource, raw, "", now.Add(ttl)), nil // a device key: no skn
	default:
		return cred.Authorization(resource, now, ttl)
	}
}

// twinAnswer is the hub's answer to a twin request.
type twinAnswer struct {
	status  int
	version int64
	body    []byte
}

// Hub is a device's MQTT connection to its IoT hub. Its methods are safe
// for concurrent use. The connection lasts until Close, or until the hub
// or the network ends it (Done); it is not re-established.
type Hub struct {
	opts HubOptions
	conn net.Conn
	m    *mqttConn // writes under wmu; reads only in readLoop

	wmu sync.Mutex

	mu        sync.Mutex
	acks      map[uint16]chan []byte     // packet id → PUBACK/SUBACK body after the id
	answers   map[string]chan twinAnswer // $rid → twin answer
	creds     map[string]chan twinAnswer // $rid → certificate renewal answers (202, then 200)
	credsSub  bool                       // subscribed to the renewal answers
	nextRID   uint64
	onDesired func(version int64, patch json.RawMessage)
	onMethod  func(name string, payload json.RawMessage) (int, any)
	onMessage func(CloudMessage)
	queue     []func() // handler calls waiting for dispatch
	err       error    // why the connection ended

	wake      chan struct{} // a handler call was queued
	done      chan struct{}
	closeOnce sync.Once
	finished  chan struct{} // readLoop has returned
}

// ConnectHub connects a device to its hub: CONNECT (clean session),
// then a subscription to twin answers. A refusal is a *ConnectRefusedError
// (5: not authorized — wrong key or certificate, unknown device; 3: server
// unavailable — a disabled device, or the hub cannot serve now).
func ConnectHub(ctx context.Context, o HubOptions) (*Hub, error) {
	if o.Host == "" || o.DeviceID == "" {
		return nil, errors.New("device: HubOptions need Host and DeviceID")
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = time.Hour
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 60 * time.Second
	}
	keepAlive := min(o.KeepAlive/time.Second, 65535)
	if keepAlive < 1 {
		keepAlive = 1
	}
	addr := o.Address
	if addr == "" {
		port := "8883"
		if o.WebSocket {
			port = "443"
		}
		addr = net.JoinHostPort(o.Host, port)
	}
	password, err := hubPassword(o.Credential, o.Host+"/devices/"+o.DeviceID, time.Now(), o.TokenTTL)
	if err != nil {
		return nil, err
	}
	cfg := o.TLS
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = o.Host
	}
	if c, ok := o.Credential.(certificate); ok {
		cfg.Certificates = []tls.Certificate{c.cert}
	}
	conn, err := dialMQTT(ctx, addr, cfg, o.WebSocket)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	m := &mqttConn{c: conn, r: bufio.NewReader(conn), nextID: 1}
	username := o.Host + "/" + o.DeviceID + "/?api-version=" + HubAPIVersion + "&DeviceClientType=" + url.QueryEscape("opendps-device/1")
	err = m.connect(o.DeviceID, username, password, uint16(keepAlive))
	if !stop() || err != nil {
		conn.Close()
		return nil, ctxErr(ctx, err)
	}
	h := &Hub{opts: o, conn: conn, m: m, acks: map[uint16]chan []byte{}, answers: map[string]chan twinAnswer{}, creds: map[string]chan twinAnswer{},
		wake: make(chan struct{}, 1), done: make(chan struct{}), finished: make(chan struct{})}
	go h.readLoop()
	go h.dispatch()
	go h.ping(time.Duration(keepAlive) * time.Second / 2)
	if err := h.subscribe(ctx, "$iothub/twin/res/#", 0); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// Done is closed when the connection has ended.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Err says why the connection ended: nil while it lasts and after Close,
// else the read error (for example io.EOF when the hub closed it: a newer
// connection of the device took over, the token expired, the identity was
// disabled or moved).
func (h *Hub) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Close sends DISCONNECT and closes the connection. Handlers running are
// not waited for.
func (h *Hub) Close() error {
	h.end(nil, true)
	<-h.finished
	return nil
}

// end ends the connection once, recording why (nil: Close, which sends
// DISCONNECT first).
func (h *Hub) end(err error, disconnect bool) {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
		close(h.done)
		if disconnect {
			// The deadline first: it also ends a write stuck on a peer
			// that stopped reading, which holds wmu.
			h.conn.SetWriteDeadline(time.Now().Add(time.Second))
			h.wmu.Lock()
			h.m.write(0xE0, nil) // DISCONNECT
			h.wmu.Unlock()
		}
		h.conn.Close()
	})
}

// closedErr is the error of a call on an ended connection.
func (h *Hub) closedErr() error {
	if err := h.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrHubClosed, err)
	}
	return ErrHubClosed
}

// Twin reads the device's twin.
func (h *Hub) Twin(ctx context.Context) (*Twin, error) {
	a, err := h.twinRequest(ctx, "$iothub/twin/GET/?$rid=", nil)
	if err != nil {
		return nil, err
	}
	if a.status != 200 {
		return nil, fmt.Errorf("device: twin GET answered %d", a.status)
	}
	var t Twin
	if err := json.Unmarshal(a.body, &t); err != nil {
		return nil, fmt.Errorf("device: decode twin: %w", err)
	}
	return &t, nil
}

// UpdateReported patches the device's reported properties and returns
// their new version. patch is marshalled to JSON (json.RawMessage and
// []byte as they are); a member set to null removes that property.
func (h *Hub) UpdateReported(ctx context.Context, patch any) (int64, error) {
	var body []byte
	switch p := patch.(type) {
	case json.RawMessage:
		body = p
	case []byte:
		body = p
	default:
		var err error
		if body, err = marshal(patch); err != nil {
			return 0, fmt.Errorf("device: encode reported patch: %w", err)
		}
	}
	if !json.Valid(body) {
		return 0, errors.New("device: the reported patch is not JSON")
	}
	a, err := h.twinRequest(ctx, "$iothub/twin/PATCH/properties/reported/?$rid=", body)
	if err != nil {
		return 0, err
	}
	if a.status != 204 && a.status != 200 {
		return 0, fmt.Errorf("device: reported PATCH answered %d", a.status)
	}
	return a.version, nil
}

// twinRequest publishes a twin request (QoS 0, as the Node and C SDKs do)
// and waits for its answer; an error answer is a *HubError.
func (h *Hub) twinRequest(ctx context.Context, topic string, body []byte) (twinAnswer, error) {
	ch := make(chan twinAnswer, 1)
	h.mu.Lock()
	h.nextRID++
	rid := strconv.FormatUint(h.nextRID, 10)
	h.answers[rid] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.answers, rid)
		h.mu.Unlock()
	}()
	if err := h.publish(topic+rid, body, 0, 0); err != nil {
		return twinAnswer{}, err
	}
	select {
	case a := <-ch:
		if a.status >= 300 {
			e := &HubError{Status: a.status}
			json.Unmarshal(a.body, e)
			return a, e
		}
		return a, nil
	case <-ctx.Done():
		return twinAnswer{}, ctx.Err()
	case <-h.done:
		return twinAnswer{}, h.closedErr()
	}
}

// RenewCertificate renews the device's operational certificate, as IoT
// Hub's certificate renewal: it publishes csr (DER, NewCSR with a new key;
// its subject the device's registration ID or device ID) to
// $iothub/credentials/POST/issueCertificate, and returns the new chain
// (base64 DER, leaf first; TLSCertificateFromChain) once the hub has
// answered 202 (accepted) and then 200. The new certificate is for the
// device's next connection: this one goes on. An error answer is a
// *HubError (400040: the hub refused the request).
func (h *Hub) RenewCertificate(ctx context.Context, csr []byte) ([]string, error) {
	h.mu.Lock()
	subscribed := h.credsSub
	h.mu.Unlock()
	if !subscribed {
		if err := h.subscribe(ctx, "$iothub/credentials/res/#", 0); err != nil {
			return nil, err
		}
		h.mu.Lock()
		h.credsSub = true
		h.mu.Unlock()
	}
	body, err := marshal(map[string]string{"id": h.opts.DeviceID, "csr": base64.StdEncoding.EncodeToString(csr)})
	if err != nil {
		return nil, err
	}
	ch := make(chan twinAnswer, 2)
	h.mu.Lock()
	h.nextRID++
	rid := strconv.FormatUint(h.nextRID, 10)
	h.creds[rid] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.creds, rid)
		h.mu.Unlock()
	}()
	if err := h.publish("$iothub/credentials/POST/issueCertificate/?$rid="+rid, body, 0, 0); err != nil {
		return nil, err
	}
	for {
		select {
		case a := <-ch:
			switch {
			case a.status == 202:
				continue // accepted: the certificates come next
			case a.status >= 300:
				e := &HubError{Status: a.status}
				json.Unmarshal(a.body, e)
				return nil, e
			}
			var issued struct {
				Certificates []string `json:"certificates"`
			}
			if err := json.Unmarshal(a.body, &issued); err != nil || len(issued.Certificates) == 0 {
				return nil, fmt.Errorf("device: the hub's %d answer to the renewal has no certificates: %s", a.status, a.body)
			}
			return issued.Certificates, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-h.done:
			return nil, h.closedErr()
		}
	}
}

// TLSCertificateFromChain is an issued chain (base64 DER, leaf first: a
// registration's IssuedCertificateChain or a renewal's) with the key of
// its CSR, to present to the hub (Certificate in HubOptions).
func TLSCertificateFromChain(chain []string, key crypto.Signer) (tls.Certificate, error) {
	return tlsCertificate(chain, key)
}

// Send sends a device-to-cloud message (telemetry) at QoS 1 and returns
// once the hub acknowledged it: dps's built-in hub acknowledges a message
// only once it is durable. props are its application properties; the
// system properties go in under their bag names: "$.mid" (message ID),
// "$.cid" (correlation ID), "$.ct" (content type, e.g. application/json),
// "$.ce" (content encoding, e.g. utf-8).
func (h *Hub) Send(ctx context.Context, body []byte, props map[string]string) error {
	topic := "devices/" + h.opts.DeviceID + "/messages/events/" + encodeBag(props)
	id, ch := h.expectAck()
	defer h.forgetAck(id)
	if err := h.publish(topic, body, 1, id); err != nil {
		return err
	}
	return h.waitAck(ctx, ch)
}

// OnDesired subscribes to desired-property patches: fn gets each patch
// the service makes while the device is connected, with its version (the
// patch holds it as "$version" too). A device that was offline reads the
// twin (Twin) to catch up.
func (h *Hub) OnDesired(ctx context.Context, fn func(version int64, patch json.RawMessage)) error {
	h.mu.Lock()
	h.onDesired = fn
	h.mu.Unlock()
	return h.subscribe(ctx, "$iothub/twin/PATCH/properties/desired/#", 0)
}

// OnMethod subscribes to direct-method calls: fn answers each call with a
// status and a response, marshalled to JSON (nil is null; json.RawMessage
// as it is). The service's caller waits for the answer, so fn should
// return within its timeout.
func (h *Hub) OnMethod(ctx context.Context, fn func(name string, payload json.RawMessage) (status int, response any)) error {
	h.mu.Lock()
	h.onMethod = fn
	h.mu.Unlock()
	return h.subscribe(ctx, "$iothub/methods/POST/#", 0)
}

// OnMessage subscribes to cloud-to-device messages, delivered at QoS 1: a
// message is acknowledged — completed on the hub — once fn has returned
// for it; one not completed when the connection ends comes again.
func (h *Hub) OnMessage(ctx context.Context, fn func(CloudMessage)) error {
	h.mu.Lock()
	h.onMessage = fn
	h.mu.Unlock()
	return h.subscribe(ctx, "devices/"+h.opts.DeviceID+"/messages/devicebound/#", 1)
}

// subscribe subscribes to one filter and waits for its SUBACK.
func (h *Hub) subscribe(ctx context.Context, filter string, qos byte) error {
	id, ch := h.expectAck()
	defer h.forgetAck(id)
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, mqttString(filter)...)
	b = append(b, qos)
	if err := h.write(0x82, b); err != nil {
		return err
	}
	for {
		select {
		case body, ok := <-ch:
			if !ok {
				return fmt.Errorf("device: expected SUBACK for packet %d, got another packet", id)
			}
			if len(body) < 1 || body[0] == 0x80 {
				return fmt.Errorf("device: subscription to %s refused", filter)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-h.done:
			return h.closedErr()
		}
	}
}

// expectAck reserves a packet id and the channel its acknowledgement
// arrives on.
func (h *Hub) expectAck() (uint16, chan []byte) {
	ch := make(chan []byte, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		id := h.m.id()
		if _, used := h.acks[id]; !used {
			h.acks[id] = ch
			return id, ch
		}
	}
}

func (h *Hub) forgetAck(id uint16) {
	h.mu.Lock()
	delete(h.acks, id)
	h.mu.Unlock()
}

func (h *Hub) waitAck(ctx context.Context, ch chan []byte) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-h.done:
		return h.closedErr()
	}
}

// hubWriteTimeout bounds one packet's write: a hub that stops reading
// ends the connection instead of blocking its writers for ever.
const hubWriteTimeout = 30 * time.Second

// write writes one packet.
func (h *Hub) write(header byte, body []byte) error {
	select {
	case <-h.done:
		return h.closedErr()
	default:
	}
	h.wmu.Lock()
	h.conn.SetWriteDeadline(time.Now().Add(hubWriteTimeout))
	err := h.m.write(header, body)
	h.wmu.Unlock()
	if err != nil {
		h.end(err, false)
		return h.closedErr()
	}
	return nil
}

// publish writes a PUBLISH at qos (0 or 1; id is its packet id at 1).
func (h *Hub) publish(topic string, payload []byte, qos byte, id uint16) error {
	b := mqttString(topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return h.write(0x30|qos<<1, append(b, payload...))
}

// ping sends PINGREQ every interval.
func (h *Hub) ping(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-h.done:
			return
		case <-t.C:
			h.write(0xC0, nil) // PINGREQ
		}
	}
}

// readLoop reads packets until the connection ends.
func (h *Hub) readLoop() {
	defer close(h.finished)
	for {
		typ, flags, body, err := h.m.read()
		if err != nil {
			h.end(err, false)
			return
		}
		switch typ {
		case 3: // PUBLISH
			if err := h.received(flags, body); err != nil {
				h.end(err, false)
				return
			}
		case 4, 9: // PUBACK, SUBACK
			if len(body) < 2 {
				h.end(errors.New("device: short acknowledgement"), false)
				return
			}
			h.mu.Lock()
			ch := h.acks[binary.BigEndian.Uint16(body)]
			h.mu.Unlock()
			if ch != nil {
				select {
				case ch <- body[2:]:
				default:
				}
			}
		case 13: // PINGRESP
		default:
			h.end(fmt.Errorf("device: unexpected MQTT packet type %d from the hub", typ), false)
			return
		}
	}
}

// received handles a PUBLISH of the hub.
func (h *Hub) received(flags byte, body []byte) error {
	if len(body) < 2 {
		return errors.New("device: short PUBLISH")
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return errors.New("device: short PUBLISH topic")
	}
	topic, payload := string(body[2:2+tl]), body[2+tl:]
	var pid []byte
	if qos := (flags >> 1) & 3; qos > 0 {
		if len(payload) < 2 {
			return errors.New("device: short PUBLISH packet id")
		}
		pid, payload = payload[:2], payload[2:]
	}
	ack := func() {
		if pid != nil {
			h.write(0x40, pid) // PUBACK
		}
	}
	switch {
	case strings.HasPrefix(topic, "$iothub/twin/res/"):
		ack()
		status, params, err := parseHubTopic(strings.TrimPrefix(topic, "$iothub/twin/res/"))
		if err != nil {
			return nil // not an answer this client understands: ignored
		}
		a := twinAnswer{status: status, body: payload}
		a.version, _ = strconv.ParseInt(params["$version"], 10, 64)
		h.mu.Lock()
		ch := h.answers[params["$rid"]]
		h.mu.Unlock()
		if ch != nil {
			select {
			case ch <- a:
			default:
			}
		}
	case strings.HasPrefix(topic, "$iothub/credentials/res/"):
		ack()
		status, params, err := parseHubTopic(strings.TrimPrefix(topic, "$iothub/credentials/res/"))
		if err != nil {
			return nil
		}
		h.mu.Lock()
		ch := h.creds[params["$rid"]]
		h.mu.Unlock()
		if ch != nil {
			select {
			case ch <- twinAnswer{status: status, body: payload}:
			default:
			}
		}
	case strings.HasPrefix(topic, "$iothub/twin/PATCH/properties/desired/"):
		ack()
		_, query, _ := strings.Cut(topic, "?")
		version, _ := strconv.ParseInt(decodeBag(query)["$version"], 10, 64)
		h.enqueue(func() {
			h.mu.Lock()
			fn := h.onDesired
			h.mu.Unlock()
			if fn != nil {
				fn(version, payload)
			}
		})
	case strings.HasPrefix(topic, "$iothub/methods/POST/"):
		ack()
		name, query, _ := strings.Cut(strings.TrimPrefix(topic, "$iothub/methods/POST/"), "/?")
		rid := strings.TrimPrefix(query, "$rid=") // everything after $rid=, as the SDKs take it
		h.enqueue(func() { h.answerMethod(name, rid, payload) })
	case strings.HasPrefix(topic, "devices/"+h.opts.DeviceID+"/messages/devicebound/"):
		m := cloudMessage(strings.TrimPrefix(topic, "devices/"+h.opts.DeviceID+"/messages/devicebound/"), payload)
		h.enqueue(func() {
			h.mu.Lock()
			fn := h.onMessage
			h.mu.Unlock()
			if fn != nil {
				fn(m)
			}
			ack() // completes the message
		})
	default:
		ack()
	}
	return nil
}

// answerMethod runs the method handler and publishes its answer.
func (h *Hub) answerMethod(name, rid string, payload []byte) {
	h.mu.Lock()
	fn := h.onMethod
	h.mu.Unlock()
	status, resp := 501, any(map[string]string{"message": "no method handler"})
	if fn != nil {
		status, resp = fn(name, payload)
	}
	var body []byte
	switch r := resp.(type) {
	case json.RawMessage:
		body = r
	default:
		var err error
		if body, err = marshal(resp); err != nil {
			status, body = 500, []byte(`{"message":"the method's response is not JSON"}`)
		}
	}
	h.publish("$iothub/methods/res/"+strconv.Itoa(status)+"/?$rid="+rid, body, 0, 0)
}

// enqueue queues a handler call for dispatch.
func (h *Hub) enqueue(fn func()) {
	h.mu.Lock()
	h.queue = append(h.queue, fn)
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// dispatch runs the queued handler calls in order until the connection
// ends.
func (h *Hub) dispatch() {
	for {
		select {
		case <-h.done:
			return
		case <-h.wake:
		}
		for {
			h.mu.Lock()
			if len(h.queue) == 0 {
				h.mu.Unlock()
				break
			}
			fn := h.queue[0]
			h.queue = h.queue[1:]
			h.mu.Unlock()
			select {
			case <-h.done:
				return
			default:
			}
			fn()
		}
	}
}

// parseHubTopic parses "{status}/?{params}".
func parseHubTopic(rest string) (int, map[string]string, error) {
	code, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return 0, nil, errors.New("no query")
	}
	status, err := strconv.Atoi(code)
	if err != nil {
		return 0, nil, err
	}
	return status, decodeBag(query), nil
}

// cloudMessage decodes a C2D delivery's property bag.
func cloudMessage(bag string, body []byte) CloudMessage {
	m := CloudMessage{Body: body}
	for _, kv := range strings.Split(bag, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, v = unescape(k), unescape(v)
		switch k {
		case "$.mid":
			m.MessageID = v
		case "$.cid":
			m.CorrelationID = v
		case "$.uid":
			m.UserID = v
		case "$.to":
			m.To = v
		case "$.ct":
			m.ContentType = v
		case "$.ce":
			m.ContentEncoding = v
		case "$.exp":
			m.Expiry = v
		case "iothub-ack":
			m.Ack = v
		default:
			if m.Properties == nil {
				m.Properties = map[string]string{}
			}
			m.Properties[k] = v
		}
	}
	return m
}

// decodeBag decodes "k=v&k2=v2" (the first of a key wins).
func decodeBag(bag string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(bag, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k = unescape(k); k != "" {
			if _, dup := out[k]; !dup {
				out[k] = unescape(v)
			}
		}
	}
	return out
}

// encodeBag encodes properties as a telemetry property bag, keys in
// order, everything but the RFC 3986 unreserved characters
// percent-encoded (so "$.ct" goes out as %24.ct, a space as %20).
func encodeBag(props map[string]string) string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(escape(k))
		b.WriteByte('=')
		b.WriteString(escape(props[k]))
	}
	return b.String()
}

func escape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

// unescape percent-decodes s, keeping it as it is when it is not valid
// percent-encoding; '+' stays '+'.
func unescape(s string) string {
	if v, err := url.PathUnescape(s); err == nil {
		return v
	}
	return s
}
