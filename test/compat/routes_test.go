//go:build compat

package compat

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// routed is one message as a routing endpoint received it.
type routed struct {
	topic, messageID, deviceID string
	props                      map[string]string
	body                       string
}

// engines are the routing endpoints of the suite, started by the test:
// franz-go's kfake Kafka cluster (in this process) and Debian's mosquitto.
// dpsd routes hub A's telemetry to both.
type engines struct {
	kafka     *kfake.Cluster
	mqttPort  int
	mosquitto *exec.Cmd
	sub       paho.Client

	mu   sync.Mutex
	mqtt []routed
}

const kafkaTopic = "telemetry"

func startEngines(t *testing.T) *engines {
	t.Helper()
	e := &engines{}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, kafkaTopic))
	if err != nil {
		t.Fatal(err)
	}
	e.kafka = c
	t.Cleanup(c.Close)

	bin := "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("mosquitto"); err != nil {
			t.Fatal("the mosquitto binary is missing: the suite routes to Debian's mosquitto (make deps installs it)")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.mqttPort = l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("user root\nlistener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n", e.mqttPort)), 0o600)
	e.mosquitto = exec.Command(bin, "-c", conf)
	if err := e.mosquitto.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.mosquitto.Process.Kill(); e.mosquitto.Wait() })
	o := paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", e.mqttPort)).SetClientID("compat-subscriber").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(2 * time.Second)
	var sub paho.Client
	for end := time.Now().Add(10 * time.Second); ; {
		sub = paho.NewClient(o)
		tok := sub.Connect()
		if tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("mosquitto on %d: %v", e.mqttPort, tok.Error())
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.sub = sub
	t.Cleanup(func() { sub.Disconnect(0) })
	tok := sub.Subscribe("fleet/+/events/#", 1, func(_ paho.Client, m paho.Message) {
		// fleet/{deviceId}/events/{property bag}
		parts := strings.SplitN(m.Topic(), "/", 4)
		r := routed{topic: m.Topic(), props: map[string]string{}, body: string(m.Payload())}
		if len(parts) == 4 {
			r.deviceID, _ = url.PathUnescape(parts[1])
			for _, kv := range strings.Split(parts[3], "&") {
				k, v, _ := strings.Cut(kv, "=")
				k, _ = url.QueryUnescape(k)
				v, _ = url.QueryUnescape(v)
				r.props[k] = v
			}
			r.messageID = r.props["message-id"]
		}
		e.mu.Lock()
		e.mqtt = append(e.mqtt, r)
		e.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return e
}

// config is the linked hub's endpoints and routes, YAML lines indented for
// the hub's entry.
func (e *engines) config() string {
	return fmt.Sprintf(`    endpoints:
      - { name: kafka-main, type: kafka, brokers: [%q], topic: %s }
      - { name: broker, type: mqtt, url: "mqtt://127.0.0.1:%d", topic: "fleet/{deviceId}/events" }
    routes:
      - { name: all-to-kafka, source: telemetry, condition: "true", endpoint: kafka-main }
      - { name: all-to-broker, source: telemetry, condition: "true", endpoint: broker }
`, e.kafka.ListenAddrs()[0], kafkaTopic, e.mqttPort)
}

// readKafka reads every record of the topic.
func (e *engines) readKafka(t *testing.T) []routed {
	cl, err := kgo.NewClient(kgo.SeedBrokers(e.kafka.ListenAddrs()...), kgo.ConsumeTopics(kafkaTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []routed
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			m := routed{topic: r.Topic, deviceID: string(r.Key), props: map[string]string{}, body: string(r.Value)}
			for _, h := range r.Headers {
				if _, dup := m.props[h.Key]; !dup {
					m.props[h.Key] = string(h.Value)
				}
			}
			m.messageID = m.props["message-id"]
			out = append(out, m)
		})
		if n == 0 {
			return out
		}
	}
}

// checkRoutes waits until every message sent to hub A reached both
// endpoints, then compares each: device, body, application properties,
// and order per device (the order the devices sent them in). One result
// per endpoint.
func (e *engines) checkRoutes(t *testing.T, sent []telemetry) []result {
	var want []telemetry
	for _, m := range sent {
		if m.Hub == hubA {
			want = append(want, m)
		}
	}
	if len(want) == 0 {
		return []result{{Scenario: "routing: no telemetry was sent to " + hubA, Transport: "-"}}
	}
	check := func(name string, read func() []routed) result {
		r := result{Scenario: fmt.Sprintf("routing: the %d messages devices sent to %s reach %s, intact and in order per device", len(want), hubA, name), Transport: "-"}
		start := time.Now()
		var got []routed
		missing := len(want)
		for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			got = read()
			missing = 0
			for _, m := range want {
				if !slices.ContainsFunc(got, func(g routed) bool { return g.messageID == m.MessageID }) {
					missing++
				}
			}
			if missing == 0 || time.Now().After(end) {
				break
			}
		}
		r.MS = int(time.Since(start).Milliseconds())
		if missing > 0 {
			r.Error = fmt.Sprintf("%d of %d messages never arrived (%d received)", missing, len(want), len(got))
			return r
		}
		pos := map[string]int{}
		for i, g := range got {
			if _, ok := pos[g.messageID]; !ok {
				pos[g.messageID] = i
			}
		}
		last := map[string]int{}
		for _, m := range want {
			g := got[pos[m.MessageID]]
			if g.deviceID != m.DeviceID || g.body != m.Body || g.props["iothub-connection-device-id"] != m.DeviceID {
				r.Error = fmt.Sprintf("message %s arrived as device %q body %q; sent by %q body %q", m.MessageID, g.deviceID, g.body, m.DeviceID, m.Body)
				return r
			}
			for k, v := range m.Properties {
				if g.props[k] != v {
					r.Error = fmt.Sprintf("message %s: property %s = %q, sent %q", m.MessageID, k, g.props[k], v)
					return r
				}
			}
			if p, ok := last[m.DeviceID]; ok && pos[m.MessageID] < p {
				r.Error = fmt.Sprintf("device %s: message %s arrived before one sent earlier", m.DeviceID, m.MessageID)
				return r
			}
			last[m.DeviceID] = pos[m.MessageID]
		}
		r.OK = true
		return r
	}
	return []result{
		check("Kafka (kfake)", func() []routed { return e.readKafka(t) }),
		check("mosquitto", func() []routed { e.mu.Lock(); defer e.mu.Unlock(); return slices.Clone(e.mqtt) }),
	}
}
