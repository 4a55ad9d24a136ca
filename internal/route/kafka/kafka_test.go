package kafka_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/route"
	"github.com/opendps/dps/internal/route/kafka"
	"github.com/opendps/dps/internal/route/routetest"
	"github.com/opendps/dps/internal/routing"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// endpoint is the routing engine's view of an endpoint.
type endpoint interface {
	Deliver(ctx context.Context, msgs []dps.Message) error
	Close() error
}

var _ endpoint = (*kafka.Endpoint)(nil)

const topic = "telemetry"

func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newEndpoint(t testing.TB, o kafka.Options) *kafka.Endpoint {
	t.Helper()
	e, err := kafka.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// consume reads n records of the topic from the start.
func consume(t testing.TB, addrs []string, n int, extra ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records", len(out), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

func got(recs []*kgo.Record) []routetest.Got {
	out := make([]routetest.Got, len(recs))
	for i, r := range recs {
		out[i] = routetest.Got{DeviceID: string(r.Key)}
		for _, h := range r.Headers {
			if h.Key == route.HeaderEventID {
				out[i].EventID = string(h.Value)
			}
		}
	}
	return out
}

// byPartition orders records by partition, then offset: the order a
// consumer of each partition sees.
func byPartition(recs []*kgo.Record) []*kgo.Record {
	out := slices.Clone(recs)
	slices.SortStableFunc(out, func(a, b *kgo.Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out
}

func TestDeliver(t *testing.T) {
	c := newCluster(t)
	e := newEndpoint(t, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic})
	g := routetest.Gen{}
	devices := routetest.Devices(9)
	want := g.Next(60, devices...)
	want[3].Body = []byte{}
	want[4].Properties["message-id"] = "app-level" // an application property named like a system one
	want[5].ModuleID = "mod1"
	for _, batch := range [][]dps.Message{want[:25], want[25:]} {
		if err := e.Deliver(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	recs := byPartition(consume(t, c.ListenAddrs(), len(want)))
	if len(recs) != len(want) {
		t.Fatalf("got %d records, want %d", len(recs), len(want))
	}
	if dups := routetest.CheckDelivered(t, want, got(recs)); dups != 0 {
		t.Errorf("%d duplicates without a failure", dups)
	}
	byID := map[string]dps.Message{}
	for _, m := range want {
		byID[route.EventID(m)] = m
	}
	partition := map[string]int32{}
	for _, r := range recs {
		m := byID[got([]*kgo.Record{r})[0].EventID]
		if string(r.Key) != m.DeviceID {
			t.Errorf("key %q, want %q", r.Key, m.DeviceID)
		}
		if !bytes.Equal(r.Value, m.Body) {
			t.Errorf("%s: value %q, want %q", m.DeviceID, r.Value, m.Body)
		}
		if !r.Timestamp.Equal(m.Enqueued) {
			t.Errorf("timestamp %v, want %v", r.Timestamp, m.Enqueued)
		}
		var gotH []route.Header
		for _, h := range r.Headers {
			gotH = append(gotH, route.Header{Name: h.Key, Value: string(h.Value)})
		}
		if wantH := route.Headers(m); !slices.Equal(gotH, wantH) {
			t.Errorf("headers\n got %v\nwant %v", gotH, wantH)
		}
		if p, ok := partition[m.DeviceID]; ok && p != r.Partition {
			t.Errorf("device %s on partitions %d and %d", m.DeviceID, p, r.Partition)
		}
		partition[m.DeviceID] = r.Partition
	}
	// Spot-check the documented names and formats.
	m := byID[route.EventID(want[5])]
	h := map[string]string{}
	for _, x := range route.Headers(m) {
		if _, ok := h[x.Name]; !ok {
			h[x.Name] = x.Value
		}
	}
	for k, v := range map[string]string{
		"message-id": "mid-6", "correlation-id": "cid", "content-type": "application/json", "content-encoding": "utf-8",
		"iothub-connection-device-id": want[5].DeviceID, "iothub-connection-module-id": "mod1",
		"iothub-enqueuedtime": "2026-05-01T10:00:00.006Z", "dps-event-id": routetest.Hub + "/6", "alert": "high",
	} {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q", k, h[k], v)
		}
	}
}

func TestTLSAndSASL(t *testing.T) {
	files := routetest.NewTLS(t)
	for _, mech := range []string{kafka.MechanismPlain, "scram-sha-256", kafka.MechanismSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			c := newCluster(t, kfake.TLS(files.ServerConfig(t, false)), kfake.EnableSASL(),
				kfake.Superuser(strings.ToUpper(mech), "dps", "s3cret"))
			g := routetest.Gen{}
			msgs := g.Next(10, "d1", "d2")
			e := newEndpoint(t, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic, TLS: files.ClientConfig(t, false),
				SASL: kafka.SASL{Mechanism: mech, User: "dps", Password: "s3cret"}, ClientID: "dps-test"})
			if err := e.Deliver(context.Background(), msgs); err != nil {
				t.Fatal(err)
			}
			bad := newEndpoint(t, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic, TLS: files.ClientConfig(t, false),
				SASL: kafka.SASL{Mechanism: mech, User: "dps", Password: "wrong"}, Timeout: 3 * time.Second})
			if err := bad.Deliver(context.Background(), msgs); err == nil {
				t.Error("a wrong password delivered")
			} else if routing.IsPermanent(err) {
				t.Errorf("a wrong password refused the messages for good: %v", err)
			}
			plain := newEndpoint(t, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic,
				SASL: kafka.SASL{Mechanism: mech, User: "dps", Password: "s3cret"}, Timeout: 3 * time.Second})
			if err := plain.Deliver(context.Background(), msgs); err == nil {
				t.Error("delivered without TLS to a TLS listener")
			}
		})
	}
}

