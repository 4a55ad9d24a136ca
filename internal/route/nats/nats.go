// Package nats is the NATS JetStream routing endpoint: it publishes routed
// messages with github.com/nats-io/nats.go to subjects a JetStream stream
// captures, and counts a message delivered once the stream acknowledged it
// (PubAck).
//
// # Subjects
//
// The subject template (default "dps.{hub}.{deviceId}") takes {hub} and
// {deviceId}. A NATS subject token cannot hold '.', '*', '>' or white
// space, so each value is percent-encoded before it is put in: '%', '.',
// '*', '>', the bytes up to and including the space, and DEL become %XX
// (upper-case hex); "hub.example.com" becomes "hub%2Eexample%2Ecom". The
// encoding is reversible (percent-decode a token).
//
// # Messages
//
// The data is the body. The headers are internal/route's Headers
// (message-id, correlation-id, user-id, content-type, content-encoding,
// iothub-connection-device-id, iothub-connection-module-id,
// iothub-enqueuedtime in RFC 3339, the other system properties,
// dps-event-id, then the application properties), plus Nats-Msg-Id =
// "<hub>/<seq>": JetStream drops a message whose id it has seen within the
// stream's duplicate window (2 minutes unless the stream says otherwise),
// so a batch retried after a failure is not stored twice. NATS headers
// are lines of text: a header name with a ':', white space or a control
// character, and a value with a CR or LF, are percent-encoded as above
// ('%' included) — only those; every other name and value is sent as is.
//
// # Streams
//
// With Options.Stream set, the endpoint makes sure that stream exists when
// it connects: a missing one is created (file storage, subjects: the
// template with '*' for every token that holds a placeholder, e.g.
// "dps.*.*"), an existing one is used as it is, and every publish expects
// that stream. Without it, some existing stream must capture the subjects:
// the endpoint checks that one does when it connects.
//
// # Connections and order
//
// The endpoint connects on first use and does not reconnect by itself: a
// Deliver that fails closes the connection, and the next one dials anew.
// Within a batch each device has one message in flight: its next message
// is published only once the stream acknowledged the one before, while
// different devices' messages are published side by side. A stream may
// refuse one message and take the next (a stream with discard new that is
// full for a large message but not for a small one, a cluster electing a
// stream leader); had the device's next message been published already, it
// would be in the stream before the refused one once the engine's retry
// adds it. So on a failure nothing of the device after the failed message
// is in the stream, and the engine's retry of the whole batch re-sends
// each device's messages from its first unacknowledged one, in order (the
// stream drops those it holds as duplicates, by Nats-Msg-Id). Publishes are
// not retried by the client on "no responders" for the same reason.
//
// A message over the stream's maximum message size (or the server's
// maximum payload) is refused for good (*route.Refused): the engine
// dead-letters it alone, at once. Nothing else is: a permissions violation
// (the user may not publish to the subjects; the server reports it, and
// Deliver fails with it at once), failed authentication, a missing stream
// or a full one hold for the route, not for a message, and are retried as
// an outage.
package nats

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/route"
)

// DefaultSubject is the subject template when Options.Subject is empty.
const DefaultSubject = "dps.{hub}.{deviceId}"

// DefaultTimeout bounds a Deliver, and a connection attempt, when
// Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Options configure an [Endpoint]. Creds, Token and User/Password are the
// server's authentication methods; give at most one.
type Options struct {
	URL     string // nats://host:4222 or tls://host:4222; several separated by commas
	Subject string // template with {hub} and {deviceId}; default DefaultSubject
	Stream  string // see the package comment; empty: an existing stream must capture the subjects
	TLS     *tls.Config
	Creds   string // path of a .creds file (user JWT and NKey seed)
	Token   string
	User    string
	// Password goes with User.
	Password string
	Name     string // the connection's name; default "dps"
	// Timeout bounds one Deliver and one connection attempt (default
	// DefaultTimeout); the caller's context may end it sooner.
	Timeout time.Duration
	Logger  *slog.Logger // nil: slog.Default()
}

// Endpoint publishes routed messages to JetStream. It is safe for
// concurrent use.
type Endpoint struct {
	o       Options
	subject route.Template
	filter  string // the subjects the template yields, with wildcards
	log     *slog.Logger

	mu     sync.Mutex
	nc     *nats.Conn
	js     jetstream.JetStream
	denied chan error // the connection's first permissions violation
}

