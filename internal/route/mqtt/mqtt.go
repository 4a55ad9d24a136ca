// Package mqtt is the MQTT broker routing endpoint: it publishes routed
// messages with QoS 1 to an external broker (Mosquitto, EMQX, HiveMQ, …)
// over MQTT 3.1.1 with github.com/eclipse/paho.mqtt.golang, and counts a
// message delivered once the broker acknowledged it (PUBACK).
//
// # Topics
//
// The topic template (default "fleet/{deviceId}/events") takes {hub} and
// {deviceId}. A topic level cannot hold '/', '+' or '#' (nor NUL), so each
// value is percent-encoded before it is put in: '%', '/', '+', '#' and NUL
// become %XX (upper-case hex); "dev+1" becomes "dev%2B1". The encoding is
// reversible (percent-decode the level).
//
// # Properties
//
// MQTT 3.1.1 has no message headers. With Properties "bag" (the default)
// the message's system and application properties — internal/route's
// Headers: message-id, correlation-id, user-id, content-type,
// content-encoding, iothub-connection-device-id,
// iothub-connection-module-id, iothub-enqueuedtime (RFC 3339), the other
// system properties, dps-event-id "<hub>/<seq>" for de-duplication, the
// application properties — follow the topic as one more level, an IoT Hub
// style property bag, the way a device sends them to IoT Hub
// (devices/{id}/messages/events/{bag}):
//
//	fleet/dev1/events/message-id=m1&content-type=application%2Fjson&iothub-connection-device-id=dev1&…&alert=high
//
// Names and values are percent-encoded with only A-Z a-z 0-9 - . _ ~ kept,
// so the bag never holds '/', '+', '#', '&' or '='. Subscribe to
// "fleet/+/events/#" then. With Properties "none" the topic is the
// template's alone and the properties are not sent. The payload is the
// body in both cases.
//
// # Connections and order
//
// The endpoint connects with a clean session on first use and does not
// reconnect by itself: a Deliver that fails closes the connection, and the
// next one dials anew. All messages of one batch travel over one
// connection, so the broker accepts a prefix of the batch in order and the
// engine's retry of the whole batch repeats that prefix (duplicates) but
// never lets a device's message overtake an earlier one.
//
// Only a topic over MQTT's 64 KB (the template with the message's
// properties) is refused for good (*route.Refused): it depends on the
// message. MQTT 3.1.1 has no per-publish error; a refused connection (bad
// credentials, not authorized) and a publish the broker's ACL denies
// (Mosquitto drops the connection) hold for the route and fail the batch
// as an outage, retried.
//
// Mosquitto sends its PUBACKs with Nagle's algorithm unless its
// configuration says set_tcp_nodelay true; without it each batch waits
// some 40 ms for its last acknowledgements (here: 2,300 instead of 35,000
// messages/s in batches of 100).
package mqtt

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/route"
)

// DefaultTopic is the topic template when Options.Topic is empty.
const DefaultTopic = "fleet/{deviceId}/events"

// DefaultTimeout bounds a Deliver, and a connection attempt, when
// Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// The values of Options.Properties.
const (
	PropertiesBag  = "bag"
	PropertiesNone = "none"
)

// maxTopic is MQTT's limit on a topic's length in bytes.
const maxTopic = 65535

// Options configure an [Endpoint].
type Options struct {
	// URL is mqtt://host:1883 or mqtts://host:8883 (tcp://, ssl:// and
	// tls:// work too).
	URL        string
	Topic      string // template with {hub} and {deviceId}; default DefaultTopic
	Properties string // PropertiesBag (default) or PropertiesNone
	// TLS is the client's TLS configuration for mqtts (internal/route's
	// TLSFiles loads caFile and a client certificate); nil: the system's
	// roots.
	TLS      *tls.Config
	Username string
	Password string
	// ClientID is the MQTT client identifier; default "dps-" and 16 random
	// hex digits.
	ClientID string
	// Timeout bounds one Deliver and one connection attempt (default
	// DefaultTimeout); the caller's context may end it sooner.
	Timeout time.Duration
	Logger  *slog.Logger // nil: slog.Default()
}

// Endpoint publishes routed messages to an MQTT broker. It is safe for
// concurrent use.
type Endpoint struct {
	o     Options
	topic route.Template
	bag   bool
	log   *slog.Logger

	mu sync.Mutex
	c  paho.Client
}