func TestNewFail(t *testing.T) {
	for name, o := range map[string]kafka.Options{
		"no-brokers":   {Topic: topic},
		"empty-broker": {Brokers: []string{""}, Topic: topic},
		"no-topic":     {Brokers: []string{"127.0.0.1:9"}},
		"bad-topic":    {Brokers: []string{"127.0.0.1:9"}, Topic: "a/b"},
		"long-topic":   {Brokers: []string{"127.0.0.1:9"}, Topic: strings.Repeat("t", 250)},
		"mechanism":    {Brokers: []string{"127.0.0.1:9"}, Topic: topic, SASL: kafka.SASL{Mechanism: "GSSAPI"}},
	} {
		t.Run("fail/"+name, func(t *testing.T) {
			if e, err := kafka.New(o); err == nil {
				e.Close()
				t.Error("New accepted it")
			}
		})
	}
}

// TestOutage stops the cluster (its data kept on disk) for a few seconds:
// Deliver fails while it is down, succeeds after it is back on the same
// port, and every message of a batch that returned nil is there, in order
// per device.
func TestOutage(t *testing.T) {
	port := routetest.FreePort(t)
	dir := t.TempDir()
	start := func() *kfake.Cluster {
		var c *kfake.Cluster
		var err error
		for range 50 { // the port may linger for a moment after Close
			c, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, topic), kfake.DataDir(dir))
			if err == nil {
				return c
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
		return nil
	}
	c := start()
	e := newEndpoint(t, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic, Timeout: 2 * time.Second})
	g := routetest.Gen{}
	devices := routetest.Devices(5)
	var acked []dps.Message
	deliver := func(batch []dps.Message) error {
		err := e.Deliver(context.Background(), batch)
		if err == nil {
			acked = append(acked, batch...)
		}
		return err
	}
	for range 3 {
		if err := deliver(g.Next(100, devices...)); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	down := g.Next(100, devices...)
	t0 := time.Now()
	if err := deliver(down); err == nil {
		t.Fatal("Deliver returned nil with the cluster down")
	} else {
		t.Logf("down: %v (after %v)", err, time.Since(t0).Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second)
	c = start()
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := deliver(down)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after the restart: %v", err)
		}
		t.Logf("retry: %v", err)
	}
	for range 2 {
		if err := deliver(g.Next(100, devices...)); err != nil {
			t.Fatal(err)
		}
	}
	recs := byPartition(consume(t, c.ListenAddrs(), len(acked)))
	dups := routetest.CheckDelivered(t, acked, got(recs))
	t.Logf("%d records read back for %d acknowledged messages, %d duplicates", len(recs), len(acked), dups)
}

