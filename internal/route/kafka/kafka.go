// Package kafka is the Kafka routing endpoint: it produces routed messages
// to one topic with github.com/twmb/franz-go's idempotent producer.
//
// The Kafka protocol reaches more than Apache Kafka: Azure Event Hubs (its
// Kafka endpoint on port 9093: TLS, SASL PLAIN with the user
// "$ConnectionString" and the namespace's connection string as the
// password), Confluent Cloud and Confluent Platform, Redpanda and Amazon MSK
// (TLS with SASL SCRAM, or mutual TLS) all take the same options.
//
// # Records
//
//   - key: the device id, so that every message of a device lands on the
//     same partition (Kafka's murmur2 key hashing) and keeps its order there;
//     adding partitions to the topic later moves devices between partitions.
//   - value: the body as the device sent it.
//   - headers: the message's system and application properties in the order
//     and with the names of internal/route's Headers (message-id,
//     correlation-id, user-id, content-type, content-encoding,
//     iothub-connection-device-id, iothub-connection-module-id,
//     iothub-enqueuedtime in RFC 3339, the other iothub-* and dt-* system
//     properties, dps-event-id "<hub>/<seq>" for de-duplication, then the
//     application properties).
//   - timestamp: when the hub accepted the message (iothub-enqueuedtime).
//
// The topic must exist (or the cluster must create topics on first use).
// The producer is idempotent with acks from all in-sync replicas, so a
// retry inside the client neither duplicates nor reorders a partition's
// records; a batch that fails fails from its first unacknowledged record
// on, never a record in the middle of a partition's run. A Deliver that
// times out while a request is in flight fails the batch without waiting
// for its outcome; the routing engine's retry of the batch may then write
// some records twice (at least once, the same order).
//
// A record the cluster will never take as it is (see [Permanent]: over the
// size limits, invalid) fails the batch with a *route.Refused: the engine
// then delivers the batch one message at a time and dead-letters the
// refused ones at once instead of retrying them for its retry budget. An
// error about the topic or the client rather than the record (a topic this
// client may not write to, an invalid or missing topic, failed
// authentication) is an outage of the endpoint: the batch is retried.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/route"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The SASL mechanisms of [SASL].
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// DefaultTimeout is how long Deliver waits for a batch's acknowledgements
// when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// SASL is the authentication of the connection to the brokers.
type SASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (any case); empty:
	// no SASL.
	Mechanism string
	User      string
	Password  string
}

// Options configure an [Endpoint].
type Options struct {
	Brokers  []string // seed brokers, host:port
	Topic    string
	TLS      *tls.Config // nil: plaintext
	SASL     SASL
	ClientID string // default "dps"
	// Timeout bounds one Deliver: past it the batch fails (default
	// DefaultTimeout). The caller's context may end it sooner.
	Timeout time.Duration
	Logger  *slog.Logger // the client's warnings and errors; nil: none
}

// Endpoint produces routed messages to a Kafka topic. It is safe for
// concurrent use; Deliver calls are independent batches.
type Endpoint struct {
	cl      *kgo.Client
	topic   string
	timeout time.Duration
}