// New validates the options and connects. An unreachable server is not an
// error: it is logged, and Deliver connects (or fails) later, so a
// routing engine starts while its endpoint is down.
func New(ctx context.Context, o Options) (*Endpoint, error) {
	if strings.TrimSpace(o.URL) == "" {
		return nil, errors.New("nats: url: none given")
	}
	if o.Subject == "" {
		o.Subject = DefaultSubject
	}
	t, err := route.ParseTemplate(o.Subject)
	if err != nil {
		return nil, fmt.Errorf("nats: subject: %w", err)
	}
	filter, err := subjectFilter(t)
	if err != nil {
		return nil, fmt.Errorf("nats: subject %q: %w", o.Subject, err)
	}
	n := 0
	for _, set := range []bool{o.Creds != "", o.Token != "", o.User != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("nats: creds, token and user/password: give one")
	}
	if o.Password != "" && o.User == "" {
		return nil, errors.New("nats: password without user")
	}
	if o.Stream != "" && strings.ContainsAny(o.Stream, ".*> \t") {
		return nil, fmt.Errorf("nats: stream %q: no '.', '*', '>' or white space", o.Stream)
	}
	if o.Name == "" {
		o.Name = "dps"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	e := &Endpoint{o: o, subject: t, filter: filter, log: o.Logger}
	if _, _, err := e.conn(ctx); err != nil {
		e.log.WarnContext(ctx, "nats endpoint: not connected yet", "url", route.RedactURL(o.URL), "err", err)
	}
	return e, nil
}

// subjectFilter is the template with '*' for each token that holds a
// placeholder; it fails for a template whose literal text makes an invalid
// subject.
func subjectFilter(t route.Template) (string, error) {
	const mark = "\x00"
	tokens := strings.Split(t.Expand(mark, mark, func(s string) string { return s }), ".")
	for i, tok := range tokens {
		if strings.Contains(tok, mark) {
			tokens[i] = "*"
			continue
		}
		if tok == "" {
			return "", errors.New("an empty token")
		}
		for j := 0; j < len(tok); j++ {
			if badToken(tok[j]) {
				return "", fmt.Errorf("token %q: no '*', '>' or white space", tok)
			}
		}
	}
	return strings.Join(tokens, "."), nil
}

// badToken reports whether a subject token cannot hold c.
func badToken(c byte) bool { return c <= ' ' || c == '.' || c == '*' || c == '>' || c == 0x7f }

// EscapeToken is how a placeholder's value goes into a subject (see the
// package comment).
func EscapeToken(s string) string { return route.Escape(s, badToken) }

// Subject is the subject a message is published to.
func (e *Endpoint) Subject(m dps.Message) string {
	return e.subject.Expand(m.Hub, m.DeviceID, EscapeToken)
}

// conn returns the live connection's JetStream context, dialing and
// checking the stream when there is none, and the channel that receives
// the connection's first permissions violation (the server reports one
// asynchronously, and the publish then gets no acknowledgement).
func (e *Endpoint) conn(ctx context.Context) (jetstream.JetStream, <-chan error, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nc != nil && e.nc.IsConnected() {
		return e.js, e.denied, nil
	}
	if e.nc != nil {
		e.nc.Close()
		e.nc, e.js = nil, nil
	}
	denied := make(chan error, 1)
	timeout := e.o.Timeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	opts := []nats.Option{
		nats.Name(e.o.Name), nats.Timeout(timeout), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			e.log.Warn("nats endpoint: asynchronous error", "err", err)
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case denied <- err:
				default:
				}
			}
		}),
	}
	if e.o.TLS != nil {
		opts = append(opts, nats.Secure(e.o.TLS.Clone()))
	}
	switch {
	case e.o.Creds != "":
		opts = append(opts, nats.UserCredentials(e.o.Creds))
	case e.o.Token != "":
		opts = append(opts, nats.Token(e.o.Token))
	case e.o.User != "":
		opts = append(opts, nats.UserInfo(e.o.User, e.o.Password))
	}
	nc, err := nats.Connect(e.o.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nats: connect: %w", err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(e.o.Timeout), jetstream.WithPublishAsyncMaxPending(4096))
	if err == nil {
		err = e.ensureStream(ctx, js)
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	e.nc, e.js, e.denied = nc, js, denied
	return js, denied, nil
}

func (e *Endpoint) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	if e.o.Stream == "" {
		if _, err := js.StreamNameBySubject(ctx, e.filter); err != nil {
			return fmt.Errorf("nats: no stream captures %s: %w", e.filter, err)
		}
		return nil
	}
	_, err := js.Stream(ctx, e.o.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: e.o.Stream, Subjects: []string{e.filter}, Storage: jetstream.FileStorage})
		if err == nil {
			e.log.InfoContext(ctx, "nats endpoint: created stream", "stream", e.o.Stream, "subjects", e.filter)
		}
	}
	if err != nil {
		return fmt.Errorf("nats: stream %s: %w", e.o.Stream, err)
	}
	return nil
}

