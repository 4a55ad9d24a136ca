package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/route"
	"github.com/opendps/dps/internal/route/routetest"
	routehook "github.com/opendps/dps/internal/route/webhook"
)

// outageDevices enrolls and registers devices on the built-in hub
// localhost of s.
func outageDevices(t *testing.T, s *server, dc *device.Client, ids ...string) []loadDevice {
	t.Helper()
	var out []loadDevice
	for _, id := range ids {
		e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment(id))
		key := string(e.Attestation.SymmetricKey.PrimaryKey)
		if res, err := dc.Register(context.Background(), id, device.SymmetricKey(key), nil); err != nil || res.RegistrationState.AssignedHub != "localhost" {
			t.Fatalf("register %s: %+v, %v", id, res, err)
		}
		out = append(out, loadDevice{id, key})
	}
	return out
}

// checkEndpointOutage runs devices' QoS 1 telemetry through a route of an
// in-process dpsd to an endpoint that stop/start take down for 10 s and
// bring back (same port, data kept) while the devices publish; read
// returns what the endpoint holds. Every acknowledged message must arrive,
// in order per device; duplicates are counted and logged; the route's
// dps_route_* metrics must show the failed attempts and the deliveries.
func checkEndpointOutage(t *testing.T, endpointYAML string, stop, start func(), read func() []arrival) {
	dir := t.TempDir()
	s, hc := startServer(t, dir, `routing: { minBackoff: 200ms, maxBackoff: 1s, lease: 6s }
linkedHubs:
  - hostName: localhost
    endpoints:
      - `+endpointYAML+`
    routes:
      - { name: out, source: telemetry, endpoint: ep }
`)
	devices := outageDevices(t, s, s.client(hc), "outage-1", "outage-2", "outage-3")
	addr := s.mqtt.Addr().String()
	load := startRouteLoad(t, func() string { return addr }, s.clientTLS(t), devices, 4, 5*time.Millisecond)
	defer load.stopLoad()
	time.Sleep(2 * time.Second)
	before := load.ok.Load()
	stop()
	t.Logf("endpoint stopped after %d acknowledged messages", before)
	time.Sleep(10 * time.Second)
	start()
	during := load.ok.Load() - before
	time.Sleep(2 * time.Second)
	load.stopLoad()
	if during == 0 {
		t.Fatal("no message was acknowledged while the endpoint was down")
	}
	got := load.waitArrived(t, 60*time.Second, read)
	dups := load.checkArrivals(t, got)
	admin := s.adminLn.Addr().String()
	delivered, _ := routeMetric(t, admin, "dps_route_delivered_messages_total", "out")
	failed, _ := routeMetric(t, admin, "dps_route_failed_messages_total", "out")
	t.Logf("%d sent, %d acknowledged (%d while the endpoint was down), %d arrived, %d duplicates; dps_route_delivered_messages_total %v, dps_route_failed_messages_total %v",
		load.sent.Load(), load.ok.Load(), during, len(got), dups, delivered, failed)
	if failed == 0 {
		t.Error("dps_route_failed_messages_total{route=\"out\"} is 0 after a 10 s outage")
	}
	if delivered < float64(load.ok.Load()) {
		t.Errorf("dps_route_delivered_messages_total{route=\"out\"} = %v, fewer than the %d acknowledged messages", delivered, load.ok.Load())
	}
	for _, name := range []string{"dps_route_lag_messages", "dps_route_lag_seconds"} {
		if _, ok := routeMetric(t, admin, name, "out"); !ok {
			t.Errorf("/metrics has no %s for the route", name)
		}
	}
}

// TestRoutingNATSOutageUnderLoad: the in-process nats-server behind a
// route stops for 10 s while devices publish and starts again on the same
// port with its JetStream data.
func TestRoutingNATSOutageUnderLoad(t *testing.T) {
	o := &natsserver.Options{Host: "127.0.0.1", Port: routetest.FreePort(t), JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	var mu sync.Mutex
	var ns *natsserver.Server
	start := func() {
		for range 50 { // the port may be busy for a moment after a stop
			s, err := natsserver.NewServer(o)
			if err != nil {
				t.Fatal(err)
			}
			go s.Start()
			if s.ReadyForConnections(5 * time.Second) {
				mu.Lock()
				ns = s
				mu.Unlock()
				return
			}
			s.Shutdown()
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("nats-server did not start")
	}
	stop := func() {
		mu.Lock()
		defer mu.Unlock()
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	start()
	defer stop()
	url := fmt.Sprintf("nats://127.0.0.1:%d", o.Port)
	read := func() []arrival {
		nc, err := natsgo.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		st, err := js.Stream(ctx, "DPS")
		if err != nil {
			return nil // not made yet
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []arrival
		for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("stream seq %d: %v", seq, err)
			}
			out = append(out, arrival{m.Header.Get(route.HeaderDeviceID), counter(m.Header.Get("n"))})
		}
		return out
	}
	checkEndpointOutage(t, fmt.Sprintf(`{ name: ep, type: nats, url: %q, subject: "dps.{deviceId}", stream: DPS }`, url), stop, start, read)
}

// TestRoutingMQTTOutageUnderLoad: the Mosquitto behind a route stops for
// 10 s while devices publish and starts again on the same port with its
// persisted sessions; a subscriber with a persistent session collects what
// the broker forwards.
func TestRoutingMQTTOutageUnderLoad(t *testing.T) {
	b := startMosquitto(t)
	var mu sync.Mutex
	var got []arrival
	o := paho.NewClientOptions().AddBroker("tcp://" + b.addr()).SetClientID("outage-sub").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetResumeSubs(true).SetOrderMatters(true)
	o.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe("fleet/+/events/#", 1, func(_ paho.Client, m paho.Message) {
			topic := m.Topic()
			props := hubproto.DecodeBag(topic[strings.LastIndexByte(topic, '/')+1:])
			dev, _ := hubproto.Get(props, route.HeaderDeviceID)
			n, _ := hubproto.Get(props, "n")
			mu.Lock()
			got = append(got, arrival{dev, counter(n)})
			mu.Unlock()
		})
	})
	sub := paho.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(0)
	time.Sleep(200 * time.Millisecond) // the SUBACK
	read := func() []arrival {
		mu.Lock()
		defer mu.Unlock()
		return append([]arrival(nil), got...)
	}
	checkEndpointOutage(t, fmt.Sprintf(`{ name: ep, type: mqtt, url: "mqtt://%s", topic: "fleet/{deviceId}/events" }`, b.addr()),
		b.stop, func() { b.start("") }, read)
}

