package device

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/opendps/dps/internal/wsstream"
)

// The MQTT transport speaks MQTT 3.1.1 over TLS and is deliberately as
// strict as the strictest Azure SDK (C#): it expects CONNACK with
// SessionPresent=0, a SUBACK carrying its packet id, and, after each QoS 1
// request, the PUBACK before the response PUBLISH.

const mqttResponseFilter = "$dps/registrations/res/#"

type mqttConn struct {
	c      net.Conn
	r      *bufio.Reader
	nextID uint16
}

func (c *Client) registerMQTT(ctx context.Context, registrationID string, cred Credential, payload any, o registerOptions, overWebSocket bool) (*Result, error) {
	addr := c.MQTTAddress
	if overWebSocket {
		// MQTT over WebSocket is served on the HTTPS endpoint.
		u, err := url.Parse(c.Endpoint)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("device: cannot derive the WebSocket address from endpoint %q", c.Endpoint)
		}
		addr = u.Host
		if u.Port() == "" {
			addr = net.JoinHostPort(u.Hostname(), "443")
		}
	} else if addr == "" {
		u, err := url.Parse(c.Endpoint)
		if err != nil || u.Hostname() == "" {
			return nil, fmt.Errorf("device: cannot derive the MQTT address from endpoint %q; set MQTTAddress", c.Endpoint)
		}
		addr = net.JoinHostPort(u.Hostname(), "8883")
	}
	apiVersion := c.apiVersion(o)
	ttl := c.TokenTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	password := ""
	if cred != nil {
		var err error
		if password, err = cred.Authorization(c.IDScope+"/registrations/"+registrationID, time.Now(), ttl); err != nil {
			return nil, err
		}
	}
	raw, err := dialMQTT(ctx, addr, c.TLSConfig, overWebSocket)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	defer stop()
	m := &mqttConn{c: raw, r: bufio.NewReader(raw), nextID: 1}

	username := c.IDScope + "/registrations/" + registrationID + "/api-version=" + apiVersion + "&ClientVersion=" + url.QueryEscape("opendps-device/1")
	if err := m.connect(registrationID, username, password, 60); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := m.subscribe(mqttResponseFilter); err != nil {
		return nil, ctxErr(ctx, err)
	}
	b, err := registerBody(registrationID, payload, o)
	if err != nil {
		return nil, err
	}
	res, retry, err := m.request(ctx, "$dps/registrations/PUT/iotdps-register/?$rid=", "", b)
	if err == nil {
		res, err = c.await(ctx, res, retry, func(opID string) (*Result, time.Duration, error) {
			return m.request(ctx, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=", "&operationId="+opID, nil)
		})
	}
	m.write(0xE0, nil) // DISCONNECT
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	return res, nil
}

// dialMQTT opens the byte stream MQTT runs on: TLS to addr, or a
// WebSocket (subprotocol mqtt) to wss://addr/$iothub/websocket. The TLS
// server name defaults to addr's host.
func dialMQTT(ctx context.Context, addr string, cfg *tls.Config, overWebSocket bool) (net.Conn, error) {
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		cfg.ServerName = host
	}
	if overWebSocket {
		d := &websocket.Dialer{TLSClientConfig: cfg, Subprotocols: []string{"mqtt"}, HandshakeTimeout: 30 * time.Second}
		ws, resp, err := d.DialContext(ctx, "wss://"+addr+"/$iothub/websocket", nil)
		if err != nil {
			if resp != nil {
				return nil, fmt.Errorf("device: MQTT over WebSocket: %s: %w", resp.Status, err)
			}
			return nil, err
		}
		return wsstream.New(ws), nil
	}
	d := &tls.Dialer{Config: cfg}
	return d.DialContext(ctx, "tcp", addr)
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func mqttString(s string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(s)))
	return append(b, s...)
}

func (m *mqttConn) write(header byte, body []byte) error {
	pkt := []byte{header}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		pkt = append(pkt, d)
		if n == 0 {
			break
		}
	}
	_, err := m.c.Write(append(pkt, body...))
	return err
}

// read returns the next packet's type nibble, flags and body.
func (m *mqttConn) read() (typ, flags byte, body []byte, err error) {
	h, err := m.r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		d, err := m.r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		n += int(d&0x7f) * mult
		mult *= 128
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, 0, nil, errors.New("device: malformed MQTT length")
		}
	}
	body = make([]byte, n)
	if _, err := io.ReadFull(m.r, body); err != nil {
		return 0, 0, nil, err
	}
	return h >> 4, h & 0x0f, body, nil
}

// ConnectRefusedError is a CONNACK refusal.
type ConnectRefusedError struct{ Code byte }

func (e *ConnectRefusedError) Error() string {
	return fmt.Sprintf("device: MQTT connection refused (CONNACK return code %d)", e.Code)
}

