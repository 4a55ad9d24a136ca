package mqttapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/opendps/dps/internal/mqttapi"
	"github.com/opendps/dps/internal/pki"
)

func broker(t *testing.T, o mqttapi.BrokerOptions) (*mqttapi.Broker, *tls.Config) {
	t.Helper()
	files, err := pki.Ensure(t.TempDir(), []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.ServerCert, files.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	if o.Adapter == nil {
		o.Adapter = &mqttapi.Adapter{Registrar: &fakeRegistrar{}}
	}
	b, err := mqttapi.Listen("127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	pem, _ := os.ReadFile(files.CACert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return b, &tls.Config{RootCAs: pool}
}

// A device that asks for no keep-alive and then stays silent is
// disconnected after the idle timeout.
func TestIdleConnectionsAreClosed(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{IdleTimeout: 300 * time.Millisecond})
	lost := make(chan struct{})
	o := paho.NewClientOptions().AddBroker("tls://" + b.Addr().String()).SetClientID("dev-1").
		SetUsername("0ne00000001/registrations/dev-1/api-version=2019-03-31").SetPassword("sas").
		SetTLSConfig(tc).SetKeepAlive(0).SetAutoReconnect(false).
		SetConnectionLostHandler(func(paho.Client, error) { close(lost) })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("an idle connection without keep-alive stayed open")
	}
}

// A client that opens TLS and never sends CONNECT is closed after the connect timeout.
func TestSilentClientsAreClosed(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{ConnectTimeout: 300 * time.Millisecond})
	conn, err := tls.Dial("tcp", b.Addr().String(), tc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1)
	start := time.Now()
	if _, err := conn.Read(buf); err == nil {
		t.Fatal("read data from a connection that sent no CONNECT")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %s, want about the connect timeout", d)
	}
}

// records keeps the log records of a test.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func (r *records) all() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.recs...)
}

// Keep-alive 0 is legal (the C SDK always sends it): the connection is
// logged at debug with the client ID the device sent, and no warning.
func TestKeepAliveZeroIsNoWarning(t *testing.T) {
	logs := &records{}
	b, tc := broker(t, mqttapi.BrokerOptions{Logger: slog.New(logs)})
	for name, dial := range transports(t, b, tc) {
		c := dial(t, 4)
		if ack := c.connect(connectPacket("ka0-"+name, "sas", 0)); ack.ReasonCode != 0 {
			t.Fatalf("%s: CONNACK %#x", name, ack.ReasonCode)
		}
	}
	seen := map[string]bool{}
	for _, r := range logs.all() {
		if r.Level >= slog.LevelWarn {
			t.Errorf("logged at %s: %s", r.Level, r.Message)
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "client_id" && strings.HasPrefix(a.Value.String(), "ka0-") && r.Message == "mqtt connect" {
				seen[a.Value.String()] = true
			}
			return true
		})
	}
	if !seen["ka0-tls"] || !seen["ka0-websocket"] {
		t.Errorf("no debug line names the client IDs: %v", seen)
	}
}

// MaxConnections is enforced when a connection is accepted, before its TLS
// handshake: connections over the limit are closed at once (WebSocket
// upgrades answered 429 with Retry-After) and counted; a freed slot serves
// again.
func TestConnectionLimit(t *testing.T) {
	b, tc := broker(t, mqttapi.BrokerOptions{MaxConnections: 3, ConnectTimeout: 30 * time.Second})
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	waitFor(t, func() bool { return b.Stats().Open == 3 })
	start := time.Now()
	for range 2 {
		c, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a connection over the limit: %v, want it closed", err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("connections over the limit were closed after %s, want at once", d)
	}
	url, wtc := wsServer(t, b)
	_, resp, err := (&websocket.Dialer{TLSClientConfig: wtc, Subprotocols: []string{"mqtt"}}).Dial(url, nil)
	if err == nil || resp == nil || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("WebSocket upgrade over the limit: %v %+v, want a refusal with Retry-After", err, resp)
	}
	checkDPSError(t, resp, http.StatusTooManyRequests, 429001, "too many MQTT connections")
	if st := b.Stats(); st.Refused != 3 || st.Open != 3 {
		t.Errorf("stats = %+v, want 3 open and 3 refused", st)
	}
	held[0].Close()
	waitFor(t, func() bool { return b.Stats().Open == 2 })
	c, err := tls.Dial("tcp", b.Addr().String(), tc)
	if err != nil {
		t.Fatal(err)
	}
	raw := newRaw(t, c, 4)
	raw.session("dev-after-limit", true)
	raw.register("after-limit")
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// During an outage every retrying device is refused again: each refusal is
// logged at debug, with its registration ID, but only the first one at
// error (later ones are counted into one line every 10 s). Wrong
// credentials are never an error.
func TestOutageRefusalsLogOneError(t *testing.T) {
	logs := &records{}
	b, tc := broker(t, mqttapi.BrokerOptions{Logger: slog.New(logs)})
	const n = 10
	for name, dial := range transports(t, b, tc) {
		for i := range n {
			for _, password := range []string{"down", "bad"} {
				c := dial(t, 4)
				if ack := c.connect(connectPacket(fmt.Sprintf("out-%s-%d", name, i), password, 60)); ack.ReasonCode == 0 {
					t.Fatalf("%s: CONNACK 0 for password %q", name, password)
				}
				c.Close()
			}
		}
	}
	var errs, debug int
	for _, r := range logs.all() {
		switch {
		case r.Level >= slog.LevelError:
			errs++
		case r.Level == slog.LevelDebug && r.Message == "mqtt connect refused":
			debug++
		}
	}
	if errs != 1 {
		t.Errorf("%d error lines for %d refusals during an outage, want 1", errs, 2*n)
	}
	if debug != 4*n {
		t.Errorf("%d debug lines for %d refused connections, want one each", debug, 4*n)
	}
}
