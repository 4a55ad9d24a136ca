package nats_test

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/opendps/dps"
	"github.com/opendps/dps/internal/route"
	"github.com/opendps/dps/internal/route/nats"
	"github.com/opendps/dps/internal/route/routetest"
)

// endpoint is the routing engine's view of an endpoint.
type endpoint interface {
	Deliver(ctx context.Context, msgs []dps.Message) error
	Close() error
}

var _ endpoint = (*nats.Endpoint)(nil)

// startServer runs a nats-server with JetStream in this process, keeping
// its data in dir, on port (0: any).
func startServer(t testing.TB, dir string, port int, edit func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true}
	if port == 0 {
		o.Port = -1
	}
	if edit != nil {
		edit(o)
	}
	var s *server.Server
	var err error
	for range 50 { // a restart on the same port may find it busy for a moment
		if s, err = server.NewServer(o); err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if s.ReadyForConnections(5 * time.Second) {
			t.Cleanup(s.Shutdown)
			return s
		}
		s.Shutdown()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("nats-server did not start")
	return nil
}

func newEndpoint(t testing.TB, o nats.Options) *nats.Endpoint {
	t.Helper()
	e, err := nats.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// read returns every message of the stream, in stream order.
func read(t testing.TB, clientURL, stream string, opts ...natsgo.Option) []*jetstream.RawStreamMsg {
	t.Helper()
	nc, err := natsgo.Connect(clientURL, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func got(msgs []*jetstream.RawStreamMsg) []routetest.Got {
	out := make([]routetest.Got, len(msgs))
	for i, m := range msgs {
		out[i] = routetest.Got{DeviceID: m.Header.Get(route.HeaderDeviceID), EventID: m.Header.Get("Nats-Msg-Id")}
	}
	return out
}

func TestDeliver(t *testing.T) {
	s := startServer(t, t.TempDir(), 0, nil)
	e := newEndpoint(t, nats.Options{URL: s.ClientURL(), Stream: "DPS"})
	g := routetest.Gen{}
	want := g.Next(50, routetest.Devices(10)...)
	want[1].Body = nil
	want[2].Properties["with\nnewline"] = "line1\r\nline2 100%"
	want[3].Properties["message-id"] = "app-level"
	for _, batch := range [][]dps.Message{want[:20], want[20:]} {
		if err := e.Deliver(context.Background(), batch); err != nil {
			t.Fatal(err)
		}
	}
	// A batch delivered again is acknowledged as duplicates, not stored.
	if err := e.Deliver(context.Background(), want[:20]); err != nil {
		t.Fatal(err)
	}
	stored := read(t, s.ClientURL(), "DPS")
	if len(stored) != len(want) {
		t.Fatalf("stream holds %d messages, want %d", len(stored), len(want))
	}
	routetest.CheckDelivered(t, want, got(stored))
	byID := map[string]dps.Message{}
	for _, m := range want {
		byID[route.EventID(m)] = m
	}
	for _, sm := range stored {
		m := byID[sm.Header.Get("Nats-Msg-Id")]
		wantSubj := "dps." + strings.ReplaceAll(routetest.Hub, ".", "%2E") + "." + nats.EscapeToken(m.DeviceID)
		if sm.Subject != wantSubj {
			t.Errorf("subject %q, want %q", sm.Subject, wantSubj)
		}
		if !bytes.Equal(sm.Data, m.Body) {
			t.Errorf("data %q, want %q", sm.Data, m.Body)
		}
		if id := sm.Header.Get("Nats-Msg-Id"); id != route.EventID(m) {
			t.Errorf("Nats-Msg-Id %q, want %q", id, route.EventID(m))
		}
		for _, h := range route.Headers(m) {
			name, value := h.Name, h.Value
			if strings.Contains(name, "\n") {
				name, value = "with%0Anewline", "line1%0D%0Aline2 100%25"
			}
			if vs := sm.Header.Values(name); !slices.Contains(vs, value) {
				t.Errorf("%s: header %q = %q, want %q among them", route.EventID(m), name, vs, value)
			}
		}
		if m.Seq == 4 && sm.Header.Get("message-id") != "mid-4" {
			t.Errorf("message-id %q: the system property comes first", sm.Header.Get("message-id"))
		}
	}
	for _, dev := range []string{"dev.dot", "dev*star", "dev>gt", "dev%pct", "dev space"} {
		if esc := nats.EscapeToken(dev); strings.ContainsAny(esc, ".*> ") || !strings.Contains(esc, "%") {
			t.Errorf("EscapeToken(%q) = %q", dev, esc)
		} else if back, err := url.PathUnescape(esc); err != nil || back != dev {
			t.Errorf("EscapeToken(%q) = %q does not decode back (%q, %v)", dev, esc, back, err)
		}
	}
}

func TestExistingStream(t *testing.T) {
	s := startServer(t, t.TempDir(), 0, nil)
	// No stream captures the subjects: Deliver fails.
	e := newEndpoint(t, nats.Options{URL: s.ClientURL(), Subject: "fleet.{deviceId}", Timeout: 3 * time.Second})
	g := routetest.Gen{}
	msgs := g.Next(5, "a", "b")
	if err := e.Deliver(context.Background(), msgs); err == nil {
		t.Fatal("delivered without a stream")
	}
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "FLEET", Subjects: []string{"fleet.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Deliver(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	stored := read(t, s.ClientURL(), "FLEET")
	routetest.CheckDelivered(t, msgs, got(stored))
	if len(stored) != 5 || stored[0].Subject != "fleet.a" {
		t.Errorf("stored %d, first on %q", len(stored), stored[0].Subject)
	}
}

func TestAuthAndTLS(t *testing.T) {
	files := routetest.NewTLS(t)
	s := startServer(t, t.TempDir(), 0, func(o *server.Options) {
		o.Username, o.Password = "dps", "s3cret"
		o.TLS, o.TLSVerify, o.TLSConfig = true, true, files.ServerConfig(t, true)
	})
	u := "tls://" + s.Addr().String()
	e := newEndpoint(t, nats.Options{URL: u, Stream: "DPS", User: "dps", Password: "s3cret", TLS: files.ClientConfig(t, true)})
	g := routetest.Gen{}
	if err := e.Deliver(context.Background(), g.Next(10, "d1", "d2")); err != nil {
		t.Fatal(err)
	}
	bad := newEndpoint(t, nats.Options{URL: u, Stream: "DPS", User: "dps", Password: "wrong", TLS: files.ClientConfig(t, true), Timeout: 3 * time.Second})
	if err := bad.Deliver(context.Background(), g.Next(1, "d1")); err == nil {
		t.Error("a wrong password delivered")
	}
	noCert := newEndpoint(t, nats.Options{URL: u, Stream: "DPS", User: "dps", Password: "s3cret", TLS: files.ClientConfig(t, false), Timeout: 3 * time.Second})
	if err := noCert.Deliver(context.Background(), g.Next(1, "d1")); err == nil {
		t.Error("delivered without a client certificate")
	}
	tok := startServer(t, t.TempDir(), 0, func(o *server.Options) { o.Authorization = "tok3n" })
	te := newEndpoint(t, nats.Options{URL: tok.ClientURL(), Stream: "DPS", Token: "tok3n"})
	if err := te.Deliver(context.Background(), g.Next(3, "d1")); err != nil {
		t.Fatal(err)
	}
}

func TestNewFail(t *testing.T) {
	for name, o := range map[string]nats.Options{
		"no-url":         {},
		"placeholder":    {URL: "nats://127.0.0.1:9", Subject: "dps.{moduleId}"},
		"wildcard":       {URL: "nats://127.0.0.1:9", Subject: "dps.*.{deviceId}"},
		"empty-token":    {URL: "nats://127.0.0.1:9", Subject: "dps..{deviceId}"},
		"two-auth":       {URL: "nats://127.0.0.1:9", Token: "t", User: "u"},
		"password-alone": {URL: "nats://127.0.0.1:9", Password: "p"},
		"stream-name":    {URL: "nats://127.0.0.1:9", Stream: "a.b"},
	} {
		t.Run("fail/"+name, func(t *testing.T) {
			if e, err := nats.New(context.Background(), o); err == nil {
				e.Close()
				t.Error("New accepted it")
			}
		})
	}
}

// TestOutage stops the server (its JetStream data kept) for a few seconds:
// Deliver fails while it is down and succeeds after it is back; every
// message of a batch that returned nil is in the stream, in order per
// device.
func TestOutage(t *testing.T) {
	dir := t.TempDir()
	port := routetest.FreePort(t)
	s := startServer(t, dir, port, nil)
	// New succeeds while the server is down.
	down, err := nats.New(context.Background(), nats.Options{URL: "nats://127.0.0.1:1", Stream: "DPS", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	e := newEndpoint(t, nats.Options{URL: s.ClientURL(), Stream: "DPS", Timeout: 2 * time.Second})
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
	// Stop the server while a batch is in flight.
	batch := g.Next(100, devices...)
	done := make(chan error, 1)
	go func() { done <- e.Deliver(context.Background(), batch) }()
	s.Shutdown()
	s.WaitForShutdown()
	if err := <-done; err == nil {
		acked = append(acked, batch...)
	}
	if err := deliver(batch); err == nil {
		t.Fatal("Deliver returned nil with the server down")
	} else {
		t.Logf("down: %v", err)
	}
	time.Sleep(2 * time.Second)
	s = startServer(t, dir, port, nil)
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
	stored := read(t, s.ClientURL(), "DPS")
	dups := routetest.CheckDelivered(t, acked, got(stored))
	t.Logf("%d stored for %d acknowledged messages, %d duplicates", len(stored), len(acked), dups)
}

func BenchmarkDeliver(b *testing.B) {
	s := startServer(b, b.TempDir(), 0, nil)
	e := newEndpoint(b, nats.Options{URL: s.ClientURL(), Stream: "DPS"})
	g := routetest.Gen{BodySize: 1024}
	devices := routetest.Devices(20)
	n := 0
	for b.Loop() {
		if err := e.Deliver(context.Background(), g.Next(100, devices...)); err != nil {
			b.Fatal(err)
		}
		n += 100
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

// TestPartialFailureKeepsDeviceOrder: a full stream (discard new) refuses a
// device's large message and would take its next, small one. The next one
// must not be published before the refused one is in the stream, or the
// retry stores the refused message after it.
func TestPartialFailureKeepsDeviceOrder(t *testing.T) {
	s := startServer(t, t.TempDir(), 0, nil)
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	cfg := jetstream.StreamConfig{Name: "DPS", Subjects: []string{"dps.*"}, MaxBytes: 16 << 10, Discard: jetstream.DiscardNew}
	st, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := newEndpoint(t, nats.Options{URL: s.ClientURL(), Subject: "dps.{deviceId}", Stream: "DPS", Timeout: 5 * time.Second})
	g := routetest.Gen{}
	batch := g.Next(12, "a", "b", "c")
	big := 6 // a's third message: too large for the room the stream has left
	batch[big].Body = bytes.Repeat([]byte("x"), 32<<10)
	err = e.Deliver(ctx, batch)
	if err == nil {
		t.Fatal("a batch with a message the full stream refuses was acknowledged")
	}
	var refused *route.Refused
	if errors.As(err, &refused) {
		t.Fatalf("a full stream's refusal is permanent: %v", err)
	}
	t.Logf("first delivery: %v", err)
	after := map[string]bool{} // a's messages after the refused one
	for _, m := range batch[big+1:] {
		if m.DeviceID == "a" {
			after[route.EventID(m)] = true
		}
	}
	for _, m := range read(t, s.ClientURL(), "DPS") {
		if id := m.Header.Get("Nats-Msg-Id"); after[id] {
			t.Errorf("%s is in the stream before %s", id, route.EventID(batch[big]))
		}
	}
	cfg.MaxBytes = -1
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := e.Deliver(ctx, batch); err != nil {
		t.Fatal(err)
	}
	stored := read(t, s.ClientURL(), "DPS")
	if dups := routetest.CheckDelivered(t, batch, got(stored)); dups != 0 {
		t.Errorf("%d duplicates stored", dups)
	}
	if info, _ := st.Info(ctx); info != nil && info.State.Msgs != uint64(len(batch)) {
		t.Errorf("stream holds %d messages, want %d", info.State.Msgs, len(batch))
	}
}

// TestOverMaxMsgSizeRefused: a message over the stream's maximum message
// size is refused for good; the others of its batch are delivered one by
// one afterwards.
func TestOverMaxMsgSizeRefused(t *testing.T) {
	s := startServer(t, t.TempDir(), 0, nil)
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "DPS", Subjects: []string{"dps.*"}, MaxMsgSize: 4 << 10}); err != nil {
		t.Fatal(err)
	}
	e := newEndpoint(t, nats.Options{URL: s.ClientURL(), Subject: "dps.{deviceId}", Stream: "DPS", Timeout: 5 * time.Second})
	g := routetest.Gen{}
	batch := g.Next(4, "a", "b")
	batch[2].Body = bytes.Repeat([]byte("x"), 8<<10)
	var refused *route.Refused
	if err := e.Deliver(context.Background(), batch); !errors.As(err, &refused) {
		t.Fatalf("Deliver: %v, want a *route.Refused", err)
	}
	if err := e.Deliver(context.Background(), batch[2:3]); !errors.As(err, &refused) {
		t.Fatalf("Deliver of the large message alone: %v, want a *route.Refused", err)
	}
	for _, i := range []int{0, 1, 3} {
		if err := e.Deliver(context.Background(), batch[i:i+1]); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if n := len(read(t, s.ClientURL(), "DPS")); n != 3 {
		t.Errorf("stream holds %d messages, want 3", n)
	}
}

// TestPermissionViolationIsAnOutage: a user who may not publish to the
// route's subjects fails the batch as an outage of the endpoint (retried),
// never as a refusal of the messages (the engine would dead-letter them).
func TestPermissionViolationIsAnOutage(t *testing.T) {
	s := startServer(t, t.TempDir(), 0, func(o *server.Options) {
		o.Users = []*server.User{{Username: "dps", Password: "s3cret", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"$JS.API.>", "other.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
		}}}
	})
	e := newEndpoint(t, nats.Options{URL: s.ClientURL(), Stream: "DPS", User: "dps", Password: "s3cret", Timeout: 10 * time.Second})
	g := routetest.Gen{}
	for _, batch := range [][]dps.Message{g.Next(3, "a", "b"), g.Next(1, "a")} {
		start := time.Now()
		err := e.Deliver(context.Background(), batch)
		var refused *route.Refused
		if err == nil || errors.As(err, &refused) || !errors.Is(err, natsgo.ErrPermissionViolation) {
			t.Fatalf("Deliver of %d to a subject the user may not publish to: %v; want the permissions violation, not a refusal", len(batch), err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the violation took %v to fail the batch: waited for the acknowledgement's timeout", d)
		}
		t.Logf("%d messages: %v", len(batch), err)
	}
}
