package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opendps/dps/internal/store/postgres"
)

// TestHubBus: messages published on one store reach the listeners of
// every store on the same schema, in order, small and large (through the
// table) alike, and not those of another schema; claims say who holds a
// device's connection, with growing epochs, and a stale release keeps the
// later claim.
func TestHubBus(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	schema := fmt.Sprintf("bus_%d_%d", os.Getpid(), schemas.Add(1))
	a, b := open(t, schema), open(t, schema)
	t.Cleanup(func() { a.DropSchema(context.Background()) })
	other := open(t, fmt.Sprintf("bus_%d_%d", os.Getpid(), schemas.Add(1)))
	t.Cleanup(func() { other.DropSchema(context.Background()) })

	got := make(chan string, 16)
	strange := make(chan string, 16)
	log := slog.New(slog.DiscardHandler)
	go b.HubBus().Listen(ctx, log, func(m []byte) { got <- string(m) })
	go other.HubBus().Listen(ctx, log, func(m []byte) { strange <- string(m) })
	large := `{"b":"` + strings.Repeat("x", 20000) + `"}`
	// The listeners need a moment to LISTEN; publish until the first
	// message arrives.
	first := ""
	for end := time.Now().Add(10 * time.Second); first == ""; {
		if time.Now().After(end) {
			t.Fatal("no message reached the listener")
		}
		if err := a.HubBus().Publish(ctx, []byte(`{"k":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case first = <-got:
		case <-time.After(200 * time.Millisecond):
		}
	}
	for len(got) > 0 {
		<-got // further pings
	}
	for _, m := range []string{`{"k":"one"}`, large, "@not a reference", `{"k":"three"}`} {
		if err := a.HubBus().Publish(ctx, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range []string{`{"k":"one"}`, large, "@not a reference", `{"k":"three"}`} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("message %d = %.60q…, want %.60q…", i, m, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d did not arrive", i)
		}
	}
	select {
	case m := <-strange:
		t.Errorf("a store of another schema heard %.60q", m)
	case <-time.After(100 * time.Millisecond):
	}

	bus := a.HubBus()
	if h, err := bus.Holder(ctx, "Hub.example", "dev"); err != nil || h != "" {
		t.Fatalf("Holder before any claim = %q, %v", h, err)
	}
	prev, e1, err := bus.Claim(ctx, "hub.example", "dev", "node-1")
	if err != nil || prev != "" || e1 <= 0 {
		t.Fatalf("first claim = %q %d %v", prev, e1, err)
	}
	prev, e2, err := b.HubBus().Claim(ctx, "HUB.example", "dev", "node-2")
	if err != nil || prev != "node-1" || e2 <= e1 {
		t.Fatalf("second claim = %q %d %v, want node-1 and an epoch over %d", prev, e2, err, e1)
	}
	if err := bus.Release(ctx, "hub.example", "dev", e1); err != nil {
		t.Fatal(err)
	}
	if h, _ := bus.Holder(ctx, "hub.example", "dev"); h != "node-2" {
		t.Fatalf("after a stale release: holder %q, want node-2", h)
	}
	if err := bus.Release(ctx, "hub.example", "dev", e2); err != nil {
		t.Fatal(err)
	}
	if h, _ := bus.Holder(ctx, "hub.example", "dev"); h != "" {
		t.Fatalf("after release: holder %q", h)
	}
	// Two nodes claiming a device at the same instant: exactly one of
	// them sees the other as the previous holder.
	for i := range 20 {
		dev := fmt.Sprintf("race-%d", i)
		prevs := make(chan string, 2)
		for n, st := range map[string]*postgres.DB{"x": a, "y": b} {
			go func() {
				p, _, err := st.HubBus().Claim(ctx, "hub.example", dev, n)
				if err != nil {
					t.Error(err)
				}
				prevs <- p
			}()
		}
		p1, p2 := <-prevs, <-prevs
		if (p1 == "") == (p2 == "") {
			t.Fatalf("concurrent claims of %s saw previous holders %q and %q; want exactly one empty", dev, p1, p2)
		}
	}
	bus.Claim(ctx, "hub.example", "d1", "node-3")
	bus.Claim(ctx, "hub.example", "d2", "node-3")
	if err := bus.Forget(ctx, "node-3"); err != nil {
		t.Fatal(err)
	}
	if h, _ := bus.Holder(ctx, "hub.example", "d2"); h != "" {
		t.Fatalf("after Forget: holder %q", h)
	}
}