// New returns an endpoint for the options. It does not connect: the
// brokers are first dialed by Deliver, so a cluster that is down at start
// fails deliveries, not New.
func New(o Options) (*Endpoint, error) {
	if len(o.Brokers) == 0 {
		return nil, errors.New("kafka: brokers: none given")
	}
	for _, b := range o.Brokers {
		if b == "" {
			return nil, errors.New("kafka: brokers: an empty address")
		}
	}
	if err := validTopic(o.Topic); err != nil {
		return nil, err
	}
	if o.ClientID == "" {
		o.ClientID = "dps"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ClientID(o.ClientID),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// A Deliver is bounded in time: without this the client waits for
		// the outcome of a request in flight to a broker that went away
		// (for as long as the outage lasts). The batch then fails and is
		// retried whole, which may duplicate records, never reorder them.
		kgo.AllowIdempotentProduceCancellation(),
	}
	if o.TLS != nil {
		opts = append(opts, kgo.DialTLSConfig(o.TLS.Clone()))
	}
	switch strings.ToUpper(o.SASL.Mechanism) {
	case "":
	case MechanismPlain:
		opts = append(opts, kgo.SASL(plain.Auth{User: o.SASL.User, Pass: o.SASL.Password}.AsMechanism()))
	case MechanismSCRAMSHA256:
		opts = append(opts, kgo.SASL(scram.Auth{User: o.SASL.User, Pass: o.SASL.Password}.AsSha256Mechanism()))
	case MechanismSCRAMSHA512:
		opts = append(opts, kgo.SASL(scram.Auth{User: o.SASL.User, Pass: o.SASL.Password}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("kafka: sasl mechanism %q: not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", o.SASL.Mechanism)
	}
	if o.Logger != nil {
		opts = append(opts, kgo.WithLogger(logger{o.Logger}))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return &Endpoint{cl: cl, topic: o.Topic, timeout: o.Timeout}, nil
}

// validTopic applies Kafka's rule for topic names: 1 to 249 characters of
// ASCII letters, digits, '.', '_' and '-', and not "." or "..".
func validTopic(t string) error {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("kafka: topic %q: 1 to 249 characters, not . or ..", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("kafka: topic %q: only letters, digits, '.', '_' and '-'", t)
		}
	}
	return nil
}

// record is the Kafka record a message becomes.
func (e *Endpoint) record(m dps.Message) *kgo.Record {
	hs := route.Headers(m)
	rh := make([]kgo.RecordHeader, len(hs))
	for i, h := range hs {
		rh[i] = kgo.RecordHeader{Key: h.Name, Value: []byte(h.Value)}
	}
	return &kgo.Record{
		Topic:     e.topic,
		Key:       []byte(m.DeviceID),
		Value:     m.Body,
		Headers:   rh,
		Timestamp: m.Enqueued,
	}
}

// Deliver produces msgs in order and returns nil once the brokers
// acknowledged every record; otherwise an error that counts how many
// failed.
func (e *Endpoint) Deliver(ctx context.Context, msgs []dps.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	recs := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = e.record(m)
	}
	res := e.cl.ProduceSync(ctx, recs...)
	failed := 0
	var first, final error
	for _, r := range res {
		if r.Err != nil {
			failed++
			if first == nil {
				first = r.Err
			}
			if final == nil && Permanent(r.Err) {
				final = r.Err
			}
		}
	}
	if failed == 0 {
		return nil
	}
	if final != nil {
		// The engine delivers the batch one message at a time and
		// dead-letters the ones refused for good.
		return &route.Refused{Err: fmt.Errorf("kafka: topic %s: %d of %d records not acknowledged, refused for good: %w", e.topic, failed, len(msgs), final)}
	}
	return fmt.Errorf("kafka: topic %s: %d of %d records not acknowledged: %w", e.topic, failed, len(msgs), first)
}

// Permanent reports whether a record's produce error says the cluster will
// never take that record as it is, however often it is sent, while it may
// take others: a record or batch over the broker's or topic's size limit
// (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, or the client's own limit) and
// a record the broker finds invalid (INVALID_RECORD, e.g. a compacted topic
// and no key). Errors that hold for every record of the route are not:
// TOPIC_AUTHORIZATION_FAILED, INVALID_TOPIC_EXCEPTION, a failed SASL
// authentication or CLUSTER_AUTHORIZATION_FAILED are retried as an outage,
// as are the broker down, a leader moving and a timeout.
func Permanent(err error) bool {
	for _, k := range []*kerr.Error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// Close closes the connections to the brokers.
func (e *Endpoint) Close() error {
	e.cl.Close()
	return nil
}

// logger passes the client's warnings and errors to slog.
type logger struct{ l *slog.Logger }

func (logger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	l.l.Log(context.Background(), lv, "kafka: "+msg, keyvals...)
}
