package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/opendps/dps"
	"github.com/opendps/dps/device"
	"github.com/opendps/dps/internal/dpstest"
	routehook "github.com/opendps/dps/internal/route/webhook"
	"github.com/opendps/dps/internal/sas"
	"github.com/opendps/dps/webhook"
)

// TestRoutesConfig: the configuration contract's keys load; bad routes
// are refused at start with the key and the reason.
func TestRoutesConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := `linkedHubs:
  - hostName: localhost
    endpoints:
      - { name: kafka-main, type: kafka, brokers: ["127.0.0.1:9092"], topic: telemetry }
      - { name: nats-main, type: nats, url: "nats://127.0.0.1:4222", subject: "dps.{hub}.{deviceId}" }
      - { name: broker, type: mqtt, url: "mqtts://127.0.0.1:1884", topic: "fleet/{deviceId}/events", caFile: "" }
      - { name: hook, type: webhook, url: "https://127.0.0.1:9000/events", secret: "${DPSD_HOOK_SECRET}" }
    routes:
      - { name: all-to-kafka, source: telemetry, condition: "true", endpoint: kafka-main }
      - { name: lifecycle, source: deviceLifecycle, condition: "true", endpoint: hook }
`
	env := map[string]string{"DPSD_HOOK_SECRET": "s3cret", "DPSD_LINKEDHUBS_0_ENDPOINTS_BROKER_PASSWORD": "pw"}
	cfg, err := loadConfig(write(good), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.LinkedHubs[0]
	if len(h.Endpoints) != 4 || h.Endpoints[3].Secret != "s3cret" || h.Endpoints[2].Password != "pw" || len(h.Routes) != 2 ||
		h.Routes[1].Source != "deviceLifecycle" || h.Endpoints[1].Subject != "dps.{hub}.{deviceId}" {
		t.Errorf("loaded %+v", h)
	}
	for _, tc := range []struct{ route, want string }{
		{`{ name: r, source: telemetry, condition: "$body.x > 1", endpoint: hook }`, "linkedHubs[0].routes[0].condition"},
		{`{ name: r, source: telemetry, condition: "level =", endpoint: hook }`, "unexpected end"},
		{`{ name: r, source: everything, endpoint: hook }`, "linkedHubs[0].routes[0].source"},
		{`{ name: r, endpoint: nowhere }`, `"nowhere": no endpoint`},
	} {
		body := "linkedHubs:\n  - hostName: localhost\n    endpoints:\n      - { name: hook, type: webhook, url: \"https://127.0.0.1:9/\" }\n    routes:\n      - " + tc.route + "\n"
		if _, err := loadConfig(write(body), func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.route, err, tc.want)
		}
	}
	if _, err := loadConfig(write("routing: { maxDeadLetters: -1 }\n"), func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "routing.maxDeadLetters") {
		t.Errorf("a negative routing.maxDeadLetters: %v, want an error naming routing.maxDeadLetters", err)
	}
	if cfg, err := loadConfig(write("routing: { maxDeadLetters: 5 }\n"), func(string) string { return "" }); err != nil || cfg.Routing.MaxDeadLetters != 5 {
		t.Errorf("routing.maxDeadLetters 5: %+v, %v", cfg.Routing, err)
	}
	body := "linkedHubs:\n  - hostName: localhost\n    endpoints:\n      - { name: x, type: carrier-pigeon }\n"
	if _, err := loadConfig(write(body), func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "type") {
		t.Errorf("unknown type: %v", err)
	}
}

// hookReceiver is a webhook that can be down.
type hookReceiver struct {
	mu   sync.Mutex
	got  []routehook.Message
	down atomic.Bool
	bad  atomic.Int32 // requests refused or unsigned
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := webhook.Verify([]byte("hook-secret"), body, r.Header.Get(webhook.SignatureHeader), time.Minute, time.Now()); err != nil {
		h.bad.Add(1)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if h.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var batch []routehook.Message
	if err := json.Unmarshal(body, &batch); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.got = append(h.got, batch...)
	h.mu.Unlock()
}

func (h *hookReceiver) received() []routehook.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]routehook.Message(nil), h.got...)
}