// New validates the options. It does not connect: Deliver does, so a
// routing engine starts while its broker is down.
func New(o Options) (*Endpoint, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("mqtt: url %q: want mqtt://host:port or mqtts://host:port", route.RedactURL(o.URL))
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "ssl", "tls":
	default:
		return nil, fmt.Errorf("mqtt: url %q: scheme %q: not mqtt, mqtts, tcp, ssl or tls", route.RedactURL(o.URL), u.Scheme)
	}
	if o.Topic == "" {
		o.Topic = DefaultTopic
	}
	t, err := route.ParseTemplate(o.Topic)
	if err != nil {
		return nil, fmt.Errorf("mqtt: topic: %w", err)
	}
	if strings.ContainsAny(o.Topic, "+#\x00") {
		return nil, fmt.Errorf("mqtt: topic %q: no '+', '#' or NUL", o.Topic)
	}
	switch o.Properties {
	case "":
		o.Properties = PropertiesBag
	case PropertiesBag, PropertiesNone:
	default:
		return nil, fmt.Errorf("mqtt: properties %q: not %s or %s", o.Properties, PropertiesBag, PropertiesNone)
	}
	if o.Password != "" && o.Username == "" {
		return nil, errors.New("mqtt: password without username")
	}
	if o.ClientID == "" {
		var b [8]byte
		rand.Read(b[:])
		o.ClientID = "dps-" + hex.EncodeToString(b[:])
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Endpoint{o: o, topic: t, bag: o.Properties == PropertiesBag, log: o.Logger}, nil
}

// badLevel reports whether a topic level cannot hold c.
func badLevel(c byte) bool { return c == '/' || c == '+' || c == '#' || c == 0 }

// EscapeLevel is how a placeholder's value goes into a topic (see the
// package comment).
func EscapeLevel(s string) string { return route.Escape(s, badLevel) }

// Topic is the topic a message is published to, property bag included.
func (e *Endpoint) Topic(m dps.Message) string {
	t := e.topic.Expand(m.Hub, m.DeviceID, EscapeLevel)
	if !e.bag {
		return t
	}
	hs := route.Headers(m)
	props := make([]hubproto.Property, len(hs))
	for i, h := range hs {
		props[i] = hubproto.Property{Key: h.Name, Value: h.Value}
	}
	if !strings.HasSuffix(t, "/") {
		t += "/"
	}
	return t + hubproto.EncodeBag(props)
}

// conn returns the open connection, dialing when there is none.
func (e *Endpoint) conn(ctx context.Context) (paho.Client, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.c != nil && e.c.IsConnectionOpen() {
		return e.c, nil
	}
	if e.c != nil {
		e.c.Disconnect(0)
		e.c = nil
	}
	timeout := e.o.Timeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	o := paho.NewClientOptions().AddBroker(e.o.URL).SetClientID(e.o.ClientID).
		SetProtocolVersion(4).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(timeout).SetWriteTimeout(e.o.Timeout).
		SetKeepAlive(30 * time.Second).SetPingTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			e.log.Warn("mqtt endpoint: connection lost", "url", route.RedactURL(e.o.URL), "err", err)
		})
	if e.o.Username != "" {
		o.SetUsername(e.o.Username).SetPassword(e.o.Password)
	}
	if e.o.TLS != nil {
		o.SetTLSConfig(e.o.TLS.Clone())
	}
	c := paho.NewClient(o)
	if err := wait(ctx, c.Connect()); err != nil {
		c.Disconnect(0)
		return nil, fmt.Errorf("mqtt: connect %s: %w", route.RedactURL(e.o.URL), err)
	}
	e.c = c
	return c, nil
}

// drop closes the connection if it is still c.
func (e *Endpoint) drop(c paho.Client) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.c == c {
		c.Disconnect(0)
		e.c = nil
	}
}

func wait(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Deliver publishes msgs in order with QoS 1 and returns nil once the
// broker acknowledged each of them.
func (e *Endpoint) Deliver(ctx context.Context, msgs []dps.Message) (err error) {
	if len(msgs) == 0 {
		return nil
	}
	topics := make([]string, len(msgs))
	for i, m := range msgs {
		topics[i] = e.Topic(m)
		if len(topics[i]) > maxTopic {
			return &route.Refused{Err: fmt.Errorf("mqtt: %s: the topic with its properties is %d bytes, over MQTT's %d", route.EventID(m), len(topics[i]), maxTopic)}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	c, err := e.conn(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			e.drop(c)
		}
	}()
	tokens := make([]paho.Token, len(msgs))
	for i, m := range msgs {
		body := m.Body
		if body == nil {
			body = []byte{}
		}
		tokens[i] = c.Publish(topics[i], 1, false, body)
	}
	for i, t := range tokens {
		if err := wait(ctx, t); err != nil {
			return fmt.Errorf("mqtt: %d of %d messages acknowledged; %s: %w", i, len(msgs), route.EventID(msgs[i]), err)
		}
	}
	return nil
}

// Close disconnects from the broker.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.c != nil {
		e.c.Disconnect(250)
		e.c = nil
	}
	return nil
}
