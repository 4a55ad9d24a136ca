package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/routing"
	"github.com/opendps/dps/internal/store/sqlite"
)

// benchMessages is how many messages one iteration of
// BenchmarkRoutedThroughput appends and routes.
const benchMessages = 5000

// benchAppenders append concurrently, one message per transaction, as the
// hub does for devices publishing at once.
const benchAppenders = 8

// BenchmarkRoutedThroughput measures end-to-end routing per endpoint on a
// real SQLite event log (WAL, synchronous=FULL):
//
//   - append: the hub's acceptance ceiling — benchAppenders goroutines
//     append benchMessages messages (one per transaction, 20 devices,
//     256-byte bodies, 3 application properties), no route running;
//     appended-msgs/s.
//   - <endpoint>: the same appends with a route to the endpoint running;
//     routed-msgs/s counts from the first append until the route's
//     checkpoint (advanced only after the endpoint acknowledged) covers
//     the last message. Then drain-msgs/s: benchMessages appended while the
//     route is stopped, delivered from its checkpoint once it starts (the
//     endpoint's own rate, appends out of the way).
//
// Endpoints: kfake (franz-go's in-process Kafka), an in-process
// nats-server with JetStream (file storage), Debian's mosquitto (QoS 1,
// persistence on), an httptest TLS webhook (HMAC-signed JSON batches).
//
//	go test ./cmd/dpsd -run '^$' -bench BenchmarkRoutedThroughput -benchtime 3x
func BenchmarkRoutedThroughput(b *testing.B) {
	b.Run("append", func(b *testing.B) {
		db := dpstest.NewSQLite(b)
		var n int
		for b.Loop() {
			benchAppend(b, db, nil)
			n += benchMessages
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "appended-msgs/s")
		b.ReportMetric(0, "ns/op")
	})
	endpoints := []struct {
		name  string
		start func(b *testing.B) EndpointConfig
	}{
		{"kafka", func(b *testing.B) EndpointConfig {
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "telemetry"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			return EndpointConfig{Type: "kafka", Brokers: c.ListenAddrs(), Topic: "telemetry"}
		}},
		{"nats", func(b *testing.B) EndpointConfig {
			s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(), NoLog: true, NoSigs: true})
			if err != nil {
				b.Fatal(err)
			}
			go s.Start()
			if !s.ReadyForConnections(10 * time.Second) {
				b.Fatal("nats-server did not start")
			}
			b.Cleanup(s.Shutdown)
			return EndpointConfig{Type: "nats", URL: s.ClientURL(), Subject: "dps.{hub}.{deviceId}", Stream: "DPS"}
		}},
		{"mqtt", func(b *testing.B) EndpointConfig {
			m := startMosquitto(b)
			return EndpointConfig{Type: "mqtt", URL: "mqtt://" + m.addr(), Topic: "fleet/{deviceId}/events"}
		}},
		{"webhook", func(b *testing.B) EndpointConfig {
			h := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
			}))
			b.Cleanup(h.Close)
			ca := filepath.Join(b.TempDir(), "ca.pem")
			if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.Certificate().Raw}), 0o600); err != nil {
				b.Fatal(err)
			}
			return EndpointConfig{Type: "webhook", URL: h.URL + "/events", Secret: "bench-secret", CAFile: ca}
		}},
	}
	for _, ec := range endpoints {
		b.Run(ec.name, func(b *testing.B) {
			cfg := ec.start(b)
			cfg.Name = ec.name
			ep, err := newEndpoint(context.Background(), cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { ep.Close() })
			db := dpstest.NewSQLite(b)
			var routed, drained time.Duration
			var n int
			for b.Loop() {
				// Routed while appending.
				stop := runRoute(b, db, ep)
				t0 := time.Now()
				last := benchAppend(b, db, stop.engine)
				waitCheckpoint(b, db, last)
				routed += time.Since(t0)
				stop.stop()
				// A backlog drained.
				last = benchAppend(b, db, nil)
				t1 := time.Now()
				stop = runRoute(b, db, ep)
				waitCheckpoint(b, db, last)
				drained += time.Since(t1)
				stop.stop()
				n += benchMessages
			}
			b.ReportMetric(float64(n)/routed.Seconds(), "routed-msgs/s")
			b.ReportMetric(float64(n)/drained.Seconds(), "drain-msgs/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

type runningRoute struct {
	engine *routing.Engine
	stop   func()
}

// runRoute runs the route "bench" of hub localhost to ep until stop; it
// claims the route before it returns.
func runRoute(b *testing.B, db *sqlite.DB, ep routing.Endpoint) runningRoute {
	e, err := routing.New(routing.Options{Store: db, Node: "bench", Routes: []routing.Route{{Hub: "localhost", Name: "bench",
		Source: routing.SourceTelemetry, Endpoint: "ep", Deliver: ep, Enabled: true}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := db.Routes(context.Background(), "localhost")
		if err != nil {
			b.Fatal(err)
		}
		if len(st) == 1 && st[0].Owner == "bench" {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the route was not claimed")
		}
		time.Sleep(time.Millisecond)
	}
	return runningRoute{engine: e, stop: func() { cancel(); <-done }}
}

// benchAppend appends benchMessages messages to localhost's event log,
// benchAppenders at a time, waking e after each (as the hub does), and
// returns the last sequence number.
func benchAppend(b *testing.B, db *sqlite.DB, e *routing.Engine) int64 {
	body := make([]byte, 256)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	var wg sync.WaitGroup
	for w := range benchAppenders {
		wg.Go(func() {
			for i := w; i < benchMessages; i += benchAppenders {
				dev := fmt.Sprintf("bench-dev-%02d", i%20)
				m := dps.Message{Hub: "localhost", DeviceID: dev, MessageID: fmt.Sprint(i), ContentType: "application/json",
					Properties: map[string]string{"n": fmt.Sprint(i), "level": "info", "site": "bench"},
					System:     map[string]string{routing.PropMessageSource: "Telemetry", "iothub-connection-device-id": dev}, Body: body}
				if _, err := db.AppendMessages(context.Background(), []dps.Message{m}); err != nil {
					b.Error(err)
					return
				}
				if e != nil {
					e.Wake("localhost")
				}
			}
		})
	}
	wg.Wait()
	last, err := db.LastMessageSeq(context.Background(), "localhost")
	if err != nil {
		b.Fatal(err)
	}
	return last
}

// waitCheckpoint waits until the route's checkpoint reaches last.
func waitCheckpoint(b *testing.B, db *sqlite.DB, last int64) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := db.Routes(context.Background(), "localhost")
		if err != nil {
			b.Fatal(err)
		}
		if len(st) == 1 && st[0].Checkpoint >= last {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the route reached %+v of %d in 5 minutes", st, last)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
