// Package webhook is the HTTP webhook endpoint of message routing: each
// batch is one POST of a JSON array of the messages, signed like the
// allocation webhooks (webhook.SignatureHeader, HMAC-SHA256 over the
// timestamp and the body). Retries are the routing engine's.
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/route"
	"github.com/opendps/dps/webhook"
)

// Options configure an endpoint.
type Options struct {
	URL string // http or https
	// Secret, when set, signs every request (webhook.SignatureHeader).
	Secret []byte
	// TLS is the client's TLS configuration (CA, client certificate for
	// mTLS); nil: the system's roots.
	TLS *tls.Config
	// Timeout bounds one request (default 30 s; the engine's deadline
	// applies too).
	Timeout time.Duration
	Now     func() time.Time
}

// Message is one routed message as the webhook receives it.
type Message struct {
	Hub              string            `json:"hub"`
	DeviceID         string            `json:"deviceId"`
	ModuleID         string            `json:"moduleId,omitempty"`
	Seq              int64             `json:"sequenceNumber"`
	Enqueued         time.Time         `json:"enqueuedTime"`
	MessageID        string            `json:"messageId,omitempty"`
	CorrelationID    string            `json:"correlationId,omitempty"`
	UserID           string            `json:"userId,omitempty"`
	ContentType      string            `json:"contentType,omitempty"`
	ContentEncoding  string            `json:"contentEncoding,omitempty"`
	Properties       map[string]string `json:"properties,omitempty"`
	SystemProperties map[string]string `json:"systemProperties,omitempty"`
	Body             []byte            `json:"body"` // base64; null for no body
}

// Endpoint posts batches to a URL.
type Endpoint struct {
	o      Options
	client *http.Client
}

// New checks the options and makes an endpoint.
func New(o Options) (*Endpoint, error) {
	u, err := url.Parse(o.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("webhook endpoint: url %q is not an http(s) URL", o.URL)
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: o.TLS, MaxIdleConnsPerHost: 4,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second, ForceAttemptHTTP2: true}
	return &Endpoint{o: o, client: &http.Client{Transport: tr, Timeout: o.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

// Convert is a message as the webhook receives it.
func Convert(m dps.Message) Message {
	return Message{Hub: m.Hub, DeviceID: m.DeviceID, ModuleID: m.ModuleID, Seq: m.Seq, Enqueued: m.Enqueued.UTC(), MessageID: m.MessageID,
		CorrelationID: m.CorrelationID, UserID: m.UserID, ContentType: m.ContentType, ContentEncoding: m.ContentEncoding,
		Properties: m.Properties, SystemProperties: m.System, Body: m.Body}
}

// Deliver posts msgs as one JSON array; only a 2xx answer acknowledges
// them. A 400, 413 or 422 answer is about the messages (malformed for the
// receiver, too large, not processable): a *route.Refused, which the
// engine answers by delivering them one by one and dead-lettering the ones
// refused again. Every other answer — 401, 403, 404 and the other 4xx
// (credentials, permissions, the URL: true of every message), 408, 429,
// 3xx, 5xx — is an outage of the endpoint, retried.
func (e *Endpoint) Deliver(ctx context.Context, msgs []dps.Message) error {
	out := make([]Message, len(msgs))
	for i, m := range msgs {
		out[i] = Convert(m)
	}
	body, err := json.Marshal(out)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.o.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "dps")
	if len(e.o.Secret) > 0 {
		req.Header.Set(webhook.SignatureHeader, webhook.Sign(e.o.Secret, body, e.o.Now()))
	}
	resp, err := e.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the configuration; keep the error short
		}
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("webhook: status %d: %s", resp.StatusCode, bytes.TrimSpace(snippet))
		if Refuses(resp.StatusCode) {
			// The endpoint refuses these messages for good; the engine
			// finds which and dead-letters them.
			return &route.Refused{Err: err}
		}
		return err
	}
	return nil
}

// Refuses reports whether a webhook's answer refuses the messages of the
// request for good (400 Bad Request, 413 Content Too Large, 422
// Unprocessable Content), rather than saying the endpoint is failing.
func Refuses(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// Close closes idle connections.
func (e *Endpoint) Close() error {
	e.client.CloseIdleConnections()
	return nil
}

// TLSConfig is a client TLS configuration from files: caFile (PEM, the
// roots to trust; "" for the system's) and certFile/keyFile (PEM, the
// client certificate for mTLS; both or neither).
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both certFile and keyFile")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