// drop closes the connection if it is still js's.
func (e *Endpoint) drop(js jetstream.JetStream) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.js == js && e.nc != nil {
		e.nc.Close()
		e.nc, e.js = nil, nil
	}
}

// Msg is the NATS message a routed message becomes (Nats-Msg-Id apart).
func (e *Endpoint) Msg(m dps.Message) *nats.Msg {
	hs := route.Headers(m)
	h := make(nats.Header, len(hs))
	for _, x := range hs {
		h.Add(headerName(x.Name), headerValue(x.Value))
	}
	return &nats.Msg{Subject: e.Subject(m), Header: h, Data: m.Body}
}

func headerName(s string) string {
	return route.Escape(s, func(c byte) bool { return c <= ' ' || c == ':' || c == 0x7f })
}

func headerValue(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return route.Escape(s, func(c byte) bool { return c == '\r' || c == '\n' })
}

// Deliver publishes msgs and returns nil once the stream acknowledged each
// of them (a duplicate acknowledged as such counts). A device has one
// message in flight at a time: its next message is published only once
// the stream acknowledged the one before (see the package comment), while
// the messages of different devices travel side by side.
//
// An error says how many messages were acknowledged; a message the stream
// will never take as it is (over the stream's or the server's size limit)
// makes it a *route.Refused.
func (e *Endpoint) Deliver(ctx context.Context, msgs []dps.Message) (err error) {
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, e.o.Timeout)
	defer cancel()
	js, denied, err := e.conn(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if _, ok := errors.AsType[*route.Refused](err); err != nil && !ok {
			e.drop(js) // a refusal leaves the connection as good as it was
		}
	}()
	opts := []jetstream.PublishOpt{nil, jetstream.WithRetryAttempts(0)}
	if e.o.Stream != "" {
		opts = append(opts, jetstream.WithExpectStream(e.o.Stream))
	}
	publish := func(m dps.Message) (jetstream.PubAckFuture, error) {
		opts[0] = jetstream.WithMsgID(route.EventID(m))
		f, err := js.PublishMsgAsync(e.Msg(m), opts...)
		if err != nil {
			return nil, fmt.Errorf("nats: publish %s: %w", route.EventID(m), refused(err))
		}
		return f, nil
	}
	// Each device's messages (indexes into msgs, in log order), devices in
	// the order of their first message.
	byDevice := map[string][]int{}
	var devices []string
	for i, m := range msgs {
		if _, ok := byDevice[m.DeviceID]; !ok {
			devices = append(devices, m.DeviceID)
		}
		byDevice[m.DeviceID] = append(byDevice[m.DeviceID], i)
	}
	type flight struct {
		device string
		k      int // the message's index in byDevice[device]
		f      jetstream.PubAckFuture
	}
	queue := make([]flight, 0, len(devices)) // in publish order
	for _, d := range devices {
		f, err := publish(msgs[byDevice[d][0]])
		if err != nil {
			return err
		}
		queue = append(queue, flight{d, 0, f})
	}
	acked := 0
	for len(queue) > 0 {
		fl := queue[0]
		queue = queue[1:]
		m := msgs[byDevice[fl.device][fl.k]]
		select {
		case <-fl.f.Ok():
		case err := <-fl.f.Err():
			// The device's later messages were not published: none of
			// them is in the stream ahead of this one. The engine's
			// retry of the batch re-sends from here (the stream drops
			// what it holds already as duplicates).
			return fmt.Errorf("nats: %d of %d messages acknowledged; %s: %w", acked, len(msgs), route.EventID(m), refused(err))
		case err := <-denied:
			// The user may not publish to the subjects: true of the
			// route, not of a message; retried as an outage.
			return fmt.Errorf("nats: %d of %d messages acknowledged: %w", acked, len(msgs), err)
		case <-ctx.Done():
			return fmt.Errorf("nats: %d of %d messages acknowledged: %w", acked, len(msgs), ctx.Err())
		}
		acked++
		if k := fl.k + 1; k < len(byDevice[fl.device]) {
			f, err := publish(msgs[byDevice[fl.device][k]])
			if err != nil {
				return err
			}
			queue = append(queue, flight{fl.device, k, f})
		}
	}
	return nil
}

// refused wraps in a *route.Refused an error that says the message will
// never be taken as it is: over the stream's maximum message size, or over
// the server's maximum payload.
func refused(err error) error {
	var api *jetstream.APIError
	if errors.Is(err, nats.ErrMaxPayload) || errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return &route.Refused{Err: err}
	}
	return err
}

// Close closes the connection.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nc != nil {
		e.nc.Close()
		e.nc, e.js = nil, nil
	}
	return nil
}
