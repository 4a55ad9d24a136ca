// Package route holds what the routing endpoint adapters (internal/route/kafka,
// internal/route/nats, internal/route/mqtt) share: the one mapping of a
// routed message's properties to headers, the topic and subject templates
// with their escaping, and the TLS files of an endpoint.
//
// # Headers
//
// [Headers] lists a message's properties in this order, each at most once
// except for application properties (see below):
//
//  1. message-id, correlation-id, user-id, content-type, content-encoding:
//     the message's fields, when set (IoT Hub's names on its built-in
//     endpoint).
//  2. iothub-connection-device-id (the System map's value, else DeviceID),
//     iothub-connection-module-id (likewise, when there is a module),
//     iothub-enqueuedtime (Enqueued in UTC, RFC 3339 with fractional seconds
//     as needed, e.g. 2026-05-01T10:00:00.123Z).
//  3. The other System entries (iothub-connection-auth-method,
//     iothub-connection-auth-generation-id, dt-dataschema, dt-subject, to,
//     iothub-message-source, …), by name.
//  4. dps-event-id: "<hub>/<seq>", the message's position in its hub's event
//     log; the same message delivered twice carries the same value, so a
//     consumer can drop duplicates (NATS also gets it as Nats-Msg-Id).
//  5. The application properties, by name. They keep their names, so one
//     named like a system property appears after it: the first header of a
//     name is the system property.
package route

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opendps/dps"
)

// The header names of [Headers] that are not a message field's IoT Hub name.
const (
	HeaderDeviceID = "iothub-connection-device-id"
	HeaderModuleID = "iothub-connection-module-id"
	HeaderEnqueued = "iothub-enqueuedtime"
	HeaderEventID  = "dps-event-id"
)

// Header is one property of a routed message, as the adapters send it.
type Header struct {
	Name, Value string
}

// EventID is a message's identity across deliveries: its hub and its
// position in that hub's log, "<hub>/<seq>".
func EventID(m dps.Message) string {
	return m.Hub + "/" + strconv.FormatInt(m.Seq, 10)
}

// Headers lists a message's system and application properties in the
// package's documented order.
func Headers(m dps.Message) []Header {
	h := make([]Header, 0, 8+len(m.System)+len(m.Properties))
	seen := make(map[string]bool, 8+len(m.System))
	add := func(name, value string) {
		if !seen[name] {
			seen[name] = true
			h = append(h, Header{name, value})
		}
	}
	for _, f := range [...]Header{
		{"message-id", m.MessageID}, {"correlation-id", m.CorrelationID}, {"user-id", m.UserID},
		{"content-type", m.ContentType}, {"content-encoding", m.ContentEncoding},
	} {
		if f.Value != "" {
			add(f.Name, f.Value)
		}
	}
	if v, ok := m.System[HeaderDeviceID]; ok {
		add(HeaderDeviceID, v)
	} else if m.DeviceID != "" {
		add(HeaderDeviceID, m.DeviceID)
	}
	if v, ok := m.System[HeaderModuleID]; ok {
		add(HeaderModuleID, v)
	} else if m.ModuleID != "" {
		add(HeaderModuleID, m.ModuleID)
	}
	if v, ok := m.System[HeaderEnqueued]; ok {
		add(HeaderEnqueued, v)
	} else if !m.Enqueued.IsZero() {
		add(HeaderEnqueued, m.Enqueued.UTC().Format(time.RFC3339Nano))
	}
	for _, k := range sortedKeys(m.System) {
		add(k, m.System[k])
	}
	add(HeaderEventID, EventID(m))
	for _, k := range sortedKeys(m.Properties) {
		h = append(h, Header{k, m.Properties[k]})
	}
	return h
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Escape percent-encodes, with upper-case hex, every byte of s for which
// bad reports true, and '%' itself, so that the result is reversible by
// percent-decoding.
func Escape(s string, bad func(c byte) bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '%' || bad(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || bad(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Template is a topic or subject template: literal text with the
// placeholders {hub} (the hub's host name) and {deviceId}.
type Template struct {
	parts []part
}

type part struct {
	lit string
	ph  string // "hub" or "deviceId"; lit empty
}

// ParseTemplate parses a template; any '{' or '}' that is not part of
// {hub} or {deviceId} is an error.
func ParseTemplate(s string) (Template, error) {
	var t Template
	rest := s
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.parts = append(t.parts, part{lit: rest})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: rest[:i]})
		}
		rest = rest[i:]
		var ph string
		switch {
		case strings.HasPrefix(rest, "{hub}"):
			ph = "hub"
		case strings.HasPrefix(rest, "{deviceId}"):
			ph = "deviceId"
		default:
			return Template{}, fmt.Errorf("template %q: only {hub} and {deviceId} may stand in braces", s)
		}
		t.parts = append(t.parts, part{ph: ph})
		rest = rest[len(ph)+2:]
	}
	if len(t.parts) == 0 {
		return Template{}, errors.New("template is empty")
	}
	return t, nil
}

// Expand fills in the placeholders, each value passed through escape
// first; the literal text is kept as it is.
func (t Template) Expand(hub, deviceID string, escape func(string) string) string {
	var b strings.Builder
	for _, p := range t.parts {
		switch p.ph {
		case "hub":
			b.WriteString(escape(hub))
		case "deviceId":
			b.WriteString(escape(deviceID))
		default:
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

// HasPlaceholders reports whether the template has a placeholder.
func (t Template) HasPlaceholders() bool {
	for _, p := range t.parts {
		if p.ph != "" {
			return true
		}
	}
	return false
}

// TLSFiles are an endpoint's TLS settings as the configuration names them
// (caFile, certFile, keyFile, serverName).
type TLSFiles struct {
	CAFile     string // PEM roots to verify the server with; empty: the system's roots
	CertFile   string // PEM client certificate (mutual TLS), with KeyFile
	KeyFile    string
	ServerName string // overrides the host name the certificate must name
}

// Config loads the files into a TLS configuration (TLS 1.2 or later).
func (f TLSFiles) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s: no PEM certificate", f.CAFile)
		}
		c.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("certFile and keyFile go together")
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("certFile/keyFile: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// RedactURL is an endpoint URL (or a comma-separated list of them, as
// NATS takes) as logs and errors may show it: a password or token in the
// user information replaced by "xxxxx" (url.URL.Redacted; a user name
// alone, such as a NATS token, is redacted too).
func RedactURL(raw string) string {
	if strings.Contains(raw, ",") { // a NATS server list
		parts := strings.Split(raw, ",")
		for i, p := range parts {
			parts[i] = RedactURL(strings.TrimSpace(p))
		}
		return strings.Join(parts, ",")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(an unparsable URL)"
	}
	if u.User != nil {
		if _, hasPassword := u.User.Password(); !hasPassword {
			u.User = url.User("xxxxx")
		}
	}
	return u.Redacted()
}

// Refused is an endpoint's error for messages it will never take as they
// are (a webhook's 4xx, a message over the endpoint's limits): the routing
// engine dead-letters them at once instead of retrying (its Permanent
// method).
type Refused struct{ Err error }

func (e *Refused) Error() string   { return e.Err.Error() }
func (e *Refused) Unwrap() error   { return e.Err }
func (e *Refused) Permanent() bool { return true }
