package mqtt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/hubproto"
	"github.com/opendps/dps/internal/route"
	"github.com/opendps/dps/internal/route/mqtt"
	"github.com/opendps/dps/internal/route/routetest"
)

// endpoint is the routing engine's view of an endpoint.
type endpoint interface {
	Deliver(ctx context.Context, msgs []dps.Message) error
	Close() error
}

var _ endpoint = (*mqtt.Endpoint)(nil)

// broker is a Mosquitto process started by a test.
type broker struct {
	t    testing.TB
	dir  string
	conf string
	port int // the plain, anonymous listener
	cmd  *exec.Cmd
}

// mosquittoBin finds Debian's mosquitto; the tests fail without it (make
// deps installs it).
func mosquittoBin(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Fatal("the mosquitto binary is missing: these tests need Debian's mosquitto (make deps, or apt-get install -y mosquitto)")
	return ""
}

// startBroker writes a configuration with a plain anonymous listener and,
// when extra is set, the listener lines it adds, and starts mosquitto.
func startBroker(t testing.TB, extra string) *broker {
	t.Helper()
	mosquittoBin(t)
	b := &broker{t: t, dir: t.TempDir(), port: routetest.FreePort(t)}
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	conf := fmt.Sprintf(`user root
per_listener_settings true
persistence true
persistence_location %s/
autosave_interval 1
max_queued_messages 0
set_tcp_nodelay true
log_dest file %s/mosquitto.log
listener %d 127.0.0.1
allow_anonymous true
%s
`, b.dir, b.dir, b.port, extra)
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *broker) start() {
	b.t.Helper()
	b.cmd = exec.Command(mosquittoBin(b.t), "-c", b.conf)
	b.cmd.Stdout, b.cmd.Stderr = os.Stderr, os.Stderr
	if err := b.cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(b.dir, "mosquitto.log"))
			b.t.Fatalf("mosquitto did not listen on %d: %v\n%s", b.port, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the broker the test started (SIGTERM, so that it saves its
// persistent sessions), by its own PID.
func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-done
	}
	b.cmd = nil
}

func (b *broker) url() string { return fmt.Sprintf("mqtt://127.0.0.1:%d", b.port) }

// subscriber collects what the broker forwards on fleet/#, with a
// persistent session so that nothing published while it reconnects is lost.
type subscriber struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func subscribe(t testing.TB, b *broker, filter string) *subscriber {
	t.Helper()
	s := &subscriber{}
	o := paho.NewClientOptions().AddBroker(b.url()).SetClientID("test-sub").SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetResumeSubs(true).SetOrderMatters(true)
	o.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
			s.mu.Lock()
			s.msgs = append(s.msgs, m)
			s.mu.Unlock()
		})
	})
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	time.Sleep(100 * time.Millisecond) // the SUBACK
	t.Cleanup(func() { c.Disconnect(0) })
	return s
}