func BenchmarkDeliver(b *testing.B) {
	c := newCluster(b)
	e := newEndpoint(b, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic})
	g := routetest.Gen{BodySize: 1024}
	devices := routetest.Devices(20)
	batch := g.Next(100, devices...)
	if err := e.Deliver(context.Background(), batch); err != nil { // connect first
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		if err := e.Deliver(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		n += len(batch)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

// TestTooLargeRefused: a record over the broker's message.max.bytes is
// refused for good (the engine dead-letters it alone), not retried; the
// client goes on producing the others, alone or in a batch.
func TestTooLargeRefused(t *testing.T) {
	c := newCluster(t, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "4096"}))
	e := newEndpoint(t, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic, Timeout: 10 * time.Second})
	g := routetest.Gen{}
	batch := g.Next(6, "a", "b", "c")
	batch[3].Body = make([]byte, 8<<10)
	rand.Read(batch[3].Body) // the client compresses: random bytes stay large
	var refused *route.Refused
	if err := e.Deliver(context.Background(), batch); !errors.As(err, &refused) {
		t.Fatalf("Deliver: %v, want a *route.Refused", err)
	} else {
		t.Logf("batch: %v", err)
	}
	start := time.Now()
	if err := e.Deliver(context.Background(), batch[3:4]); !errors.As(err, &refused) || !kafka.Permanent(err) {
		t.Fatalf("Deliver of the large record alone: %v, want a permanent *route.Refused", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the refusal took %v: retried instead of failing at once", d)
	}
	rest := append(slices.Clone(batch[:3]), batch[4:]...)
	for _, m := range rest {
		if err := e.Deliver(context.Background(), []dps.Message{m}); err != nil {
			t.Fatalf("%s after the refusal: %v", route.EventID(m), err)
		}
	}
	if err := e.Deliver(context.Background(), g.Next(20, "a", "b", "c")); err != nil {
		t.Fatalf("a batch after the refusal: %v", err)
	}
	recs := byPartition(consume(t, c.ListenAddrs(), len(rest)+20))
	routetest.CheckDelivered(t, rest, got(recs))
}

// TestTopicAuthorizationIsAnOutage: a topic the client may not write to
// fails every record, but as an outage of the endpoint (retried), not as a
// refusal of the records: the engine must not dead-letter the backlog.
func TestTopicAuthorizationIsAnOutage(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser(kafka.MechanismPlain, "admin", "admin"),
		kfake.User(kafka.MechanismPlain, "dps", "s3cret",
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "other", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true},
			kfake.ACL{Resource: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: kmsg.ACLOperationAll, Allow: true}))
	e := newEndpoint(t, kafka.Options{Brokers: c.ListenAddrs(), Topic: topic, Timeout: 10 * time.Second,
		SASL: kafka.SASL{Mechanism: kafka.MechanismPlain, User: "dps", Password: "s3cret"}})
	g := routetest.Gen{}
	start := time.Now()
	err := e.Deliver(context.Background(), g.Next(3, "a"))
	var refused *route.Refused
	if err == nil || errors.As(err, &refused) || routing.IsPermanent(err) || !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("Deliver: %v; want TOPIC_AUTHORIZATION_FAILED, not a refusal", err)
	}
	t.Logf("%v (after %v)", err, time.Since(start).Round(time.Millisecond))
}

func TestPermanent(t *testing.T) {
	for err, want := range map[error]bool{
		kerr.MessageTooLarge: true, fmt.Errorf("x: %w", kerr.InvalidRecord): true, kerr.RecordListTooLarge: true,
		kerr.TopicAuthorizationFailed: false, kerr.InvalidTopicException: false, kerr.SaslAuthenticationFailed: false,
		kerr.ClusterAuthorizationFailed: false, kerr.UnknownTopicOrPartition: false, kerr.NotLeaderForPartition: false, kerr.RequestTimedOut: false, context.DeadlineExceeded: false, kerr.CorruptMessage: false,
	} {
		if got := kafka.Permanent(err); got != want {
			t.Errorf("Permanent(%v) = %v, want %v", err, got, want)
		}
	}
}