// connect sends CONNECT (MQTT 3.1.1, clean session) and reads CONNACK.
func (m *mqttConn) connect(clientID, username, password string, keepAliveSeconds uint16) error {
	var b []byte
	b = append(b, mqttString("MQTT")...)
	b = append(b, 4)    // protocol level 3.1.1
	flags := byte(0x82) // username, clean session
	if password != "" {
		flags |= 0x40
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint16(b, keepAliveSeconds)
	b = append(b, mqttString(clientID)...)
	b = append(b, mqttString(username)...)
	if password != "" {
		b = append(b, mqttString(password)...)
	}
	if err := m.write(0x10, b); err != nil {
		return err
	}
	typ, _, body, err := m.read()
	if err != nil {
		return err
	}
	if typ != 2 || len(body) != 2 {
		return fmt.Errorf("device: expected CONNACK, got packet type %d", typ)
	}
	if body[1] != 0 {
		return &ConnectRefusedError{Code: body[1]}
	}
	if body[0]&1 != 0 {
		return errors.New("device: CONNACK reports a present session for a clean session")
	}
	return nil
}

func (m *mqttConn) id() uint16 {
	id := m.nextID
	m.nextID++
	if m.nextID == 0 {
		m.nextID = 1
	}
	return id
}

func (m *mqttConn) subscribe(filter string) error {
	id := m.id()
	b := binary.BigEndian.AppendUint16(nil, id)
	b = append(b, mqttString(filter)...)
	b = append(b, 1)
	if err := m.write(0x82, b); err != nil {
		return err
	}
	typ, _, body, err := m.read()
	if err != nil {
		return err
	}
	if typ != 9 || len(body) < 3 || binary.BigEndian.Uint16(body) != id {
		return fmt.Errorf("device: expected SUBACK for packet %d, got packet type %d", id, typ)
	}
	if body[2] == 0x80 {
		return errors.New("device: subscription refused")
	}
	return nil
}

// request publishes one QoS 1 request and returns the parsed response.
func (m *mqttConn) request(ctx context.Context, topicPrefix, topicSuffix string, payload []byte) (*Result, time.Duration, error) {
	var r [8]byte
	rand.Read(r[:])
	rid := hex.EncodeToString(r[:])
	id := m.id()
	b := mqttString(topicPrefix + rid + topicSuffix)
	b = binary.BigEndian.AppendUint16(b, id)
	b = append(b, payload...)
	if err := m.write(0x32, b); err != nil { // PUBLISH, QoS 1
		return nil, 0, err
	}
	typ, flags, body, err := m.read()
	if err != nil {
		return nil, 0, err
	}
	if typ != 4 || len(body) < 2 || binary.BigEndian.Uint16(body) != id {
		return nil, 0, fmt.Errorf("device: expected PUBACK for packet %d before the response, got packet type %d", id, typ)
	}
	typ, flags, body, err = m.read()
	if err != nil {
		return nil, 0, err
	}
	if typ != 3 {
		return nil, 0, fmt.Errorf("device: expected the response PUBLISH, got packet type %d", typ)
	}
	if len(body) < 2 {
		return nil, 0, errors.New("device: short PUBLISH")
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return nil, 0, errors.New("device: short PUBLISH topic")
	}
	topic, rest := string(body[2:2+tl]), body[2+tl:]
	if qos := (flags >> 1) & 3; qos > 0 {
		if len(rest) < 2 {
			return nil, 0, errors.New("device: short PUBLISH packet id")
		}
		pid := rest[:2]
		rest = rest[2:]
		if qos != 1 || binary.BigEndian.Uint16(pid) == 0 {
			return nil, 0, fmt.Errorf("device: response PUBLISH with QoS %d and packet id %d", qos, binary.BigEndian.Uint16(pid))
		}
		if err := m.write(0x40, pid); err != nil { // PUBACK
			return nil, 0, err
		}
	}
	status, gotRID, retry, err := parseResponseTopic(topic)
	if err != nil {
		return nil, 0, err
	}
	if gotRID != rid {
		return nil, 0, fmt.Errorf("device: response for $rid %q, want %q", gotRID, rid)
	}
	if status >= 300 {
		e := &Error{StatusCode: status}
		if err := json.Unmarshal(rest, e); err != nil {
			e.Message = string(rest)
		}
		return nil, retry, e
	}
	var res Result
	if err := json.Unmarshal(rest, &res); err != nil {
		return nil, 0, fmt.Errorf("device: decode answer: %w", err)
	}
	if res.OperationID == "" || res.Status == "" {
		return nil, 0, fmt.Errorf("device: answer lacks operationId or status: %s", rest)
	}
	return &res, retry, nil
}

// parseResponseTopic parses "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={n}]".
func parseResponseTopic(topic string) (status int, rid string, retry time.Duration, err error) {
	rest, ok := strings.CutPrefix(topic, "$dps/registrations/res/")
	if !ok {
		return 0, "", 0, fmt.Errorf("device: unexpected topic %q", topic)
	}
	code, query, ok := strings.Cut(rest, "/?")
	if !ok {
		return 0, "", 0, fmt.Errorf("device: unexpected topic %q", topic)
	}
	if status, err = strconv.Atoi(code); err != nil {
		return 0, "", 0, fmt.Errorf("device: unexpected topic %q", topic)
	}
	retry = 2 * time.Second
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "$rid":
			rid = v
		case "retry-after":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				retry = time.Duration(n) * time.Second
			}
		}
	}
	return status, rid, retry, nil
}