// wait returns the messages once there are at least n.
func (s *subscriber) wait(t testing.TB, n int) []paho.Message {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.mu.Lock()
		got := append([]paho.Message(nil), s.msgs...)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d of %d messages", len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newEndpoint(t testing.TB, o mqtt.Options) *mqtt.Endpoint {
	t.Helper()
	e, err := mqtt.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// decode splits a received topic into the template's part and the bag.
func decode(topic string) (string, []hubproto.Property) {
	i := strings.LastIndexByte(topic, '/')
	return topic[:i], hubproto.DecodeBag(topic[i+1:])
}

func got(msgs []paho.Message) []routetest.Got {
	out := make([]routetest.Got, len(msgs))
	for i, m := range msgs {
		_, props := decode(m.Topic())
		id, _ := hubproto.Get(props, route.HeaderEventID)
		dev, _ := hubproto.Get(props, route.HeaderDeviceID)
		out[i] = routetest.Got{DeviceID: dev, EventID: id}
	}
	return out
}

func TestDeliver(t *testing.T) {
	b := startBroker(t, "")
	sub := subscribe(t, b, "fleet/#")
	e := newEndpoint(t, mqtt.Options{URL: b.url(), Topic: "fleet/{deviceId}/events", ClientID: "dps-route"})
	g := routetest.Gen{}
	want := g.Next(50, routetest.Devices(10)...)
	want[1].Body = nil
	want[2].Properties["a/b&c=d"] = "x+y#z %"
	want[3].Properties["message-id"] = "app-level"
	for _, batch := range [][]dps.Message{want[:20], want[20:]} {
		if err := e.Deliver(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	msgs := sub.wait(t, len(want))
	if len(msgs) != len(want) {
		t.Fatalf("received %d, want %d", len(msgs), len(want))
	}
	routetest.CheckDelivered(t, want, got(msgs))
	for i, pm := range msgs {
		m := want[i] // one subscriber, one publisher connection: the broker keeps the order
		if pm.Qos() != 1 {
			t.Errorf("QoS %d", pm.Qos())
		}
		prefix, props := decode(pm.Topic())
		if want := "fleet/" + mqtt.EscapeLevel(m.DeviceID) + "/events"; prefix != want {
			t.Errorf("topic %q, want %q/…", pm.Topic(), want)
		}
		if !bytes.Equal(pm.Payload(), m.Body) {
			t.Errorf("payload %q, want %q", pm.Payload(), m.Body)
		}
		hs := route.Headers(m)
		if len(props) != len(hs) {
			t.Errorf("%d properties, want %d", len(props), len(hs))
			continue
		}
		for j, h := range hs {
			if props[j].Key != h.Name || props[j].Value != h.Value {
				t.Errorf("property %d: %q=%q, want %q=%q", j, props[j].Key, props[j].Value, h.Name, h.Value)
			}
		}
	}
	for _, dev := range []string{"dev+plus", "dev#hash", "dev%pct", "a/b"} {
		esc := mqtt.EscapeLevel(dev)
		if strings.ContainsAny(esc, "+#/") {
			t.Errorf("EscapeLevel(%q) = %q", dev, esc)
		} else if back, err := url.PathUnescape(esc); err != nil || back != dev {
			t.Errorf("EscapeLevel(%q) = %q does not decode back", dev, esc)
		}
	}
}

func TestPropertiesNone(t *testing.T) {
	b := startBroker(t, "")
	sub := subscribe(t, b, "fleet/+/events")
	e := newEndpoint(t, mqtt.Options{URL: b.url(), Properties: mqtt.PropertiesNone})
	g := routetest.Gen{}
	want := g.Next(4, "d1", "d2")
	if err := e.Deliver(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	msgs := sub.wait(t, 4)
	for i, pm := range msgs {
		if pm.Topic() != "fleet/"+want[i].DeviceID+"/events" || !bytes.Equal(pm.Payload(), want[i].Body) {
			t.Errorf("got %q %q, want message %d", pm.Topic(), pm.Payload(), i)
		}
	}
}

func TestTLSAndPassword(t *testing.T) {
	files := routetest.NewTLS(t)
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, "dps", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	port := routetest.FreePort(t)
	b := startBroker(t, fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous false
password_file %s
cafile %s
certfile %s
keyfile %s
require_certificate true
`, port, pw, files.CA, files.ServerCert, files.ServerKey))
	sub := subscribe(t, b, "fleet/#")
	u := fmt.Sprintf("mqtts://127.0.0.1:%d", port)
	tlsFiles := route.TLSFiles{CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey}
	cfg, err := tlsFiles.Config()
	if err != nil {
		t.Fatal(err)
	}
	g := routetest.Gen{}
	e := newEndpoint(t, mqtt.Options{URL: u, TLS: cfg, Username: "dps", Password: "s3cret"})
	want := g.Next(5, "d1")
	if err := e.Deliver(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	routetest.CheckDelivered(t, want, got(sub.wait(t, 5)))
	for name, o := range map[string]mqtt.Options{
		"wrong-password": {URL: u, TLS: cfg, Username: "dps", Password: "wrong"},
		"no-client-cert": {URL: u, TLS: files.ClientConfig(t, false), Username: "dps", Password: "s3cret"},
		"no-tls":         {URL: fmt.Sprintf("mqtt://127.0.0.1:%d", port), Username: "dps", Password: "s3cret"},
	} {
		o.Timeout = 3 * time.Second
		if err := newEndpoint(t, o).Deliver(context.Background(), g.Next(1, "d1")); err == nil {
			t.Errorf("%s: delivered", name)
		}
	}
}

func TestNewFail(t *testing.T) {
	for name, o := range map[string]mqtt.Options{
		"no-url":         {},
		"scheme":         {URL: "http://127.0.0.1:1883"},
		"wildcard":       {URL: "mqtt://127.0.0.1:1883", Topic: "fleet/+/{deviceId}"},
		"hash":           {URL: "mqtt://127.0.0.1:1883", Topic: "fleet/{deviceId}/#"},
		"placeholder":    {URL: "mqtt://127.0.0.1:1883", Topic: "fleet/{device}"},
		"properties":     {URL: "mqtt://127.0.0.1:1883", Properties: "v5"},
		"password-alone": {URL: "mqtt://127.0.0.1:1883", Password: "p"},
	} {
		t.Run("fail/"+name, func(t *testing.T) {
			if e, err := mqtt.New(o); err == nil {
				e.Close()
				t.Error("New accepted it")
			}
		})
	}
}

// TestOutage stops Mosquitto for a few seconds: Deliver fails while it is
// down and succeeds after it is back; the subscriber (persistent session)
// receives every message of a batch that returned nil, in order per
// device.
func TestOutage(t *testing.T) {
	b := startBroker(t, "")
	sub := subscribe(t, b, "fleet/#")
	e := newEndpoint(t, mqtt.Options{URL: b.url(), Timeout: 2 * time.Second})
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
	sub.wait(t, len(acked)) // forwarded before the broker stops
	b.stop()
	batch := g.Next(100, devices...)
	if err := deliver(batch); err == nil {
		t.Fatal("Deliver returned nil with the broker down")
	} else {
		t.Logf("down: %v", err)
	}
	time.Sleep(2 * time.Second)
	b.start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := deliver(batch)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after the restart: %v", err)
		}
		t.Logf("retry: %v", err)
		time.Sleep(200 * time.Millisecond)
	}
	for range 2 {
		if err := deliver(g.Next(100, devices...)); err != nil {
			t.Fatal(err)
		}
	}
	msgs := sub.wait(t, len(acked))
	dups := routetest.CheckDelivered(t, acked, got(msgs))
	t.Logf("%d received for %d acknowledged messages, %d duplicates", len(msgs), len(acked), dups)
}

func BenchmarkDeliver(b *testing.B) {
	br := startBroker(b, "")
	e := newEndpoint(b, mqtt.Options{URL: br.url()})
	g := routetest.Gen{BodySize: 1024}
	devices := routetest.Devices(20)
	batch := g.Next(100, devices...)
	n := 0
	for b.Loop() {
		if err := e.Deliver(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
		n += len(batch)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

// TestPermissionsAreAnOutage: a publish the broker's ACL denies (Mosquitto
// drops the connection) and a refused connection fail the batch as an
// outage of the endpoint (retried), never as a refusal of the messages
// (the engine would dead-letter them).
func TestPermissionsAreAnOutage(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, "dps", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte("user dps\ntopic write other/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := routetest.FreePort(t)
	startBroker(t, fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous false\npassword_file %s\nacl_file %s\n", port, pw, acl))
	u := fmt.Sprintf("mqtt://127.0.0.1:%d", port)
	g := routetest.Gen{}
	for name, o := range map[string]mqtt.Options{
		"acl-denied":     {URL: u, Username: "dps", Password: "s3cret"},
		"wrong-password": {URL: u, Username: "dps", Password: "wrong"},
	} {
		o.Timeout = 3 * time.Second
		err := newEndpoint(t, o).Deliver(context.Background(), g.Next(3, "d1"))
		var refused *route.Refused
		if err == nil || errors.As(err, &refused) {
			t.Errorf("%s: %v; want an error that is not a refusal", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}