// TestRoutingToWebhookEndToEnd: devices' telemetry over MQTT reaches a
// webhook route, every message, in order per device; the webhook down
// for a few seconds loses nothing.
func TestRoutingToWebhookEndToEnd(t *testing.T) {
	rc := &hookReceiver{}
	hook := httptest.NewTLSServer(rc)
	defer hook.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "hook-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	s, hc := startServer(t, dir, fmt.Sprintf(`routing: { minBackoff: 100ms, maxBackoff: 500ms, batchSize: 7 }
linkedHubs:
  - hostName: localhost
    endpoints:
      - { name: hook, type: webhook, url: %q, secret: hook-secret, caFile: %q }
    routes:
      - { name: critical, source: telemetry, condition: "level = 'critical'", endpoint: hook }
`, hook.URL+"/events", ca))
	const perDevice = 40
	devices := []string{"route-dev-1", "route-dev-2"}
	var wg sync.WaitGroup
	for _, id := range devices {
		e := dpstest.MustPutEnrollment(t, s.store, dpstest.SymmetricKeyEnrollment(id))
		key := string(e.Attestation.SymmetricKey.PrimaryKey)
		if _, err := s.client(hc).Register(context.Background(), id, device.SymmetricKey(key), nil); err != nil {
			t.Fatal(err)
		}
		opts := paho.NewClientOptions().AddBroker("tls://" + s.mqtt.Addr().String()).SetClientID(id).
			SetUsername("localhost/" + id + "/?api-version=2021-04-12").
			SetPassword(sas.New("localhost/devices/"+id, mustB64(t, key), "", time.Now().Add(time.Hour))).
			SetTLSConfig(s.clientTLS(t)).SetAutoReconnect(false).SetCleanSession(true).SetProtocolVersion(4)
		opts.TLSConfig.ServerName = "localhost"
		mc := paho.NewClient(opts)
		if tok := mc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: MQTT connect: %v", id, tok.Error())
		}
		defer mc.Disconnect(100)
		wg.Go(func() {
			for i := range perDevice {
				level := "critical"
				if i%5 == 4 {
					level = "info" // filtered out
				}
				tok := mc.Publish(fmt.Sprintf("devices/%s/messages/events/n=%d&level=%s", id, i, level), 1, false, fmt.Sprintf(`{"n":%d}`, i))
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("%s: publish %d: %v", id, i, tok.Error())
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	rc.down.Store(true) // the webhook goes down under load
	time.Sleep(3 * time.Second)
	rc.down.Store(false)
	wg.Wait()
	want := perDevice * 4 / 5 * len(devices)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := rc.received()
		seen := map[string]bool{}
		for _, m := range got {
			seen[m.DeviceID+"/"+m.Properties["n"]] = true
		}
		if len(seen) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook received %d distinct messages, want %d", len(seen), want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	last := map[string]int{}
	seen := map[string]bool{}
	for _, m := range rc.received() {
		var n int
		fmt.Sscan(m.Properties["n"], &n)
		k := fmt.Sprint(m.DeviceID, "/", n)
		if m.Properties["level"] != "critical" {
			t.Errorf("a message the condition excludes was routed: %+v", m)
		}
		if n < last[m.DeviceID] && !seen[k] {
			t.Errorf("%s: message %d after %d: reordered", m.DeviceID, n, last[m.DeviceID])
		}
		if string(m.Body) != fmt.Sprintf(`{"n":%d}`, n) || m.SystemProperties["iothub-connection-device-id"] != m.DeviceID {
			t.Errorf("message %s arrived as %+v", k, m)
		}
		last[m.DeviceID], seen[k] = n, true
	}
	if rc.bad.Load() != 0 {
		t.Errorf("%d requests were not signed right", rc.bad.Load())
	}
	st, err := s.routes.Status(context.Background(), "localhost")
	if err != nil || len(st) != 1 || st[0].LastError == "" || st[0].State != "delivering" {
		t.Errorf("status = %+v, %v; want delivering, with the outage's error kept", st, err)
	}
}

// waitClaimed waits until this node holds the hub's only route (it starts
// at the end of the log once it is claimed).
func waitClaimed(t *testing.T, s *server, hub string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.routes.Status(context.Background(), hub)
		if err == nil && len(st) == 1 && st[0].Owner != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the route was not claimed: %+v, %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRoutingDeadLettersCapped: a webhook that refuses some messages (400
// for a batch holding one) while it takes the others fills the route's
// dead letters only up to routing.maxDeadLetters, the newest kept, and
// counts the ones deleted.
func TestRoutingDeadLettersCapped(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var batch []routehook.Message
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, m := range batch {
			if strings.HasPrefix(string(m.Body), "poison") {
				http.Error(w, "poison", http.StatusBadRequest)
				return
			}
		}
	}))
	defer hook.Close()
	s, _ := startServer(t, t.TempDir(), fmt.Sprintf(`routing: { maxDeadLetters: 4, batchSize: 5 }
linkedHubs:
  - hostName: localhost
    endpoints:
      - { name: hook, type: webhook, url: %q }
    routes:
      - { name: r, endpoint: hook }
`, hook.URL))
	ctx := context.Background()
	waitClaimed(t, s, "localhost")
	var msgs []dps.Message
	for i := range 13 { // every batch of 5 holds a good message
		body := "poison"
		if i%4 == 0 {
			body = "good"
		}
		msgs = append(msgs, dps.Message{Hub: "localhost", DeviceID: fmt.Sprint("dev-", i%2), Body: []byte(fmt.Sprint(body, i))})
	}
	msgs, err := s.store.AppendMessages(ctx, msgs)
	if err != nil {
		t.Fatal(err)
	}
	last := msgs[len(msgs)-1].Seq
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := s.routes.Status(ctx, "localhost")
		if err == nil && st[0].Checkpoint >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the route did not get through the refused messages: %+v, %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	dl, err := s.store.DeadLetters(ctx, "localhost", "r", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, d := range dl {
		got = append(got, d.Message.Seq)
	}
	if want := []int64{msgs[7].Seq, msgs[9].Seq, msgs[10].Seq, msgs[11].Seq}; !slices.Equal(got, want) {
		t.Errorf("dead letters %v, want the newest 4 refused %v", got, want)
	}
	admin := s.adminLn.Addr().String()
	for name, want := range map[string]float64{"dps_route_dead_lettered_messages_total": 9, "dps_route_dead_letters_dropped_total": 5,
		"dps_route_delivered_messages_total": 4} {
		if v, _ := routeMetric(t, admin, name, "r"); v != want {
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
}

// TestRoutingWebhookForbiddenIsAnOutage: a webhook answering 403 to
// everything (a secret or a permission gone wrong) is an outage: the
// route retries, shows the error and counts the failures, and dead-letters
// nothing; once the webhook takes messages again every one arrives.
func TestRoutingWebhookForbiddenIsAnOutage(t *testing.T) {
	rc := &hookReceiver{}
	var forbidden atomic.Bool
	forbidden.Store(true)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if forbidden.Load() {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		rc.ServeHTTP(w, r)
	}))
	defer hook.Close()
	s, _ := startServer(t, t.TempDir(), fmt.Sprintf(`routing: { batchSize: 5, minBackoff: 200ms, maxBackoff: 1s }
linkedHubs:
  - hostName: localhost
    endpoints:
      - { name: hook, type: webhook, url: %q, secret: hook-secret }
    routes:
      - { name: r, endpoint: hook }
`, hook.URL))
	ctx := context.Background()
	waitClaimed(t, s, "localhost")
	var msgs []dps.Message
	for i := range 12 {
		msgs = append(msgs, dps.Message{Hub: "localhost", DeviceID: fmt.Sprint("dev-", i%3), Body: []byte(fmt.Sprint(i))})
	}
	if _, err := s.store.AppendMessages(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	admin := s.adminLn.Addr().String()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, _ := routeMetric(t, admin, "dps_route_failed_messages_total", "r")
		st, err := s.routes.Status(ctx, "localhost")
		if err == nil && v >= 15 && st[0].State == "retrying" && strings.Contains(st[0].LastError, "403") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the route did not retry the forbidden webhook: failed %v, status %+v, %v", v, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if dl, err := s.store.DeadLetters(ctx, "localhost", "r", 0, 100); err != nil || len(dl) != 0 {
		t.Errorf("dead letters %d, %v; want none while the webhook forbids", len(dl), err)
	}
	if v, _ := routeMetric(t, admin, "dps_route_dead_lettered_messages_total", "r"); v != 0 {
		t.Errorf("dps_route_dead_lettered_messages_total = %v, want 0", v)
	}
	forbidden.Store(false)
	for len(rc.received()) < len(msgs) {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("received %d of %d after the webhook came back", len(rc.received()), len(msgs))
		}
		time.Sleep(50 * time.Millisecond)
	}
	last := map[string]int64{}
	for _, m := range rc.received() {
		if m.Seq <= last[m.DeviceID] {
			t.Errorf("device %s: %d after %d", m.DeviceID, m.Seq, last[m.DeviceID])
		}
		last[m.DeviceID] = m.Seq
	}
}