// TestRoutingKafkaOutageUnderLoad: the Kafka broker (kfake, its data on
// disk) behind a route stops for 10 s while devices publish and starts
// again on the same port with its records; a consumer that stays
// connected through the outage collects every record.
func TestRoutingKafkaOutageUnderLoad(t *testing.T) {
	port, dir := routetest.FreePort(t), t.TempDir()
	var mu sync.Mutex
	var c *kfake.Cluster
	start := func() {
		var err error
		for range 50 { // the port may be busy for a moment after a stop
			var cl *kfake.Cluster
			if cl, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, "telemetry"), kfake.DataDir(dir)); err == nil {
				mu.Lock()
				c = cl
				mu.Unlock()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("kfake did not start on port %d: %v", port, err)
	}
	stop := func() {
		mu.Lock()
		defer mu.Unlock()
		c.Close()
	}
	start()
	defer stop()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	consumer, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("telemetry"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var cmu sync.Mutex
	var got []arrival
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			consumer.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
				n := ""
				for _, h := range r.Headers {
					if h.Key == "n" {
						n = string(h.Value)
					}
				}
				cmu.Lock()
				got = append(got, arrival{string(r.Key), counter(n)})
				cmu.Unlock()
			})
		}
	})
	defer func() { cancel(); wg.Wait(); consumer.Close() }()
	read := func() []arrival {
		cmu.Lock()
		defer cmu.Unlock()
		return append([]arrival(nil), got...)
	}
	checkEndpointOutage(t, fmt.Sprintf(`{ name: ep, type: kafka, brokers: [%q], topic: telemetry }`, addr), stop, start, read)
}

// TestRoutingWebhookOutageUnderLoad: the webhook behind a route answers 503
// for 5 s, then refuses connections (its listener closed) for 5 s, while
// devices publish; then it listens again on the same port.
func TestRoutingWebhookOutageUnderLoad(t *testing.T) {
	var mu sync.Mutex
	var got []arrival
	var down atomic.Bool
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		var batch []routehook.Message
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, m := range batch {
			got = append(got, arrival{m.DeviceID, counter(m.Properties["n"])})
		}
		mu.Unlock()
	})
	port := routetest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var srv *http.Server
	serve := func() {
		var l net.Listener
		var err error
		for range 50 {
			if l, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		srv = &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(l)
	}
	serve()
	closed := make(chan struct{})
	stop := func() {
		down.Store(true)
		time.AfterFunc(5*time.Second, func() {
			srv.Close() // connections refused from now on
			close(closed)
		})
	}
	start := func() {
		<-closed
		down.Store(false)
		serve()
	}
	defer func() { srv.Close() }()
	read := func() []arrival {
		mu.Lock()
		defer mu.Unlock()
		return append([]arrival(nil), got...)
	}
	checkEndpointOutage(t, fmt.Sprintf(`{ name: ep, type: webhook, url: "http://%s/events" }`, addr), stop, start, read)
}

// TestRouteMetricsExposed: /metrics on the admin listener names every
// configured route in each routing series from the start, before any
// message (dead letters once per reason), at zero.
func TestRouteMetricsExposed(t *testing.T) {
	s, _ := startServer(t, t.TempDir(), `linkedHubs:
  - hostName: localhost
    endpoints:
      - { name: hook, type: webhook, url: "http://127.0.0.1:9/events" }
    routes:
      - { name: quiet-route, source: deviceLifecycle, endpoint: hook }
      - { name: off-route, endpoint: hook, enabled: false }
`)
	admin := s.adminLn.Addr().String()
	for _, route := range []string{"quiet-route", "off-route"} {
		for _, name := range []string{"dps_route_delivered_messages_total", "dps_route_failed_messages_total",
			"dps_route_dead_lettered_messages_total", "dps_route_dead_letters_dropped_total", "dps_route_lag_messages", "dps_route_lag_seconds"} {
			if v, ok := routeMetric(t, admin, name, route); !ok || v != 0 {
				t.Errorf("%s{route=%q}: %v, found %v; want 0, found", name, route, v, ok)
			}
		}
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, why := range []string{"retries", "maxLag", "deleted", "refused"} {
		if want := `dps_route_dead_lettered_messages_total{hub="localhost",reason="` + why + `",route="quiet-route"} 0`; !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}
